//! The agent's side of the control socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mob_membership::Membership;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::debug;

use crate::replication::task::TableHandle;

use super::protocol::{MAX_FRAME, PROTOCOL_VERSION, Request, RequestBody, Response, StatsReport};

const MAX_CONNECTIONS: usize = 64;

/// What requests are answered from.
pub(crate) struct ControlState {
    pub(crate) membership: Membership,
    pub(crate) table: TableHandle,
    pub(crate) started: Instant,
}

/// Binds the control socket at `path` (mode 0600). A stale socket file is
/// replaced; a live one means another agent uses this data dir.
pub(crate) async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use: another agent runs with this data dir",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control connections until the task is dropped.
pub(crate) async fn serve(listener: UnixListener, state: Arc<ControlState>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(stream, &state).await {
                debug!(error = %e, "control connection failed");
            }
        });
    }
}

async fn serve_connection(stream: UnixStream, state: &ControlState) -> std::io::Result<()> {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    let mut framed = Framed::new(stream, codec);
    while let Some(frame) = framed.next().await {
        let response = match postcard::from_bytes::<Request>(&frame?) {
            Ok(request) if request.version != PROTOCOL_VERSION => Response::Error(format!(
                "control protocol version {} is not supported by this agent (speaks {PROTOCOL_VERSION}); use a matching mob-agent",
                request.version
            )),
            Ok(request) => answer(request.body, state).await,
            Err(e) => Response::Error(format!("malformed request: {e}")),
        };
        let bytes = postcard::to_stdvec(&response).map_err(std::io::Error::other)?;
        framed.send(Bytes::from(bytes)).await?;
    }
    Ok(())
}

async fn answer(body: RequestBody, state: &ControlState) -> Response {
    let table = &state.table;
    let result = match body {
        RequestBody::Members => Ok(Response::Members(state.membership.members())),
        RequestBody::Stats => Ok(Response::Stats(stats(state))),
        RequestBody::Deploy(specs) => table
            .deploy(specs)
            .await
            .map(|r| r.map_or_else(|e| Response::Error(e.to_string()), Response::Deployed)),
        RequestBody::Remove(name) => table
            .remove(name)
            .await
            .map(|r| r.map_or_else(|e| Response::Error(e.to_string()), Response::Written)),
        RequestBody::Scale(name, replicas) => table
            .scale(name, replicas)
            .await
            .map(|r| r.map_or_else(|e| Response::Error(e.to_string()), Response::Written)),
        RequestBody::Services => table.services().await.map(Response::Services),
    };
    result.unwrap_or_else(|e| Response::Error(e.to_string()))
}

fn stats(state: &ControlState) -> StatsReport {
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let t = &state.table.stats;
    StatsReport {
        node: state.membership.local().name.clone(),
        uptime_secs: state.started.elapsed().as_secs_f64(),
        membership: state.membership.stats(),
        table_records: get(&t.records),
        deltas_rejected: get(&t.deltas_rejected),
        anti_entropy_rounds: get(&t.anti_entropy_rounds),
        anti_entropy_failures: get(&t.anti_entropy_failures),
    }
}

/// Removes the socket file on drop.
pub(crate) struct SocketFile(pub(crate) PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
