//! `mob-agent run`: wires membership and the control API, runs until the
//! shutdown future resolves, then leaves the cluster.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mob_membership::{Channel, Membership, MembershipConfig, epoch, stream::DEFAULT_FRAME_LIMIT};
use mob_scheduler::Node;
use mob_scheduler::node::{NodeConfig, Request};
use mob_scheduler::quorum::Detection;
use tracing::field::valuable;
use tracing::{info, warn};

use crate::config::{AgentConfig, KeySource};
use crate::control::server::{self, ControlState, SocketFile};
use crate::events::Events;
use crate::log_service;
use crate::logging::listed;
use crate::replication::handle::TableHandle;
use crate::replication::task::{self as table_task, TableInputs};
use crate::replication::{anti_entropy, store};
use crate::supervisor_task::{self, SupervisorCmd};
use crate::wall_clock::now_ms;

/// Longest a graceful stop waits for this node's slots to run elsewhere.
const SHUTDOWN_HANDOVER: Duration = Duration::from_secs(10);

/// How long an agent with seeds may be alone before it says so.
const ALONE_WARNING: Duration = Duration::from_secs(10);

/// How long a graceful stop waits for its leave record to be saved.
const LEAVE_RECORD_WAIT: Duration = Duration::from_secs(2);

/// How long a graceful stop waits for the leave to go out.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the agent could not run; `mob-agent` exits with status 1.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// Membership failed to start (bind, epoch file).
    #[error(transparent)]
    Membership(#[from] mob_membership::Error),
    /// The control socket could not be bound.
    #[error("control socket {path}: {source}")]
    Control {
        /// Socket path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The table file is damaged (and `--reset-table` was not given).
    #[error(transparent)]
    Table(#[from] store::StoreError),
    /// The DNS port could not be bound.
    #[error("dns {addr}: {source} (choose another with --dns ADDR, or --dns off)")]
    Dns {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP port given with --http could not be bound.
    #[error("http {addr}: {source} (choose another with --http ADDR, or --http off)")]
    Http {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The ready file could not be written.
    #[error("ready file {path}: {source}")]
    ReadyFile {
        /// File path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` resolves.
pub(crate) async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let started = Instant::now();
    // A crash mid-save leaves a temp file: it never holds anything the
    // file itself doesn't (the rename did not happen).
    for file in [store::TABLE_FILE, epoch::EPOCH_FILE] {
        let path = config.data_dir.join(file);
        match mob_membership::atomic_file::remove_leftover(&path) {
            Ok(true) => info!(path = %path.display(), "removed a temp file an earlier run left"),
            Ok(false) => {}
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot remove a temp file an earlier run left")
            }
        }
    }
    let table = load_table(&config, now_ms())?;
    let table_load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let epoch::NextEpoch {
        epoch,
        not_persisted,
    } = epoch::next_epoch(&config.data_dir, now_ms())?;
    if let Some(e) = not_persisted {
        warn!(error = %e, epoch, "cannot persist the epoch; starting with it all the same (the clock keeps the next start newer)");
    }
    let socket_path = config.socket_path();
    let listener = server::bind(&socket_path)
        .await
        .map_err(|source| RunError::Control {
            path: socket_path.display().to_string(),
            source,
        })?;
    let _socket_file = SocketFile(socket_path.clone());

    // The nodes the table remembers are seeds too: a restarted agent
    // started without --join still finds its cluster.
    let mut seeds = config.seeds.clone();
    for (name, node) in table.nodes() {
        if name != config.name
            && let Ok(addr) = node.addr.parse::<std::net::SocketAddr>()
            && !seeds.contains(&addr)
        {
            seeds.push(addr);
        }
    }
    let keyring = crate::keys::at_start(&config.data_dir, &config.key, &config.key_source)?;
    let (membership, channels) = Membership::start(MembershipConfig {
        name: config.name.clone(),
        bind: config.bind,
        advertise: config.advertise,
        seeds: seeds.clone(),
        keyring: keyring.clone(),
        epoch,
        data_dir: Some(config.data_dir.clone()),
        timings: config.timings.clone(),
        frame_limit: DEFAULT_FRAME_LIMIT,
    })
    .await?;
    let local = membership.local().clone();
    info!(
        node = %local.name,
        bind = %config.bind,
        advertise = %local.addr,
        epoch,
        data_dir = %config.data_dir.display(),
        key_source = %config.key_source,
        key = %keyring.primary().fingerprint(),
        seeds = valuable(&listed(&seeds)),
        tags = valuable(&config.tags),
        providers = valuable(&listed(&config.providers)),
        services = table.services().filter(|(_, _, s)| s.spec.is_some()).count(),
        table_records = table.len(),
        table_load_ms,
        "agent started"
    );
    if let KeySource::Generated(path) = &config.key_source {
        // (With seeds and no key, the configuration was refused.)
        warn!(
            path = %path.display(),
            "generated a new cluster key; give every other agent the same key: copy this file and pass --key-file, or set MOB_KEY to its contents"
        );
    }
    if !seeds.is_empty() {
        // Alone for long with seeds to join: a wrong address, a firewall
        // or another key. Said once; the agent keeps trying.
        let (membership, seeds) = (membership.clone(), seeds.clone());
        tokio::spawn(async move {
            tokio::time::sleep(ALONE_WARNING).await;
            let me = membership.local().addr;
            let joined = membership
                .members()
                .iter()
                .any(|m| m.id.addr != me && m.state.is_active());
            if !joined {
                warn!(
                    seeds = valuable(&listed(&seeds)),
                    after_s = ALONE_WARNING.as_secs(),
                    "still alone: no seed answered; check their addresses, that UDP and TCP reach their port, and that every agent has the same key (still trying)"
                );
            }
        });
    }
    if config.bind.ip().is_unspecified() && local.addr.ip().is_loopback() {
        warn!(
            bind = %config.bind,
            advertise = %local.addr,
            "bound to every address but advertising loopback: agents on other hosts cannot reach this one; pass --advertise ADDR (or --join a seed on the network)"
        );
    }

    // The supervisor and the providers this node can offer.
    let providers = Arc::new(mob_providers::Providers::detect(&config.providers).await);
    // This agent's identity on the host: its control socket. Instances get
    // it as MOB_AGENT, which is also where `mob-agent` looks for its agent.
    let agent_id = std::fs::canonicalize(&config.data_dir)
        .unwrap_or_else(|_| config.data_dir.clone())
        .join(crate::config::SOCKET_FILE)
        .display()
        .to_string();
    let leftovers = providers.docker().remove_agent_containers(&agent_id).await;
    if !leftovers.is_empty() {
        info!(node = %local.name, containers = valuable(&leftovers), "removed containers left by an earlier run");
    }
    let leftovers = {
        let agent_id = agent_id.clone();
        tokio::task::spawn_blocking(move || {
            mob_providers::leftovers::kill_leftover_processes(&agent_id)
        })
        .await
        .unwrap_or_default()
    };
    if !leftovers.is_empty() {
        info!(node = %local.name, pids = valuable(&leftovers), "killed processes left by an earlier run");
    }
    let offered = providers.offered().to_vec();
    let log_config = mob_providers::logs::LogConfig::new(config.data_dir.join("logs"));
    let (reports_tx, reports) = tokio::sync::mpsc::channel(4096);
    let supervisor = mob_providers::Supervisor::new(
        local.name.clone(),
        agent_id,
        local.addr.ip(),
        config.port_range.clone(),
        providers,
        log_config.clone(),
        reports_tx,
    );
    let events = Arc::new(Events::new(local.name.clone()));
    tokio::spawn(crate::events::watch_members(
        events.clone(),
        membership.watch(),
        local.name.clone(),
    ));
    let (supervisor_tx, supervisor_rx) = tokio::sync::mpsc::channel(4096);
    let (statuses_tx, statuses) = tokio::sync::mpsc::channel(4096);
    tokio::spawn(supervisor_task::run(
        supervisor,
        supervisor_rx,
        supervisor_tx.clone(),
        reports,
        statuses_tx,
        events.clone(),
    ));

    let node = Node::new(
        NodeConfig {
            name: local.name.clone(),
            addr: local.addr,
            providers: offered.clone(),
            tags: config.tags.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            has_seeds: !seeds.is_empty(),
            broadcast_deltas: config.table.broadcast_deltas,
            anti_entropy_period_ms: millis(config.table.anti_entropy_period),
            gc_after_ms: millis(config.table.gc_after),
            seed: rand::random(),
            rebalance_interval_ms: millis(config.table.rebalance_interval),
            detection: Detection {
                probe_period_ms: millis(config.timings.probe_period),
                probe_rtt_ms: millis(config.timings.probe_rtt),
                suspect_to_down_ms: millis(config.timings.suspect_to_down_after),
            },
            keyring: crate::keys::ring_of(&keyring),
        },
        table,
        now_ms(),
    );
    let table = table_task::spawn(
        node,
        membership.clone(),
        TableInputs {
            broadcasts: channels.broadcasts,
            reports: statuses,
            supervisor: supervisor_tx.clone(),
            events: events.clone(),
        },
        config.data_dir.clone(),
    );
    info!(node = %local.name, providers = valuable(&listed(&offered)), "providers offered");
    let streams = tokio::spawn(serve_streams(
        channels.streams,
        table.clone(),
        log_config.clone(),
    ));
    let dns_stats = Arc::new(crate::dns::DnsStats::default());
    let dns = match config.dns {
        Some(addr) => {
            match crate::dns::serve(addr, config.dns_ttl, table.clone(), dns_stats.clone()).await {
                Ok(bound) => {
                    info!(node = %local.name, addr = %bound, ttl = config.dns_ttl, "dns serving the zone mob.");
                    Some(bound)
                }
                Err(source) if config.dns_explicit => return Err(RunError::Dns { addr, source }),
                // The default address taken (another agent on this host):
                // run without it.
                Err(e) => {
                    warn!(node = %local.name, addr = %addr, error = %e, "dns off: its default address is taken; pass --dns ADDR");
                    None
                }
            }
        }
        None => None,
    };
    let control_state = Arc::new(ControlState {
        membership: membership.clone(),
        table: table.clone(),
        logs: log_config,
        started,
        limits: server::Limits::default(),
        dns: dns_stats,
        events: events.clone(),
        data_dir: config.data_dir.clone(),
        requests: server::RequestCounts::default(),
    });
    let control = tokio::spawn(server::serve(listener, control_state.clone()));
    let http = match config.http {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let bound = listener.local_addr().unwrap_or(addr);
                let state = crate::http::HttpState::new(control_state, config.http_token.clone());
                tokio::spawn(crate::http::serve(listener, Arc::new(state)));
                info!(node = %local.name, addr = %bound, token = config.http_token.is_some(), "http api serving");
                Some(bound)
            }
            Err(source) if config.http_explicit => return Err(RunError::Http { addr, source }),
            Err(e) => {
                warn!(node = %local.name, addr = %addr, error = %e, "http api off: its default address is taken; pass --http ADDR");
                None
            }
        },
        None => None,
    };
    if let Some(path) = &config.ready_file {
        write_ready_file(
            path,
            &local.addr.to_string(),
            &socket_path.display().to_string(),
            dns,
            http,
        )
        .map_err(|source| RunError::ReadyFile {
            path: path.display().to_string(),
            source,
        })?;
    }

    shutdown.await;
    info!(node = %local.name, "shutting down: handing slots over, then leaving the cluster");
    hand_over(&membership, &table, &supervisor_tx).await;
    let (done, stopped) = tokio::sync::oneshot::channel();
    if supervisor_tx
        .send(SupervisorCmd::StopAll(done))
        .await
        .is_ok()
    {
        let _ = stopped.await;
    }
    if let Err(e) = membership.leave(LEAVE_TIMEOUT).await {
        warn!(error = %e, "leave did not complete");
    }
    control.abort();
    streams.abort();
    if table.shutdown().await.is_err() {
        warn!("the table task stopped before its final save");
    }
    Ok(())
}

/// Drains this node and waits (bounded) until its instances have stopped
/// because their replacements run elsewhere.
async fn hand_over(
    membership: &Membership,
    table: &TableHandle,
    supervisor: &tokio::sync::mpsc::Sender<SupervisorCmd>,
) {
    let me = membership.local().name.clone();
    let others = membership
        .members()
        .iter()
        .any(|m| m.id.name != me && m.state.is_active());
    if !others {
        return;
    }
    // The leave is an operator write: acknowledged once saved. A disk that
    // is slow to save must not hold the stop up (systemd's stop timeout
    // would kill the instances unstopped): go on without it, and the
    // membership leave still tells the peers.
    match tokio::time::timeout(LEAVE_RECORD_WAIT, table.request(Request::Leave)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return,
        Err(_) => {
            warn!(node = %me, waited_ms = LEAVE_RECORD_WAIT.as_millis() as u64, "leave record not saved in time; stopping without handing slots over");
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_HANDOVER;
    while tokio::time::Instant::now() < deadline {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if supervisor.send(SupervisorCmd::Count(tx)).await.is_err() {
            return;
        }
        if rx.await.map_or(true, |n| n == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    warn!(node = %me, "hand-over timed out; stopping the remaining instances");
}

/// Loads the table file; a damaged one stops the start, unless
/// `--reset-table` sets it aside.
fn load_table(config: &AgentConfig, now_ms: u64) -> Result<mob_scheduler::Table, RunError> {
    match store::load(&config.data_dir) {
        Ok(table) => Ok(table),
        Err(store::StoreError::Corrupt { path, why }) if config.reset_table => {
            let aside = store::set_aside(&config.data_dir, now_ms)?;
            warn!(
                path = %path.display(),
                moved_to = %aside.display(),
                error = %why,
                "table file damaged; set aside, starting with an empty table (--reset-table)"
            );
            Ok(mob_scheduler::Table::new())
        }
        Err(e) => Err(e.into()),
    }
}

/// Serves the streams peers open on the agent's channels.
async fn serve_streams(
    mut streams: tokio::sync::mpsc::Receiver<mob_membership::IncomingStream>,
    table: TableHandle,
    logs: mob_providers::logs::LogConfig,
) {
    while let Some(incoming) = streams.recv().await {
        let peer = incoming.stream.peer();
        match incoming.channel {
            Channel::AntiEntropy => {
                let table = table.clone();
                tokio::spawn(async move {
                    // (Only the initiator's node counts a round as caught
                    // up: here the peer is an unknown port, not a member.)
                    match anti_entropy::serve(incoming.stream, &table).await {
                        Ok(_) => {}
                        Err(e) if e.is_rejected_frame() => {}
                        Err(e) => {
                            tracing::debug!(peer = %peer, error = %e, "anti-entropy round failed")
                        }
                    }
                });
            }
            Channel::Logs => {
                let logs = logs.clone();
                tokio::spawn(async move {
                    match log_service::serve(incoming.stream, logs).await {
                        Err(e) if !is_rejected_frame(&e) => {
                            tracing::debug!(peer = %peer, error = %e, "log stream ended");
                        }
                        _ => {}
                    }
                });
            }
            Channel::PushPull => {
                tracing::debug!(peer = %peer, "push-pull stream handed to the agent dropped")
            }
        }
    }
}

fn write_ready_file(
    path: &std::path::Path,
    addr: &str,
    socket: &str,
    dns: Option<std::net::SocketAddr>,
    http: Option<std::net::SocketAddr>,
) -> std::io::Result<()> {
    let body =
        serde_json::json!({ "addr": addr, "socket": socket, "dns": dns, "http": http }).to_string();
    mob_membership::atomic_file::write(path, body.as_bytes())
}

/// Whether a log stream ended on a frame that failed to open or decode
/// (already counted and logged where it was read).
fn is_rejected_frame(e: &anyhow::Error) -> bool {
    e.downcast_ref::<mob_membership::Error>()
        .is_some_and(mob_membership::Error::is_rejected_frame)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
