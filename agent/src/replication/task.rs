//! The task that owns the [`Replica`]: operator writes, deltas in and out,
//! anti-entropy, saves. Commands come through a [`TableHandle`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mob_membership::{MemberEvent, MemberState, Membership};
use mob_scheduler::placement::Members;
use mob_scheduler::reconcile::{Action, Reason, reconcile};
use mob_scheduler::record::{Claim, NodeRecord, Value, claim_key, node_key, status_key};
use mob_scheduler::services_view::{self, ServiceView};
use mob_scheduler::spec::ProviderKind;
use mob_scheduler::{Digest, Record, ServiceSpec};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};

use super::anti_entropy;
use super::collector::Collector;
use super::replica::{self, ChangeKind, Deployed, OpError, Replica, ServiceChange, Written};
use super::store;
use crate::supervision::{StatusUpdate, SupervisorCmd};

/// A write of more records than this skips the gossip deltas and pushes
/// by anti-entropy to a few peers at once instead, so bulk deploys don't
/// flood the gossip queue.
const MAX_DELTAS_PER_WRITE: usize = 32;
/// Peers pushed to at once after a bulk write.
const BULK_PUSH_PEERS: usize = 3;
/// Shortest time between two reconciles (changes in between batch up).
const RECONCILE_MIN_GAP: Duration = Duration::from_millis(5);
/// Reconcile at least this often, changes or not.
const RECONCILE_PERIOD: Duration = Duration::from_secs(1);
/// A node with seeds but no peer after this long claims without waiting
/// for an anti-entropy round (a node without seeds claims at once).
const ALONE_GRACE: Duration = Duration::from_secs(3);
/// Longest a change waits to be saved while changes keep coming.
const SAVE_MAX_DELAY: Duration = Duration::from_secs(1);
/// Longest an operator's write waits for the table file.
const SAVE_WAIT: Duration = Duration::from_secs(5);
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
    /// Age after which old deletions and the records of nodes gone for
    /// good are forgotten.
    pub(crate) gc_after: Duration,
    /// Providers this node offers.
    pub(crate) providers: Vec<ProviderKind>,
    /// This node's tags.
    pub(crate) tags: std::collections::BTreeMap<String, String>,
    /// Whether the node was given seeds: then it waits to catch up with a
    /// peer before claiming.
    pub(crate) has_seeds: bool,
}

/// A delta on the membership broadcast: records just written.
#[derive(Debug, Serialize, Deserialize)]
struct Delta(Records);

/// Counters of the table task.
#[derive(Debug, Default)]
pub(crate) struct TableStats {
    pub(crate) records: AtomicU64,
    pub(crate) deltas_received: AtomicU64,
    pub(crate) deltas_rejected: AtomicU64,
    pub(crate) records_rejected: AtomicU64,
    pub(crate) anti_entropy_rounds: AtomicU64,
    pub(crate) anti_entropy_failures: AtomicU64,
    pub(crate) forgotten: AtomicU64,
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
    /// An anti-entropy round with a peer completed.
    Converged,
    /// (on, leaving): an operator's drain, or a graceful shutdown's.
    Drain(bool, bool, oneshot::Sender<()>),
    Owner(String, u32, oneshot::Sender<Option<String>>),
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

    /// Notes that an anti-entropy round completed: the table has caught up
    /// with a peer, so this node may claim slots.
    pub(crate) async fn converged(&self) {
        let _ = self.cmds.send(Cmd::Converged).await;
    }

    /// Marks this node draining (or not), as an operator asked.
    pub(crate) async fn drain(&self, on: bool) -> Result<(), Stopped> {
        self.ask(|tx| Cmd::Drain(on, false, tx)).await
    }

    /// Hands this node's slots over before a graceful shutdown; unlike
    /// [`TableHandle::drain`], not remembered when the agent starts again.
    pub(crate) async fn leave(&self) -> Result<(), Stopped> {
        self.ask(|tx| Cmd::Drain(true, true, tx)).await
    }

    /// The owner of a slot.
    pub(crate) async fn owner(
        &self,
        service: String,
        slot: u32,
    ) -> Result<Option<String>, Stopped> {
        self.ask(|tx| Cmd::Owner(service, slot, tx)).await
    }

    /// Saves the table and stops the task.
    pub(crate) async fn shutdown(&self) -> Result<(), Stopped> {
        self.ask(Cmd::Shutdown).await
    }
}

/// Wall clock, unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct TableTask {
    replica: Replica,
    membership: Membership,
    config: TableConfig,
    handle: TableHandle,
    /// The latest encoded table to save, numbered; one writer task saves.
    saver: watch::Sender<Option<(u64, Arc<Vec<u8>>)>>,
    /// Number of the latest save written to disk.
    saved: watch::Receiver<u64>,
    save_seq: u64,
    save_at: Option<Instant>,
    /// When the first change not yet saved happened.
    dirty_since: Option<Instant>,
    anti_entropy_at: Instant,
    /// Local writes made outside an operator's operation, not yet sent.
    pending_deltas: Records,
    me: String,
    supervisor: mpsc::Sender<SupervisorCmd>,
    started: Instant,
    /// Whether the table caught up with a peer (claims wait for it).
    converged: bool,
    reconcile_at: Option<Instant>,
    last_reconcile: Instant,
    /// Slots a stop was sent for, until their status says stopped.
    stopping: std::collections::HashSet<(String, u32)>,
    started_at_ms: u64,
    collector: Collector,
}

impl TableConfig {
    fn gc_after_ms(&self) -> u64 {
        u64::try_from(self.gc_after.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The agent's side of the table task's channels.
pub(crate) struct TableInputs {
    pub(crate) broadcasts: mpsc::Receiver<Vec<u8>>,
    pub(crate) events: mpsc::Receiver<MemberEvent>,
    pub(crate) statuses: mpsc::Receiver<StatusUpdate>,
    pub(crate) supervisor: mpsc::Sender<SupervisorCmd>,
}

/// Starts the table task over `replica`.
pub(crate) fn spawn(
    replica: Replica,
    membership: Membership,
    inputs: TableInputs,
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
    let (saved_tx, saved) = watch::channel(0);
    tokio::spawn(write_saves(config.data_dir.clone(), saves, saved_tx));
    let me = membership.local().name.clone();
    let gc_after = config.gc_after;
    let mut task = TableTask {
        replica,
        membership,
        anti_entropy_at: Instant::now() + Duration::from_millis(200),
        config,
        handle: handle.clone(),
        saver,
        saved,
        save_seq: 0,
        save_at: None,
        dirty_since: None,
        pending_deltas: Vec::new(),
        me,
        supervisor: inputs.supervisor,
        started: Instant::now(),
        converged: false,
        reconcile_at: Some(Instant::now()),
        last_reconcile: Instant::now(),
        stopping: Default::default(),
        started_at_ms: now_ms(),
        collector: Collector::new(gc_after, now_ms()),
    };
    // A drain outlives a restart of the agent.
    let draining = match task
        .replica
        .table()
        .get(&node_key(&task.me))
        .map(|r| &r.value)
    {
        Some(Value::Node(n)) => n.draining,
        _ => false,
    };
    task.write_node_record(draining, false);
    tokio::spawn(task.run(rx, inputs.broadcasts, inputs.events, inputs.statuses));
    handle
}

/// Writes the latest encoded table whenever it changes: one write at a
/// time (so an older snapshot never lands after a newer one), and a burst
/// of changes coalesces into one write. Reports each number written.
async fn write_saves(
    dir: PathBuf,
    mut saves: watch::Receiver<Option<(u64, Arc<Vec<u8>>)>>,
    saved: watch::Sender<u64>,
) {
    while saves.changed().await.is_ok() {
        let Some((seq, bytes)) = saves.borrow_and_update().clone() else {
            continue;
        };
        let dir = dir.clone();
        match tokio::task::spawn_blocking(move || store::save(&dir, &bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "cannot save the table"),
            Err(e) => error!(error = %e, "table save task failed"),
        }
        let _ = saved.send(seq);
    }
}

impl TableTask {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut broadcasts: mpsc::Receiver<Vec<u8>>,
        mut events: mpsc::Receiver<MemberEvent>,
        mut statuses: mpsc::Receiver<StatusUpdate>,
    ) {
        let mut members = self.membership.watch();
        let mut period = tokio::time::interval(RECONCILE_PERIOD);
        loop {
            let save_at = self.save_at;
            let reconcile_at = self.reconcile_at;
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
                Some(update) = statuses.recv() => self.write_status(update).await,
                Some(bytes) = broadcasts.recv() => self.receive_delta(&bytes),
                Some(event) = events.recv() => {
                    // A member that just came up gets our table at once.
                    if let MemberEvent::Up(id) = event {
                        self.start_anti_entropy(id.addr);
                    }
                }
                Ok(()) = members.changed() => self.reconcile_soon(),
                _ = period.tick() => self.reconcile_soon(),
                _ = sleep_until(reconcile_at.unwrap_or_else(Instant::now)), if reconcile_at.is_some() => {
                    self.reconcile_at = None;
                    self.last_reconcile = Instant::now();
                    self.reconcile().await;
                }
                _ = sleep_until(self.anti_entropy_at) => {
                    let jitter = rand::rng().random_range(0.8..1.2);
                    self.anti_entropy_at = Instant::now() + self.config.anti_entropy_period.mul_f64(jitter);
                    for peer in self.random_peers(1) {
                        self.start_anti_entropy(peer);
                    }
                }
                _ = sleep_until(self.collector.next_at) => self.collect_garbage(),
                _ = sleep_until(save_at.unwrap_or_else(Instant::now)), if save_at.is_some() => {
                    self.save_at = None;
                    self.dirty_since = None;
                    let bytes = store::encode(self.replica.table());
                    self.save_seq += 1;
                    let _ = self.saver.send(Some((self.save_seq, Arc::new(bytes))));
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
                        // An acknowledged write survives a crash right after.
                        self.save_now().await;
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
                let _ = reply.send(services_view::services(
                    self.replica.table(),
                    &self.members(),
                ));
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
            Cmd::Converged => {
                if !self.converged {
                    debug!(node = %self.me, "table caught up with a peer; claiming enabled");
                    self.converged = true;
                    self.reconcile_soon();
                }
            }
            Cmd::Drain(on, leaving, reply) => {
                // Leaving keeps an operator's drain as it was.
                let draining = if leaving { self.draining() } else { on };
                self.write_node_record(draining, leaving && on);
                self.broadcast_last().await;
                // An operator's drain must survive a crash right after it.
                self.save_now().await;
                match (on, leaving) {
                    (true, false) => info!(node = %self.me, "draining: slots move to other nodes"),
                    (false, _) => info!(node = %self.me, "drain undone: eligible again"),
                    (true, true) => {}
                }
                let _ = reply.send(());
            }
            Cmd::Owner(service, slot, reply) => {
                let owner = match self
                    .replica
                    .table()
                    .get(&claim_key(&service, slot))
                    .map(|r| &r.value)
                {
                    Some(Value::Claim(c)) => c.owner.clone(),
                    _ => None,
                };
                let _ = reply.send(owner);
            }
            Cmd::Shutdown(_) => {}
        }
    }

    async fn finish(&mut self, result: Result<(u64, Written), OpError>) -> Result<u64, OpError> {
        let (version, written) = result?;
        self.written(written).await;
        // An acknowledged write survives a crash right after.
        self.save_now().await;
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
            Ok(Delta(records)) => {
                self.handle
                    .stats
                    .deltas_received
                    .fetch_add(1, Ordering::Relaxed);
                self.merge(records);
            }
            Err(e) => {
                self.handle
                    .stats
                    .deltas_rejected
                    .fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "undecodable delta dropped");
            }
        }
    }

    fn members(&self) -> Members {
        Members::new(
            self.membership
                .members()
                .into_iter()
                .filter(|m| m.state.is_active())
                .map(|m| m.id.name),
        )
    }

    fn reconcile_soon(&mut self) {
        if self.reconcile_at.is_none() {
            self.reconcile_at = Some((self.last_reconcile + RECONCILE_MIN_GAP).max(Instant::now()));
        }
    }

    /// Writes one local record (no log, no broadcast).
    fn write_local(&mut self, key: String, value: Value) -> (String, Record) {
        let mut written = self.replica.write_record(key, value, now_ms());
        self.changed();
        written.records.remove(0)
    }

    /// Whether an operator drained this node.
    fn draining(&self) -> bool {
        matches!(self.replica.table().get(&node_key(&self.me)).map(|r| &r.value), Some(Value::Node(n)) if n.draining)
    }

    fn write_node_record(&mut self, draining: bool, leaving: bool) {
        let record = NodeRecord {
            addr: self.membership.local().addr.to_string(),
            providers: self.config.providers.clone(),
            tags: self.config.tags.clone(),
            draining,
            drain_started_ms: if draining || leaving { now_ms() } else { 0 },
            leaving,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: self.started_at_ms,
        };
        let me = self.me.clone();
        let written = self.write_local(node_key(&me), Value::Node(record));
        self.pending_deltas.push(written);
    }

    /// Sends the deltas written outside an operator's operation.
    async fn broadcast_last(&mut self) {
        let records = std::mem::take(&mut self.pending_deltas);
        self.written(Written {
            records,
            changes: Vec::new(),
        })
        .await;
    }

    async fn write_status(&mut self, update: StatusUpdate) {
        if !update.status.state.is_active() {
            self.stopping.remove(&(update.service.clone(), update.slot));
        }
        let key = status_key(&self.me, &update.service, update.slot);
        let written = self.write_local(key, Value::Status(update.status));
        self.pending_deltas.push(written);
        self.broadcast_last().await;
        self.reconcile_soon();
    }

    async fn reconcile(&mut self) {
        let members = self.members();
        // Alone for a while: nobody to catch up with.
        let grace = if self.config.has_seeds {
            ALONE_GRACE
        } else {
            Duration::ZERO
        };
        if !self.converged && self.started.elapsed() >= grace && members.names().count() <= 1 {
            self.converged = true;
        }
        // Another live member with this node's name: claims are by name,
        // so claim nothing until the operator resolves it (membership logs
        // an error).
        let local = self.membership.local().addr;
        let clash = self
            .membership
            .members()
            .iter()
            .any(|m| m.id.name == self.me && m.id.addr != local && m.state.is_active());
        let actions = reconcile(self.replica.table(), &members, &self.me, now_ms());
        for action in actions {
            if clash && matches!(action, Action::Claim { .. }) {
                continue;
            }
            self.execute(action);
        }
        self.broadcast_last().await;
    }

    fn execute(&mut self, action: Action) {
        let me = self.me.clone();
        // Until the table caught up with a peer, it may be stale: a
        // restarted agent must not restart or give away slots that were
        // taken over while it was gone, nor take slots back.
        if !self.converged
            && matches!(
                action,
                Action::Claim { .. } | Action::Start { .. } | Action::Release { .. }
            )
        {
            return;
        }
        match action {
            Action::Claim {
                service,
                slot,
                version,
                previous,
                failed_on,
            } => {
                let claim = Claim {
                    owner: Some(me.clone()),
                    failed_on,
                    version,
                };
                let written = self.write_local(claim_key(&service, slot), Value::Claim(claim));
                self.pending_deltas.push(written);
                match previous {
                    Some(from) => {
                        info!(service = %service, slot, node = %me, from = %from, reason = "previous owner down, left or ineligible", "slot moved")
                    }
                    None => {
                        info!(service = %service, slot, node = %me, reason = "unowned", "slot claimed")
                    }
                }
            }
            Action::Release {
                service,
                slot,
                version,
                failed_on,
                reason,
            } => {
                let claim = Claim {
                    owner: None,
                    failed_on,
                    version,
                };
                let written = self.write_local(claim_key(&service, slot), Value::Claim(claim));
                self.pending_deltas.push(written);
                info!(service = %service, slot, node = %me, reason = reason.as_str(), "slot released");
            }
            Action::Start {
                slot,
                version,
                spec,
            } => {
                // A stop sent earlier is over once a start is asked for.
                self.stopping.remove(&(spec.name.clone(), slot));
                let _ = self.supervisor.try_send(SupervisorCmd::Start {
                    spec: Box::new(spec),
                    slot,
                    version,
                });
            }
            Action::Stop {
                service,
                slot,
                reason,
            } => {
                if !self.stopping.insert((service.clone(), slot)) {
                    return;
                }
                if reason == Reason::OwnedElsewhere {
                    info!(service = %service, slot, node = %me, reason = reason.as_str(), "slot lost");
                }
                if self
                    .supervisor
                    .try_send(SupervisorCmd::Stop {
                        service: service.clone(),
                        slot,
                    })
                    .is_err()
                {
                    self.stopping.remove(&(service, slot));
                }
            }
            Action::ForgetStatus { key } => {
                let written = self.write_local(key, Value::Tombstone);
                self.pending_deltas.push(written);
            }
        }
    }

    fn merge(&mut self, mut records: Records) {
        let received = records.len();
        let now = now_ms();
        records.retain(|(key, record)| replica::is_well_formed(key, record, now));
        if records.len() < received {
            let dropped = received - records.len();
            self.handle
                .stats
                .records_rejected
                .fetch_add(dropped as u64, Ordering::Relaxed);
            debug!(records = dropped, "malformed records from a peer dropped");
        }
        // Old records new to this table may be ones it already forgot.
        let old = now.saturating_sub(self.config.gc_after_ms());
        let fresh_old: Vec<String> = records
            .iter()
            .filter(|(key, r)| r.ts.wall_ms < old && self.replica.table().get(key).is_none())
            .map(|(key, _)| key.clone())
            .collect();
        let (changed, changes) = self.replica.merge(records);
        if !fresh_old.is_empty() {
            let members = self.members();
            let refused = self
                .collector
                .refused(self.replica.table(), &members, &fresh_old, now);
            for key in &refused {
                self.replica.forget(key);
            }
        }
        for change in &changes {
            log_change(change);
        }
        if changed {
            self.changed();
        }
    }

    /// Forgets what is old enough to be garbage.
    fn collect_garbage(&mut self) {
        let members = self.members();
        let keys = self
            .collector
            .collect(self.replica.table(), &members, now_ms());
        if keys.is_empty() {
            return;
        }
        for key in &keys {
            self.replica.forget(key);
        }
        debug!(node = %self.me, records = keys.len(), "forgot old records");
        self.handle
            .stats
            .forgotten
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        self.changed();
    }

    fn changed(&mut self) {
        self.reconcile_soon();
        self.handle
            .stats
            .records
            .store(self.replica.table().len() as u64, Ordering::Relaxed);
        // Debounced, but a steady stream of changes can't postpone the save
        // for more than SAVE_MAX_DELAY.
        let now = Instant::now();
        let first = *self.dirty_since.get_or_insert(now);
        self.save_at = Some((now + SAVE_DEBOUNCE).min(first + SAVE_MAX_DELAY));
    }

    /// Saves the table now (through the one writer) and waits until it is
    /// on disk.
    async fn save_now(&mut self) {
        self.save_at = None;
        self.dirty_since = None;
        self.save_seq += 1;
        let seq = self.save_seq;
        let bytes = Arc::new(store::encode(self.replica.table()));
        if self.saver.send(Some((seq, bytes))).is_ok() {
            // A hung disk must not stall the table (reconcile, statuses,
            // anti-entropy): the write goes on in the background.
            let written = self.saved.wait_for(|written| *written >= seq);
            if tokio::time::timeout(SAVE_WAIT, written).await.is_err() {
                warn!(node = %self.me, "table file write is slow; answering before it is on disk");
            }
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
                    handle.converged().await;
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
                    if !crate::agent::is_rejected_frame(&e) {
                        debug!(peer = %peer, error = %e, "anti-entropy round failed");
                    }
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
