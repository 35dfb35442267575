//! The agent's side of the control socket.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mob_membership::{ClusterKey, MemberState, Membership};
use mob_scheduler::node::{self, Reply, keyring};
use mob_scheduler::services_view;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::debug;

use crate::log_service::{self, LogRequest};
use crate::replication::handle::{Stopped, TableHandle};

use super::protocol::{
    KeysRequest, MAX_FRAME, MemberReport, PROTOCOL_VERSION, Request, RequestBody, Response,
    StatsReport, Verb,
};

/// Control connections open at once (each a task and a descriptor).
const MAX_CONNECTIONS: usize = 512;
/// Requests answered at once; more wait their turn.
const MAX_REQUESTS: usize = 64;
/// Log streams (`logs`, `logs -f`) at once: a pool of their own, so that
/// followers never keep a request from being answered.
const MAX_FOLLOWERS: usize = 256;
/// A connection that sends no request for this long is closed.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What requests are answered from.
pub(crate) struct ControlState {
    pub(crate) membership: Membership,
    pub(crate) table: TableHandle,
    pub(crate) logs: mob_providers::logs::LogConfig,
    pub(crate) started: Instant,
    /// See [`MAX_REQUESTS`] and [`MAX_FOLLOWERS`].
    pub(crate) limits: Limits,
    /// The DNS server's counters.
    pub(crate) dns: Arc<crate::dns::DnsStats>,
    /// The agent's event stream.
    pub(crate) events: Arc<crate::events::Events>,
    /// The data dir (the metrics read the table file's size).
    pub(crate) data_dir: PathBuf,
    /// Requests answered, by kind and result.
    pub(crate) requests: RequestCounts,
}

/// Control requests answered, by kind and result (`ok` or `error`).
#[derive(Default)]
pub(crate) struct RequestCounts(std::sync::Mutex<BTreeMap<(&'static str, &'static str), u64>>);

impl RequestCounts {
    fn count(&self, kind: &'static str, response: &Response) {
        let result = if matches!(response, Response::Error(_)) {
            "error"
        } else {
            "ok"
        };
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((kind, result)).or_default() += 1;
    }

    /// The counts so far.
    pub(crate) fn snapshot(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl RequestBody {
    /// The request's kind, a metric label.
    fn kind(&self) -> &'static str {
        match self {
            Self::Members => "members",
            Self::Stats => "stats",
            Self::Deploy(_) => "deploy",
            Self::Remove(_) => "remove",
            Self::Scale(..) => "scale",
            Self::Verb(_, Verb::Stop) => "stop",
            Self::Verb(_, Verb::Start) => "start",
            Self::Verb(_, Verb::Restart(_)) => "restart",
            Self::Verb(_, Verb::Rollback(_)) => "rollback",
            Self::History(_) => "history",
            Self::Services => "services",
            Self::Drain(_) => "drain",
            Self::Keys(_) => "keys",
            Self::Logs(_) => "logs",
            Self::Events => "events",
            Self::Join(_) => "join",
            Self::DrainNode(..) => "drain",
            Self::ForceLeave(_) => "force_leave",
        }
    }
}

/// The pools control connections draw from.
pub(crate) struct Limits {
    requests: Arc<Semaphore>,
    followers: Arc<Semaphore>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests: Arc::new(Semaphore::new(MAX_REQUESTS)),
            followers: Arc::new(Semaphore::new(MAX_FOLLOWERS)),
        }
    }
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
            // Out of file descriptors, most likely: don't spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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
    while let Ok(Some(frame)) = tokio::time::timeout(IDLE_TIMEOUT, framed.next()).await {
        let request = postcard::from_bytes::<Request>(&frame?);
        if let Ok(Request {
            version: PROTOCOL_VERSION,
            body: RequestBody::Logs(logs),
        }) = request
        {
            let Ok(_following) = state.limits.followers.clone().try_acquire_owned() else {
                let busy = format!("{MAX_FOLLOWERS} log streams are open already; try again");
                send(&mut framed, &Response::Error(busy)).await?;
                continue;
            };
            stream_logs(&mut framed, state, logs).await?;
            continue;
        }
        if let Ok(Request {
            version: PROTOCOL_VERSION,
            body: RequestBody::Events,
        }) = request
        {
            let Ok(_following) = state.limits.followers.clone().try_acquire_owned() else {
                let busy = format!("{MAX_FOLLOWERS} streams are open already; try again");
                send(&mut framed, &Response::Error(busy)).await?;
                continue;
            };
            return stream_events(&mut framed, state).await;
        }
        let Ok(_answering) = state.limits.requests.clone().acquire_owned().await else {
            return Ok(());
        };
        let response = match request {
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

/// Answers one request (the HTTP API's reads come here too).
pub(crate) async fn answer(body: RequestBody, state: &ControlState) -> Response {
    let kind = body.kind();
    let response = answer_body(body, state).await;
    state.requests.count(kind, &response);
    response
}

async fn answer_body(body: RequestBody, state: &ControlState) -> Response {
    let table = &state.table;
    let write = |request| table.request(request);
    let result = match body {
        RequestBody::Members => {
            let members = state.membership.members();
            let me = state.membership.local().addr;
            let offsets: Vec<Option<i64>> = members
                .iter()
                .map(|m| {
                    if m.id.addr == me {
                        Some(0)
                    } else {
                        state.membership.clock_offset(m.id.addr)
                    }
                })
                .collect();
            table
                .read(move |n| {
                    members
                        .into_iter()
                        .zip(offsets)
                        .map(|(member, clock_offset_ms)| MemberReport {
                            slots: n.table().load(&member.id.name),
                            record: n.table().node(&member.id.name).cloned(),
                            member,
                            clock_offset_ms,
                        })
                        .collect()
                })
                .await
                .map(Response::Members)
        }
        RequestBody::Stats => Ok(Response::Stats(stats(state))),
        RequestBody::Deploy(specs) => write(node::Request::Deploy(specs)).await.map(response),
        RequestBody::Remove(name) => write(node::Request::Remove(name)).await.map(response),
        RequestBody::Scale(name, replicas) => write(node::Request::Scale(name, replicas))
            .await
            .map(response),
        RequestBody::Verb(name, verb) => write(match verb {
            Verb::Stop => node::Request::Stop(name),
            Verb::Start => node::Request::Start(name),
            Verb::Restart(slot) => node::Request::Restart(name, slot),
            Verb::Rollback(to) => node::Request::Rollback(name, to),
        })
        .await
        .map(response),
        RequestBody::History(name) => table
            .read(move |n| n.table().history(&name).cloned())
            .await
            .map(Response::History),
        RequestBody::Services => table
            .read(|n| services_view::services(n.table(), n.members()))
            .await
            .map(Response::Services),
        RequestBody::Drain(on) => write(node::Request::Drain(on)).await.map(response),
        RequestBody::DrainNode(name, on) => write(node::Request::DrainNode(name, on))
            .await
            .map(response),
        RequestBody::ForceLeave(name) => write(node::Request::ForceLeave(name)).await.map(response),
        RequestBody::Keys(request) => keys(request, state).await,
        RequestBody::Join(addrs) => Ok(join(addrs, state).await),
        RequestBody::Logs(_) | RequestBody::Events => {
            Ok(Response::Error("this request is streamed".into()))
        }
    };
    result.unwrap_or_else(|e| Response::Error(e.to_string()))
}

/// How long `join` waits for an agent it announced to to answer.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Announces to `addrs` and waits until one of them is an alive member.
async fn join(addrs: Vec<std::net::SocketAddr>, state: &ControlState) -> Response {
    if let Err(e) = state.membership.join(addrs.clone()).await {
        return Response::Error(e.to_string());
    }
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        let joined: Vec<String> = state
            .membership
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Alive && addrs.contains(&m.id.addr))
            .map(|m| m.id.name)
            .collect();
        if !joined.is_empty() {
            return Response::Joined(joined);
        }
        if tokio::time::Instant::now() >= deadline {
            let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            return Response::Error(format!(
                "no agent at {} answered within {JOIN_TIMEOUT:?}: is one running there, reachable, with this cluster's key? (this agent keeps announcing to it)",
                addrs.join(", ")
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn keys(request: KeysRequest, state: &ControlState) -> Result<Response, Stopped> {
    let write = |request| state.table.request(request);
    match request {
        KeysRequest::List => {
            let alive: BTreeSet<String> = state
                .membership
                .members()
                .into_iter()
                .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
                .map(|m| m.id.name)
                .collect();
            let members = alive.iter().cloned().collect();
            state
                .table
                .read(move |n| Response::Keys(members, keyring::view(n.ring(), n.table(), &alive)))
                .await
        }
        KeysRequest::Install(text) => match ClusterKey::from_base64(&text) {
            Ok(key) => write(node::Request::KeyInstall(crate::keys::ring_key(&key)))
                .await
                .map(response),
            Err(e) => Ok(Response::Error(e.to_string())),
        },
        KeysRequest::Use(fingerprint) => write(node::Request::KeyUse(fingerprint))
            .await
            .map(response),
        KeysRequest::Remove(fingerprint) => write(node::Request::KeyRemove(fingerprint))
            .await
            .map(response),
    }
}

/// The control response of a write's reply.
fn response(reply: Reply) -> Response {
    match reply {
        Reply::Deployed(Ok(outcomes)) => Response::Deployed(outcomes),
        Reply::Written(Ok(version)) => Response::Written(version),
        Reply::Done(Ok(())) => Response::Ok,
        Reply::Deployed(Err(e)) | Reply::Written(Err(e)) | Reply::Done(Err(e)) => {
            Response::Error(e.to_string())
        }
    }
}

type ControlFramed = Framed<UnixStream, LengthDelimitedCodec>;

async fn send(framed: &mut ControlFramed, response: &Response) -> std::io::Result<()> {
    let bytes = postcard::to_stdvec(response).map_err(std::io::Error::other)?;
    framed.send(Bytes::from(bytes)).await
}

/// Streams the agent's events until the client hangs up.
async fn stream_events(framed: &mut ControlFramed, state: &ControlState) -> std::io::Result<()> {
    use tokio::sync::broadcast::error::RecvError;
    let (recent, mut rx) = state.events.subscribe();
    for line in recent {
        send(framed, &Response::Event(Box::new(line))).await?;
    }
    loop {
        let response = tokio::select! {
            line = rx.recv() => match line {
                Ok(line) => Response::Event(Box::new(line)),
                Err(RecvError::Lagged(n)) => Response::EventsMissed(n),
                Err(RecvError::Closed) => return Ok(()),
            },
            // Anything from the client, or its end, ends the stream.
            _ = framed.next() => return Ok(()),
        };
        send(framed, &response).await?;
    }
}

/// Streams an instance's log lines from wherever it runs.
async fn stream_logs(
    framed: &mut ControlFramed,
    state: &ControlState,
    request: LogRequest,
) -> std::io::Result<()> {
    let me = state.membership.local().name.clone();
    let (service, slot) = (request.service.clone(), request.slot);
    let owner = match state
        .table
        .read(move |n| {
            n.table()
                .claim(&service, slot)
                .and_then(|c| c.owner.clone())
        })
        .await
    {
        Ok(owner) => owner,
        Err(e) => return send(framed, &Response::Error(e.to_string())).await,
    };
    let remote = owner.filter(|o| *o != me).map(|o| {
        let addr = state
            .membership
            .members()
            .into_iter()
            .find(|m| m.id.name == o && m.state.is_active())
            .map(|m| m.id.addr);
        (o, addr)
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let reader = match remote {
        Some((owner, None)) => {
            let message = format!(
                "{}/{} runs on {owner}, which is not reachable",
                request.service, request.slot
            );
            return send(framed, &Response::Error(message)).await;
        }
        Some((_, Some(addr))) => {
            let membership = state.membership.clone();
            tokio::spawn(async move { log_service::fetch(&membership, addr, request, tx).await })
        }
        None => tokio::spawn(log_service::local(state.logs.clone(), request, tx)),
    };
    loop {
        // A client says nothing while it follows: anything from it, or the
        // end of its connection (Ctrl-C on `logs -f`), ends the stream, even
        // if the instance is quiet.
        let lines = tokio::select! {
            lines = rx.recv() => lines,
            _ = framed.next() => {
                reader.abort();
                return Ok(());
            }
        };
        let Some(lines) = lines else {
            break;
        };
        if send(framed, &Response::LogLines(lines)).await.is_err() {
            reader.abort();
            return Ok(());
        }
    }
    match reader.await {
        Ok(Err(e)) => send(framed, &Response::Error(e.to_string())).await,
        _ => send(framed, &Response::LogEnd).await,
    }
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
        deltas_received: get(&t.deltas_received),
        records_rejected: get(&t.records_rejected),
        table_forgotten: get(&t.forgotten),
        table_save_failures: get(&t.save_failures),
        dns_queries: get(&state.dns.queries),
        dns_malformed: get(&state.dns.malformed),
    }
}

/// Removes the socket file on drop.
pub(crate) struct SocketFile(pub(crate) PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
