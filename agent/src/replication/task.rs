//! The task that owns the [`Replica`]: operator writes, deltas in and out,
//! anti-entropy, saves. Commands come through a [`TableHandle`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mob_membership::{MemberEvent, MemberState, Membership};
use mob_scheduler::services_view::{self, ServiceView};
use mob_scheduler::{Digest, Record, ServiceSpec};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info};

use super::anti_entropy;
use super::replica::{ChangeKind, Deployed, OpError, Replica, ServiceChange, Written};
use super::store;

/// A write of more records than this skips the gossip deltas and pushes
/// by anti-entropy to a few peers at once instead, so bulk deploys don't
/// flood the gossip queue.
const MAX_DELTAS_PER_WRITE: usize = 32;
/// Peers pushed to at once after a bulk write.
const BULK_PUSH_PEERS: usize = 3;
/// Quiet time after a change before the table is saved.
const SAVE_DEBOUNCE: Duration = Duration::from_millis(200);
const STREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// Settings of the table task.
#[derive(Debug, Clone)]
pub(crate) struct TableConfig {
    /// Where the table file lives.
    pub(crate) data_dir: PathBuf,
    /// Period of anti-entropy rounds with a random live member.
    pub(crate) anti_entropy_period: Duration,
    /// Send local writes as deltas on the membership broadcast. Turning
    /// this off leaves anti-entropy alone to spread them (for diagnosis).
    pub(crate) broadcast_deltas: bool,
}

/// A delta on the membership broadcast: records just written.
#[derive(Debug, Serialize, Deserialize)]
struct Delta(Records);

/// Counters of the table task.
#[derive(Debug, Default)]
pub(crate) struct TableStats {
    pub(crate) records: AtomicU64,
    pub(crate) deltas_rejected: AtomicU64,
    pub(crate) anti_entropy_rounds: AtomicU64,
    pub(crate) anti_entropy_failures: AtomicU64,
}

/// Records with their keys, as they travel.
type Records = Vec<(String, Record)>;

enum Cmd {
    Deploy(
        Vec<ServiceSpec>,
        oneshot::Sender<Result<Vec<Deployed>, OpError>>,
    ),
    Remove(String, oneshot::Sender<Result<u64, OpError>>),
    Scale(String, u32, oneshot::Sender<Result<u64, OpError>>),
    Services(oneshot::Sender<Vec<ServiceView>>),
    Digest(oneshot::Sender<Digest>),
    MissingFrom(Digest, oneshot::Sender<(Vec<u16>, Records)>),
    RecordsIn(Vec<u16>, oneshot::Sender<Records>),
    Merge(Records, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The table task is gone (the agent is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the table task has stopped")]
pub(crate) struct Stopped;

/// Talks to the table task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct TableHandle {
    cmds: mpsc::Sender<Cmd>,
    pub(crate) stats: Arc<TableStats>,
}

impl TableHandle {
    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(cmd(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    pub(crate) async fn deploy(
        &self,
        specs: Vec<ServiceSpec>,
    ) -> Result<Result<Vec<Deployed>, OpError>, Stopped> {
        self.ask(|tx| Cmd::Deploy(specs, tx)).await
    }

    pub(crate) async fn remove(&self, name: String) -> Result<Result<u64, OpError>, Stopped> {
        self.ask(|tx| Cmd::Remove(name, tx)).await
    }

    pub(crate) async fn scale(
        &self,
        name: String,
        replicas: u32,
    ) -> Result<Result<u64, OpError>, Stopped> {
        self.ask(|tx| Cmd::Scale(name, replicas, tx)).await
    }

    pub(crate) async fn services(&self) -> Result<Vec<ServiceView>, Stopped> {
        self.ask(Cmd::Services).await
    }

    pub(crate) async fn digest(&self) -> Result<Digest, Stopped> {
        self.ask(Cmd::Digest).await
    }

    pub(crate) async fn missing_from(
        &self,
        digest: Digest,
    ) -> Result<(Vec<u16>, Records), Stopped> {
        self.ask(|tx| Cmd::MissingFrom(digest, tx)).await
    }

    pub(crate) async fn records_in(&self, buckets: Vec<u16>) -> Result<Records, Stopped> {
        self.ask(|tx| Cmd::RecordsIn(buckets, tx)).await
    }

    pub(crate) async fn merge(&self, records: Records) -> Result<(), Stopped> {
        self.ask(|tx| Cmd::Merge(records, tx)).await
    }

    /// Saves the table and stops the task.
    pub(crate) async fn shutdown(&self) -> Result<(), Stopped> {
        self.ask(Cmd::Shutdown).await
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct TableTask {
    replica: Replica,
    membership: Membership,
    config: TableConfig,
    handle: TableHandle,
    saver: watch::Sender<Option<Arc<Vec<u8>>>>,
    save_at: Option<Instant>,
    anti_entropy_at: Instant,
}

/// Starts the table task over `replica`.
pub(crate) fn spawn(
    replica: Replica,
    membership: Membership,
    broadcasts: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Receiver<MemberEvent>,
    config: TableConfig,
) -> TableHandle {
    let (cmds, rx) = mpsc::channel(256);
    let handle = TableHandle {
        cmds,
        stats: Arc::default(),
    };
    handle
        .stats
        .records
        .store(replica.table().len() as u64, Ordering::Relaxed);
    let (saver, saves) = watch::channel(None);
    tokio::spawn(write_saves(config.data_dir.clone(), saves));
    let task = TableTask {
        replica,
        membership,
        anti_entropy_at: Instant::now() + Duration::from_millis(200),
        config,
        handle: handle.clone(),
        saver,
        save_at: None,
    };
    tokio::spawn(task.run(rx, broadcasts, events));
    handle
}

/// Writes the latest encoded table whenever it changes; one write at a
/// time, and a burst of changes coalesces into one write.
async fn write_saves(dir: PathBuf, mut saves: watch::Receiver<Option<Arc<Vec<u8>>>>) {
    while saves.changed().await.is_ok() {
        let Some(bytes) = saves.borrow_and_update().clone() else {
            continue;
        };
        let dir = dir.clone();
        match tokio::task::spawn_blocking(move || store::save(&dir, &bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "cannot save the table"),
            Err(e) => error!(error = %e, "table save task failed"),
        }
    }
}

impl TableTask {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut broadcasts: mpsc::Receiver<Vec<u8>>,
        mut events: mpsc::Receiver<MemberEvent>,
    ) {
        loop {
            let save_at = self.save_at;
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Shutdown(done)) => {
                        self.save_now().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.handle(cmd).await,
                    None => return,
                },
                Some(bytes) = broadcasts.recv() => self.receive_delta(&bytes),
                Some(event) = events.recv() => {
                    // A member that just came up gets our table at once.
                    if let MemberEvent::Up(id) = event {
                        self.start_anti_entropy(id.addr);
                    }
                }
                _ = sleep_until(self.anti_entropy_at) => {
                    let jitter = rand::rng().random_range(0.8..1.2);
                    self.anti_entropy_at = Instant::now() + self.config.anti_entropy_period.mul_f64(jitter);
                    for peer in self.random_peers(1) {
                        self.start_anti_entropy(peer);
                    }
                }
                _ = sleep_until(save_at.unwrap_or_else(Instant::now)), if save_at.is_some() => {
                    self.save_at = None;
                    let bytes = store::encode(self.replica.table());
                    let _ = self.saver.send(Some(Arc::new(bytes)));
                }
            }
        }
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Deploy(specs, reply) => {
                let result = self.replica.deploy(specs, now_ms());
                let result = match result {
                    Ok((outcomes, written)) => {
                        self.written(written).await;
                        Ok(outcomes)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Cmd::Remove(name, reply) => {
                let result = self.replica.remove(&name, now_ms());
                let _ = reply.send(self.finish(result).await);
            }
            Cmd::Scale(name, replicas, reply) => {
                let result = self.replica.scale(&name, replicas, now_ms());
                let _ = reply.send(self.finish(result).await);
            }
            Cmd::Services(reply) => {
                let _ = reply.send(services_view::services(self.replica.table()));
            }
            Cmd::Digest(reply) => {
                let _ = reply.send(self.replica.table().digest());
            }
            Cmd::MissingFrom(digest, reply) => {
                let table = self.replica.table();
                let buckets = table.differing_buckets(&digest);
                let records = table.records_in(&buckets);
                let _ = reply.send((buckets, records));
            }
            Cmd::RecordsIn(buckets, reply) => {
                let _ = reply.send(self.replica.table().records_in(&buckets));
            }
            Cmd::Merge(records, reply) => {
                self.merge(records);
                let _ = reply.send(());
            }
            Cmd::Shutdown(_) => {}
        }
    }

    async fn finish(&mut self, result: Result<(u64, Written), OpError>) -> Result<u64, OpError> {
        let (version, written) = result?;
        self.written(written).await;
        Ok(version)
    }

    /// After a local write: log, broadcast, schedule a save.
    async fn written(&mut self, written: Written) {
        for change in &written.changes {
            log_change(change);
        }
        if !written.records.is_empty() {
            self.changed();
        }
        if !self.config.broadcast_deltas {
            return;
        }
        if written.records.len() > MAX_DELTAS_PER_WRITE {
            for peer in self.random_peers(BULK_PUSH_PEERS) {
                self.start_anti_entropy(peer);
            }
            return;
        }
        for record in written.records {
            let Ok(bytes) = postcard::to_stdvec(&Delta(vec![record])) else {
                continue;
            };
            // Too big for a datagram: anti-entropy carries it.
            if bytes.len() <= mob_membership::MAX_BROADCAST
                && let Err(e) = self.membership.broadcast(bytes).await
            {
                debug!(error = %e, "delta not broadcast");
            }
        }
    }

    fn receive_delta(&mut self, bytes: &[u8]) {
        match postcard::from_bytes::<Delta>(bytes) {
            Ok(Delta(records)) => self.merge(records),
            Err(e) => {
                self.handle
                    .stats
                    .deltas_rejected
                    .fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "undecodable delta dropped");
            }
        }
    }

    fn merge(&mut self, records: Records) {
        let (changed, changes) = self.replica.merge(records);
        for change in &changes {
            log_change(change);
        }
        if changed {
            self.changed();
        }
    }

    fn changed(&mut self) {
        self.handle
            .stats
            .records
            .store(self.replica.table().len() as u64, Ordering::Relaxed);
        self.save_at = Some(Instant::now() + SAVE_DEBOUNCE);
    }

    async fn save_now(&mut self) {
        let bytes = store::encode(self.replica.table());
        let dir = self.config.data_dir.clone();
        match tokio::task::spawn_blocking(move || store::save(&dir, &bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "cannot save the table"),
            Err(e) => error!(error = %e, "table save task failed"),
        }
    }

    /// Up to `n` distinct live peers, at random.
    fn random_peers(&self, n: usize) -> Vec<std::net::SocketAddr> {
        let me = self.membership.local().addr;
        let mut peers: Vec<_> = self
            .membership
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Alive && m.id.addr != me)
            .map(|m| m.id.addr)
            .collect();
        rand::seq::SliceRandom::shuffle(peers.as_mut_slice(), &mut rand::rng());
        peers.truncate(n);
        peers
    }

    fn start_anti_entropy(&self, peer: std::net::SocketAddr) {
        let (membership, handle) = (self.membership.clone(), self.handle.clone());
        tokio::spawn(async move {
            let round = async {
                let stream = membership
                    .open_stream(peer, anti_entropy::CHANNEL, STREAM_TIMEOUT)
                    .await?;
                anti_entropy::initiate(stream, &handle).await
            };
            match round.await {
                Ok(received) => {
                    handle
                        .stats
                        .anti_entropy_rounds
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %peer, received, "anti-entropy round done");
                }
                Err(e) => {
                    handle
                        .stats
                        .anti_entropy_failures
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %peer, error = %e, "anti-entropy round failed");
                }
            }
        });
    }
}

fn log_change(change: &ServiceChange) {
    let (service, version, origin) = (&change.name, change.version, &change.origin);
    match change.kind {
        ChangeKind::Deployed => {
            info!(service = %service, version, origin = %origin, "service deployed")
        }
        ChangeKind::Updated => {
            info!(service = %service, version, origin = %origin, "service updated")
        }
        ChangeKind::Removed => {
            info!(service = %service, version, origin = %origin, "service removed")
        }
    }
}
