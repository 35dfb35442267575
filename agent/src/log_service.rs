//! `mob-agent logs` across the cluster: an instance's log lines come from
//! the node that runs it, over a sealed stream on channel `Logs`.

use std::net::SocketAddr;
use std::time::Duration;

use mob_membership::{Membership, SealedStream};
use mob_providers::logs::{self, LogConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Most lines one request may ask for.
pub(crate) const MAX_LINES: usize = 100_000;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Which lines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogRequest {
    pub(crate) service: String,
    pub(crate) slot: u32,
    /// The last this many lines.
    pub(crate) lines: usize,
    /// Then keep sending new lines.
    pub(crate) follow: bool,
}

/// Lines, in order; `end` closes the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogChunk {
    lines: Vec<String>,
    end: bool,
}

/// Reads this node's log of the instance into `out`, following if asked,
/// until `out` closes.
pub(crate) async fn local(
    config: LogConfig,
    request: LogRequest,
    out: mpsc::Sender<Vec<String>>,
) -> anyhow::Result<()> {
    // The name comes from a peer or a client: it must be a service name,
    // not a path.
    if let Err(e) = mob_scheduler::spec::validate_name(&request.service) {
        anyhow::bail!("bad service name: {e}");
    }
    let path = config.path(&request.service, request.slot);
    if !path.exists() {
        anyhow::bail!(
            "no log of {}/{} on this node",
            request.service,
            request.slot
        );
    }
    let from = logs::current_len(&config, &request.service, request.slot);
    let lines = logs::tail(
        &config,
        &request.service,
        request.slot,
        request.lines.min(MAX_LINES),
    )?;
    out.send(within_budget(lines)).await?;
    if request.follow {
        let (tx, mut rx) = mpsc::channel(1024);
        let follower = tokio::spawn(logs::follow(path, from, tx));
        loop {
            let line = tokio::select! {
                line = rx.recv() => line,
                // Whoever asked is gone, however quiet the instance.
                () = out.closed() => None,
            };
            let Some(line) = line else {
                break;
            };
            if out.send(vec![line]).await.is_err() {
                break;
            }
        }
        follower.abort();
    }
    Ok(())
}

/// Most bytes of lines sent at once: one message must fit a stream frame
/// (8 MiB) and a control frame (16 MiB).
const MAX_TAIL_BYTES: usize = 4 * 1024 * 1024;

/// The newest lines that fit [`MAX_TAIL_BYTES`], after a line saying how
/// many older ones were left out.
fn within_budget(mut lines: Vec<String>) -> Vec<String> {
    let mut total = 0;
    let keep = lines
        .iter()
        .rev()
        .take_while(|line| {
            total += line.len() + 8;
            total <= MAX_TAIL_BYTES
        })
        .count();
    let cut = lines.len() - keep;
    if cut == 0 {
        return lines;
    }
    let mut kept = lines.split_off(cut);
    kept.insert(
        0,
        format!("[mob: {cut} older lines not shown; at most {MAX_TAIL_BYTES} bytes at once]"),
    );
    kept
}

/// Serves a peer's log request.
pub(crate) async fn serve(mut stream: SealedStream, config: LogConfig) -> anyhow::Result<()> {
    let request: LogRequest = stream.recv_within(TIMEOUT).await?;
    let (tx, mut rx) = mpsc::channel(64);
    let reader = tokio::spawn(local(config, request, tx));
    loop {
        let lines = tokio::select! {
            lines = rx.recv() => lines,
            // The requester sends nothing more: its end of the stream
            // (or anything else) means it stopped following.
            _ = stream.recv::<LogRequest>() => {
                reader.abort();
                return Ok(());
            }
        };
        let Some(lines) = lines else {
            break;
        };
        stream.send(&LogChunk { lines, end: false }).await?;
    }
    if let Ok(Err(e)) = reader.await {
        stream
            .send(&LogChunk {
                lines: vec![format!("mob: {e}")],
                end: true,
            })
            .await?;
        return Ok(());
    }
    stream
        .send(&LogChunk {
            lines: Vec::new(),
            end: true,
        })
        .await?;
    Ok(())
}

/// Fetches lines from the node at `addr` into `out`.
pub(crate) async fn fetch(
    membership: &Membership,
    addr: SocketAddr,
    request: LogRequest,
    out: mpsc::Sender<Vec<String>>,
) -> anyhow::Result<()> {
    let mut stream = membership
        .open_stream(addr, mob_membership::Channel::Logs, TIMEOUT)
        .await?;
    let follow = request.follow;
    stream.send(&request).await?;
    loop {
        let chunk: LogChunk = if follow {
            match stream.recv().await? {
                Some(chunk) => chunk,
                None => return Ok(()),
            }
        } else {
            stream.recv_within(TIMEOUT).await?
        };
        if !chunk.lines.is_empty() && out.send(chunk.lines).await.is_err() {
            return Ok(());
        }
        if chunk.end {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_tail_is_cut_to_fit_a_frame() {
        let line = "x".repeat(1000);
        let lines = vec![line; 10_000];
        let out = within_budget(lines);
        let bytes: usize = out.iter().map(|l| l.len() + 8).sum();
        assert!(bytes <= MAX_TAIL_BYTES + 200, "{bytes}");
        assert!(out[0].starts_with("[mob: "), "{}", out[0]);
        assert!(out.len() > 4000);
        let short = within_budget(vec!["a".into(), "b".into()]);
        assert_eq!(short, vec!["a", "b"]);
    }

    #[tokio::test]
    async fn a_name_that_is_a_path_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        // A file a traversal would reach: <dir>/secret.0.log.
        std::fs::write(dir.path().join("secret.0.log"), "do not serve\n").unwrap();
        let config = LogConfig::new(logs);
        for name in ["../secret", "/etc/passwd", "a/b"] {
            let (tx, mut rx) = mpsc::channel(4);
            let request = LogRequest {
                service: name.into(),
                slot: 0,
                lines: 10,
                follow: false,
            };
            let err = local(config.clone(), request, tx).await.unwrap_err();
            assert!(
                err.to_string().contains("bad service name"),
                "{name}: {err}"
            );
            assert!(rx.try_recv().is_err(), "{name}: something was sent");
        }
    }
}
