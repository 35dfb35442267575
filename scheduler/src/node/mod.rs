//! [`Node`]: every decision an agent takes about the table, as one pure
//! state machine. `handle(input, now) -> effects`: no I/O, no tokio, time
//! passed in. The agent's table task feeds it sockets, channels, timers
//! and file results, and carries out what it returns; the simulation
//! (`tests/sim.rs`) drives the very same type over a virtual network.
//!
//! # Rules
//! - **Operator writes** ([`Request`]) are planned by [`ops`], stamped by
//!   the node's clock, broadcast, saved at once, and answered once the save
//!   is done ([`saves`]).
//! - **Peers' records** are admitted ([`admission`]), merged, and what a
//!   merge brings back that garbage collection already forgot is forgotten
//!   again ([`collector`]).
//! - **Reconcile** decides only the slots a change touched ([`touched`]),
//!   with a full pass every [`FULL_PASS_MS`] as a safety net. It claims,
//!   starts and releases nothing until the table caught up with a peer
//!   (one anti-entropy round) and membership has shown it every node its
//!   table lists (or [`SETTLE_MS`] passed since it started), or the node
//!   has been alone for [`ALONE_GRACE_MS`] (at once without seeds): a
//!   restarted node must not act on a stale table, and a joining node must
//!   not take the slots of members it has not heard of yet for orphaned. It claims nothing while another live member has
//!   its name. A stop is sent once per slot until the instance reports it
//!   stopped (again after [`STOP_RESEND_MS`]).
//! - **Spreading**: the records written in one call go out as deltas, or,
//!   more than [`MAX_DELTAS`] of them, are pushed ([`Effect::Push`]: the
//!   records alone, one way) to [`WRITER_PEERS`] peers at once (every
//!   member of a small cluster).
//!   More than [`MAX_DELTAS`] records new to this node that came by
//!   anti-entropy are pushed on to [`BULK_PEERS`] random peers, once each
//!   (a node learns a record once), at most every
//!   [`FORWARD_GAP_MS`]: a bulk write reaches everyone in a few hops
//!   instead of waiting for the periodic rounds. Fewer are not forwarded
//!   (a round repaired a few lost deltas, which the peers' own rounds
//!   repair too: sending them to every member again costs each member a
//!   merge for nothing), nor are deltas (they went to every member).
//!   Anti-entropy runs with a random alive peer every
//!   `anti_entropy_period_ms` (±20 %), and with every newcomer. While
//!   nothing changes (no record written or merged, no member up or
//!   gone), each periodic round doubles the period, up to
//!   [`QUIET_SYNC_MS`]: in an idle cluster each round is a connection
//!   (set-up, sealing, a summary that matches) that finds nothing. The
//!   first change brings the period back.
//! - **Rebalancing**: a node over the load cap hands one running slot at a
//!   time to the least-loaded candidate under the cap (a node over the
//!   mean, to one under the floor), every `rebalance_interval_ms`,
//!   drain-style (it keeps its instance until the new owner's runs).
//! - **At-most-once slots** ([`crate::quorum`]): the node counts the alive
//!   members against the table's nodes, notes when it last saw a member
//!   go and which members that came up it has not caught up with yet;
//!   reconcile starts such a slot only with a majority, past the margin,
//!   caught up, and with a settled claim. Logged when the majority is lost
//!   or regained.
//!
//! # Layout
//! - [`input`]: [`Input`], [`Request`], [`Peer`], [`InstanceReport`].
//! - [`effect`]: [`Effect`], [`Reply`], [`Event`].
//! - [`ops`]: what `deploy`, `remove` and `scale` write.
//! - [`keyring`]: what `keys install|use|remove` write, and the keys an
//!   agent holds as those records arrive.
//! - [`admission`]: which records from peers are taken.
//! - [`collector`]: when garbage collection runs and who is gone.
//! - [`saves`]: save debouncing and answers waiting for saves.
//! - [`touched`]: the slots a change touched.
//! - `rebalance`: which slot a node over the load cap hands over.

pub mod admission;
pub mod collector;
pub mod effect;
pub mod input;
pub mod keyring;
pub mod ops;
mod rebalance;
pub mod saves;
pub mod touched;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

pub use effect::{Effect, Event, Reply};
pub use input::{Input, InstanceReport, Peer, PeerState, Request, RequestId, Source};
pub use ops::{ChangeKind, DeployKind, Deployed, OpError, ServiceChange};

use self::collector::Collector;
use self::saves::{Held, Saves};
use self::touched::Touched;
use crate::hlc::Clock;
use crate::key::{Key, KeyRef, Name};
use crate::placement::Members;
use crate::quorum::{Detection, Quorum, Reading};
use crate::reconcile::{Action, Reason, Scope, Unsettled, reconcile_scope};
use crate::record::{Claim, NodeRecord, Record, Records, Value};
use crate::spec::{Partition, ProviderKind};
use crate::table::Table;
use crate::table::WithPending;
use crate::update;

/// A write of more records than this skips the gossip deltas and is pushed
/// on streams instead, so bulk deploys don't flood the gossip queue.
pub const MAX_DELTAS: usize = 32;
/// Peers a node pushes records it learned by anti-entropy on to, at once
/// (each node does it once per record).
pub const BULK_PEERS: usize = 3;
/// Peers pushed to at once after a bulk write made here: every member of
/// a cluster up to this size, so that an operator's bulk deploy reaches
/// them in one hop (a few random ones, forwarding on, miss a node now
/// and then until the periodic round finds it); in a bigger cluster the
/// forwards carry it to the rest.
pub const WRITER_PEERS: usize = 32;
/// Shortest time between two pushes on of records learned by anti-entropy
/// (a round arrives in several chunks: they go on together).
pub const FORWARD_GAP_MS: u64 = 200;
/// Shortest time between two reconcile passes (changes in between batch up).
pub const RECONCILE_GAP_MS: u64 = 5;
/// A full reconcile pass at least this often, changes or not.
pub const FULL_PASS_MS: u64 = 5_000;
/// After a failed round, how long claims waiting to settle wait before
/// asking for it again.
pub const ROUND_RETRY_MS: u64 = 500;
/// A node with seeds but no peer after this long claims without waiting
/// for an anti-entropy round.
pub const ALONE_GRACE_MS: u64 = 3_000;
/// Longest a node that caught up waits, after its start, for membership to
/// show it every node its table lists (SWIM tells a joiner of the members
/// a few at a time; some of those nodes may be gone for good).
pub const SETTLE_MS: u64 = 3_000;
/// A stop not yet confirmed by the instance's report is sent again after
/// this long.
pub const STOP_RESEND_MS: u64 = 15_000;
/// The first anti-entropy round, this long after start.
const FIRST_SYNC_MS: u64 = 200;
/// Anti-entropy's longest period in a quiet cluster (Serf's push-pull
/// interval): each periodic round that follows no change to the table or
/// the members doubles the period up to this; a change brings it back to
/// `anti_entropy_period_ms`.
pub const QUIET_SYNC_MS: u64 = 30_000;
/// Operator writes that may wait behind one held for its save; more are
/// refused as busy.
pub const MAX_QUEUED: usize = 64;
/// While saves fail, at most one log line per this long.
pub const SAVE_FAILED_LOG_MS: u64 = 60_000;
/// Newcomer rounds this node runs at once.
pub const NEWCOMER_ROUNDS: usize = 3;

/// What a node is, and its tunables.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Node name, unique in the cluster.
    pub name: String,
    /// Gossip address this node advertises.
    pub addr: SocketAddr,
    /// Providers this node offers.
    pub providers: Vec<ProviderKind>,
    /// Tags for placement constraints.
    pub tags: BTreeMap<String, String>,
    /// mob version, written in the node record.
    pub version: String,
    /// Whether the node has seeds: then it waits to catch up with a peer
    /// before claiming.
    pub has_seeds: bool,
    /// Send local writes as gossip deltas; off, anti-entropy alone spreads
    /// them (for diagnosis).
    pub broadcast_deltas: bool,
    /// Period of anti-entropy with a random alive peer.
    pub anti_entropy_period_ms: u64,
    /// Age after which old deletions and the records of nodes gone for
    /// good are forgotten.
    pub gc_after_ms: u64,
    /// Seed of the node's random choices (peers, jitter).
    pub seed: u64,
    /// Pause between two slots this node hands over to even out the load.
    pub rebalance_interval_ms: u64,
    /// How fast membership notices a node is gone: the margin of
    /// at-most-once slots.
    pub detection: Detection,
    /// The keys the agent holds as it starts.
    pub keyring: keyring::Ring,
}

/// Counters of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Records in the table (tombstones included).
    pub records: u64,
    /// Records from peers dropped as malformed.
    pub records_rejected: u64,
    /// Records forgotten by garbage collection.
    pub forgotten: u64,
    /// Records a merge brought back that garbage collection had
    /// forgotten, forgotten again at once.
    pub refused: u64,
    /// Reconcile passes over every slot.
    pub full_passes: u64,
    /// Reconcile passes over the touched slots only.
    pub partial_passes: u64,
    /// Saves of the table that failed.
    pub save_failures: u64,
}

/// One agent's view of the cluster's table and what it does about it.
/// Deterministic: the same inputs at the same times give the same effects
/// (ordered maps only, a seeded random source).
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    /// This node's name, as keys hold it.
    me: crate::key::Name,
    table: Table,
    clock: Clock,
    started_ms: u64,
    /// Live members by name, this node included.
    members: Members,
    /// Alive peers (not this node): who anti-entropy picks from.
    peers: Vec<SocketAddr>,
    /// Identities of the active members: a new one gets a round at once.
    known: BTreeSet<(String, SocketAddr, u64)>,
    /// Alive peers' names (suspects not included): the majority of
    /// at-most-once slots counts them.
    alive: BTreeSet<String>,
    /// When this node last saw a member go (down or left).
    lost_at: u64,
    /// Members that came up (or back) and this node has not completed an
    /// anti-entropy round with since: at-most-once slots wait for them.
    unsynced: BTreeSet<SocketAddr>,
    /// Names membership has reported, in any state, until the gate opens.
    seen: BTreeSet<String>,
    /// An anti-entropy round this node began with a member completed.
    synced_once: bool,
    /// Newcomer rounds in flight: at most [`NEWCOMER_ROUNDS`], so a heal
    /// that brings back half the cluster starts a few rounds, not one per
    /// member; as one ends the next begins.
    syncing: BTreeSet<SocketAddr>,
    /// Newcomers whose round failed: the periodic round takes them, not
    /// an immediate retry.
    deferred: BTreeSet<SocketAddr>,
    /// When an at-most-once slot waiting for its margin may start.
    retry_at: Option<u64>,
    /// Anti-entropy rounds this node began, by member: at-most-once
    /// claims settle by them.
    rounds: BTreeMap<String, Rounds>,
    /// At-most-once slots whose claims wait to settle: decided again when
    /// a round completes.
    settling: BTreeSet<(Name, u32)>,
    /// The last failed update said per service (its instance version),
    /// so it is said once.
    failed_updates: BTreeMap<Name, u64>,
    /// Another live member has this node's name.
    clash: bool,
    /// The table caught up with a peer (claims wait for it).
    converged: bool,
    /// Slots a stop was sent for, and when, until they report stopped.
    stopping: BTreeMap<(String, u32), u64>,
    /// The version each slot was last asked to start with.
    starting: BTreeMap<(String, u32), u64>,
    touched: Touched,
    reconcile_at: Option<u64>,
    last_reconcile: u64,
    full_pass_at: u64,
    sync_at: u64,
    /// Periodic rounds since the table or the members last changed.
    quiet_rounds: u32,
    rebalance_at: u64,
    collector: Collector,
    saves: Saves,
    /// Records of the operator's write waiting for its save, by key:
    /// saved beside the table, not in it yet.
    pending: BTreeMap<Key, Arc<Record>>,
    /// Operator requests behind the held one: one write is planned at a
    /// time, against the table with every earlier write in it.
    queued: VecDeque<(RequestId, Request)>,
    /// See [`Input::ClockSkew`].
    clock_skew: Option<i64>,
    /// The keys the agent holds, as the table's key records say.
    ring: keyring::Ring,
    /// A key record changed during this call.
    keys_touched: bool,
    /// A node record changed during this call.
    nodes_touched: bool,
    /// The nodes whose record is a tombstone, as last told to the agent.
    forgotten: BTreeSet<String>,
    /// Saves failed since the last success, and when that was last logged.
    save_failures: u64,
    save_failure_logged: Option<u64>,
    /// Records written during this call, to spread at its end.
    outgoing: Records,
    /// Records new to this node that came by anti-entropy during this
    /// call, to forward at its end.
    forwarded: Records,
    /// When records were last forwarded by anti-entropy.
    forwarded_at: Option<u64>,
    /// Many records were learned since, and wait for the gap to pass:
    /// what the next chunks of a round bring must go on too.
    forward_waiting: bool,
    /// Records learned by anti-entropy that wait for the gap's end to be
    /// pushed on.
    forward_pending: Records,
    out: Vec<Effect>,
    rng: StdRng,
    stats: NodeStats,
}

impl Node {
    /// A node over `table` (loaded from disk, or empty), started at `now`.
    /// It writes its node record at once (an operator's drain outlives a
    /// restart); call [`Node::handle`] with [`Input::Tick`] to get the
    /// first effects.
    pub fn new(config: NodeConfig, mut table: Table, now: u64) -> Self {
        // Records stamped further ahead of the clock than peers accept
        // (written while this clock ran ahead, most likely) are dropped:
        // no peer whose clock is right takes them, and the hybrid clock
        // would follow them, so that every later write of this node was
        // refused too and the node stayed split after its clock was
        // fixed. Last-writer-wins stays safe: such a record reached no
        // peer that refuses it; a peer that does hold one sends it again
        // by anti-entropy, and it is taken once the clocks reach it.
        let ahead: Vec<Key> = table
            .iter()
            .filter(|(_, r)| r.ts.wall_ms > now.saturating_add(admission::MAX_CLOCK_AHEAD_MS))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &ahead {
            table.forget(key);
        }
        let mut clock = Clock::new(config.name.clone());
        for (_, record) in table.iter() {
            clock.observe(&record.ts);
        }
        let members = Members::new([config.name.clone()]);
        let mut node = Self {
            me: config.name.as_str().into(),
            collector: Collector::new(config.gc_after_ms, now),
            rng: StdRng::seed_from_u64(config.seed),
            clock,
            table,
            started_ms: now,
            members,
            peers: Vec::new(),
            known: BTreeSet::new(),
            alive: BTreeSet::new(),
            // A node that just started doesn't know who went lately.
            lost_at: now,
            unsynced: BTreeSet::new(),
            seen: BTreeSet::new(),
            synced_once: false,
            syncing: BTreeSet::new(),
            deferred: BTreeSet::new(),
            retry_at: None,
            rounds: BTreeMap::new(),
            settling: BTreeSet::new(),
            failed_updates: BTreeMap::new(),
            clash: false,
            converged: !config.has_seeds,
            stopping: BTreeMap::new(),
            starting: BTreeMap::new(),
            touched: Touched::default(),
            reconcile_at: Some(now),
            last_reconcile: now,
            full_pass_at: now,
            sync_at: now.saturating_add(FIRST_SYNC_MS),
            quiet_rounds: 0,
            rebalance_at: now.saturating_add(config.rebalance_interval_ms),
            saves: Saves::default(),
            pending: BTreeMap::new(),
            queued: VecDeque::new(),
            clock_skew: None,
            ring: config.keyring.clone(),
            keys_touched: true,
            nodes_touched: true,
            forgotten: BTreeSet::new(),
            save_failures: 0,
            save_failure_logged: None,
            outgoing: Vec::new(),
            forwarded: Vec::new(),
            forwarded_at: None,
            forward_waiting: false,
            forward_pending: Vec::new(),
            out: Vec::new(),
            stats: NodeStats::default(),
            config,
        };
        node.touched.everything();
        if !ahead.is_empty() {
            node.log(Event::FutureRecordsDropped { count: ahead.len() });
        }
        // The table may hold key records the keyring file missed (its
        // save failed, or it was restored from another agent).
        node.follow_keys(now);
        let draining = node
            .table
            .node(&node.config.name)
            .is_some_and(|n| n.draining);
        node.write_node_record(draining, false, now);
        node
    }

    /// Handles one input at `now` (unix ms) and returns what to do.
    pub fn handle(&mut self, input: Input, now: u64) -> Vec<Effect> {
        match input {
            Input::Request(id, request) => self.request(id, request, now),
            Input::Records(source, records) => self.merge(source, records, now),
            Input::Members(peers) => self.set_members(peers, now),
            Input::Instance(report) => {
                let key = (report.service.clone(), report.slot);
                if !report.status.state.is_active() {
                    self.stopping.remove(&key);
                }
                let mut status = report.status;
                if let Some((spec, _)) = self.table.live_service(&report.service) {
                    let previous = self.table.status(&self.config.name, &key.0, key.1);
                    status.proven = update::proven(spec, previous, &status, now);
                }
                let status_key = Key::Status(self.me.clone(), report.service.into(), report.slot);
                self.write(status_key, Value::Status(status), now);
            }
            Input::Tick => {}
            // Only a round with a member counts: an address membership
            // has not reported (a round served on a connection from an
            // unknown port) says nothing about whom this node caught up
            // with, and a node that opened its gate on one before it saw
            // any member would take every slot for orphaned.
            Input::Synced(peer) if !self.known.iter().any(|(_, addr, _)| *addr == peer) => {}
            Input::Synced(peer) => {
                if let Some(rounds) = self.rounds_with(peer) {
                    rounds.completed = rounds.completed.max(rounds.begun.take());
                }
                // A claim waiting for this round may have settled.
                for (service, slot) in std::mem::take(&mut self.settling) {
                    self.touched
                        .key(&Key::Claim(service, slot), &self.config.name);
                    self.reconcile_soon(now);
                }
                self.syncing.remove(&peer);
                self.deferred.remove(&peer);
                // Caught up with every newcomer: the next pass sees the
                // quorum change and decides every slot again.
                if self.unsynced.remove(&peer) && self.unsynced.is_empty() {
                    self.reconcile_soon(now);
                }
                self.sync_newcomers();
                self.synced_once = true;
                self.open_gate(now);
            }
            Input::ClockSkew(skew) => self.clock_skew = skew,
            Input::SyncFailed(peer) => {
                if let Some(rounds) = self.rounds_with(peer) {
                    rounds.begun = None;
                }
                // Claims waiting to settle ask for the round again, a
                // little later (a peer that refuses at once is not retried
                // in a loop).
                if !self.settling.is_empty() {
                    let at = now.saturating_add(ROUND_RETRY_MS);
                    self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
                }
                if self.syncing.remove(&peer) {
                    self.deferred.insert(peer);
                }
                self.sync_newcomers();
            }
            Input::Saved { seq, result } => self.saved(seq, result, now),
        }
        self.run_due(now);
        self.follow_keys(now);
        self.follow_nodes(now);
        self.flush(now);
        self.stats.records = self.table.len() as u64;
        std::mem::take(&mut self.out)
    }

    /// When [`Input::Tick`] is due next (unix ms).
    pub fn next_deadline(&self) -> u64 {
        let mut at = self
            .full_pass_at
            .min(self.sync_at)
            .min(self.rebalance_at)
            .min(self.collector.next_at);
        for r in [self.reconcile_at, self.retry_at].into_iter().flatten() {
            at = at.min(r);
        }
        if let Some(s) = self.saves.deadline() {
            at = at.min(s);
        }
        if self.forward_waiting
            && let Some(last) = self.forwarded_at
        {
            at = at.min(last.saturating_add(FORWARD_GAP_MS));
        }
        if !self.converged {
            let grace = if self.synced_once {
                SETTLE_MS
            } else {
                ALONE_GRACE_MS
            };
            at = at.min(self.started_ms.saturating_add(grace));
        }
        at
    }

    /// The table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The members this node believes live, itself included.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// The keys the agent holds (see [`keyring`]).
    pub fn ring(&self) -> &keyring::Ring {
        &self.ring
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the table caught up with a peer (claims are enabled).
    pub fn converged(&self) -> bool {
        self.converged
    }

    /// Whether this node would hand a slot over now to even out the load
    /// (it is over the cap, or over the mean while a node is under the
    /// floor): rebalancing has not settled.
    pub fn would_hand_over(&self) -> bool {
        self.converged
            && !self.clash
            && rebalance::pick(&self.table, &self.members, &self.config.name).is_some()
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    fn log(&mut self, event: Event) {
        self.out.push(Effect::Log(event));
    }

    fn reconcile_soon(&mut self, now: u64) {
        if self.reconcile_at.is_none() {
            self.reconcile_at = Some(
                self.last_reconcile
                    .saturating_add(RECONCILE_GAP_MS)
                    .max(now),
            );
        }
    }

    /// The table changed under `key`: decide its slots again, save soon.
    fn changed(&mut self, key: &Key, now: u64) {
        self.touched.key(key, &self.config.name);
        self.saves.changed(now);
        self.reconcile_soon(now);
        self.stir(now);
    }

    /// The table or the members changed: anti-entropy goes back to its
    /// base period (a peer may have missed the change, or lack it).
    fn stir(&mut self, now: u64) {
        if self.quiet_rounds == 0 {
            return;
        }
        self.quiet_rounds = 0;
        let soon = now.saturating_add(self.config.anti_entropy_period_ms);
        self.sync_at = self.sync_at.min(soon);
    }

    /// Writes one local record; it goes out at the end of the call.
    fn write(&mut self, key: Key, value: Value, now: u64) {
        let record = Arc::new(Record {
            ts: self.clock.tick(now),
            value,
        });
        if self.apply_local(key, record, now) {
            self.saves.changed(now);
        }
    }

    /// Applies a record written here; it goes out at the end of the call.
    /// Returns whether it changed the table.
    fn apply_local(&mut self, key: Key, record: Arc<Record>, now: u64) -> bool {
        let was_live =
            matches!(&key, Key::Service(name) if self.table.live_service(name).is_some());
        if !self.table.apply(key.clone(), record.clone()) {
            return false;
        }
        if let Some(change) = ops::service_change(was_live, &key, &record) {
            self.log(Event::Service(change));
        }
        self.touched.key(&key, &self.config.name);
        self.keys_touched |= matches!(key, Key::ClusterKey(_));
        self.nodes_touched |= matches!(key, Key::Node(_));
        self.reconcile_soon(now);
        self.stir(now);
        self.outgoing.push((key, record));
        true
    }

    /// After key records changed: the keys the agent holds follow them
    /// (an effect for the agent, and this node's record shows them).
    fn follow_keys(&mut self, now: u64) {
        if !std::mem::take(&mut self.keys_touched) {
            return;
        }
        let next = keyring::follow(&self.ring, &self.table);
        if next == self.ring {
            return;
        }
        self.ring = next;
        self.out.push(Effect::Keyring(self.ring.clone()));
        if let Some(mut record) = self.table.node(&self.config.name).cloned() {
            record.keys = self.ring.fingerprints();
            self.write(Key::Node(self.me.clone()), Value::Node(record), now);
        }
    }

    /// After node records changed: this node takes up what another node
    /// wrote under its name (an operator's `drain --node`, or a
    /// `force-leave` while it was cut off) by writing its record again,
    /// and the agent learns who is forgotten.
    fn follow_nodes(&mut self, now: u64) {
        if !std::mem::take(&mut self.nodes_touched) {
            return;
        }
        let foreign = self
            .table
            .get_ref(KeyRef::Node(&self.config.name))
            .filter(|record| record.ts.node != *self.config.name)
            .map(|record| match &record.value {
                Value::Node(n) => Some((n.draining, n.leaving)),
                _ => None,
            });
        match foreign {
            Some(Some((draining, leaving))) => {
                self.log(if draining {
                    Event::Draining
                } else {
                    Event::DrainUndone
                });
                self.write_node_record(draining, leaving, now);
            }
            // Forgotten while alive: this node is not gone.
            Some(None) => self.write_node_record(false, false, now),
            None => {}
        }
        let forgotten: BTreeSet<String> = self.table.forgotten_nodes().map(str::to_owned).collect();
        if forgotten != self.forgotten {
            self.forgotten = forgotten.clone();
            self.out.push(Effect::Forgotten(forgotten));
        }
    }

    /// What a save writes: the table, and the held write beside it.
    pub fn to_save(&self) -> WithPending<'_> {
        WithPending {
            table: &self.table,
            pending: &self.pending,
        }
    }

    fn write_claim(
        &mut self,
        service: &str,
        slot: u32,
        owner: Option<String>,
        failed_on: Vec<String>,
        version: u64,
        now: u64,
    ) {
        let claim = Claim {
            owner,
            failed_on,
            version,
        };
        self.write(Key::Claim(service.into(), slot), Value::Claim(claim), now);
    }

    fn write_node_record(&mut self, draining: bool, leaving: bool, now: u64) {
        let record = self.node_record(draining, leaving, now);
        self.write(Key::Node(self.me.clone()), record, now);
    }

    fn node_record(&self, draining: bool, leaving: bool, now: u64) -> Value {
        Value::Node(NodeRecord {
            addr: self.config.addr.to_string(),
            providers: self.config.providers.clone(),
            tags: self.config.tags.clone(),
            draining,
            drain_started_ms: if draining || leaving { now } else { 0 },
            leaving,
            version: self.config.version.clone(),
            started_at_ms: self.started_ms,
            keys: self.ring.fingerprints(),
        })
    }

    fn request(&mut self, id: RequestId, request: Request, now: u64) {
        let refused = match self.clock_skew {
            Some(skew) if !matches!(request, Request::Leave) => Some(OpError::ClockSkew(skew)),
            _ if self.saves.holding() && self.queued.len() >= MAX_QUEUED => {
                Some(OpError::Busy(self.queued.len()))
            }
            _ => None,
        };
        if let Some(error) = refused {
            let reply = match request {
                Request::Deploy(_) => Reply::Deployed(Err(error)),
                Request::Remove(_)
                | Request::Scale(..)
                | Request::Stop(_)
                | Request::Start(_)
                | Request::Restart(..)
                | Request::Rollback(..) => Reply::Written(Err(error)),
                Request::Drain(_)
                | Request::DrainNode(..)
                | Request::ForceLeave(_)
                | Request::Leave
                | Request::KeyInstall(_)
                | Request::KeyUse(_)
                | Request::KeyRemove(_) => Reply::Done(Err(error)),
            };
            self.out.push(Effect::Reply(id, reply));
        } else if self.saves.holding() {
            self.queued.push_back((id, request));
        } else {
            self.begin(id, request, now);
        }
    }

    /// Plans an operator's write and holds it for its save.
    fn begin(&mut self, id: RequestId, request: Request, now: u64) {
        let me = Key::Node(self.me.clone());
        let writer = ops::Writer {
            origin: &self.config.name,
            now,
        };
        let written = |planned: Result<(u64, Vec<ops::Write>), OpError>| {
            planned
                .map(|(version, writes)| (Reply::Written(Ok(version)), writes, Vec::new()))
                .map_err(|e| Reply::Written(Err(e)))
        };
        let request = match request {
            Request::DrainNode(node, on) if node == self.config.name => Request::Drain(on),
            other => other,
        };
        let table = &self.table;
        // A refused write writes nothing and is answered at once.
        let planned = match request {
            Request::Deploy(specs) => ops::deploy(table, specs, writer)
                .map(|(outcomes, writes)| (Reply::Deployed(Ok(outcomes)), writes, Vec::new()))
                .map_err(|e| Reply::Deployed(Err(e))),
            Request::Remove(name) => written(ops::remove(table, &name, writer)),
            Request::Scale(name, replicas) => written(ops::scale(table, &name, replicas, writer)),
            Request::Stop(name) => written(ops::set_running(table, &name, false, writer)),
            Request::Start(name) => written(ops::set_running(table, &name, true, writer)),
            Request::Restart(name, slot) => written(ops::restart(table, &name, slot, writer)),
            Request::Rollback(name, to) => written(ops::rollback(table, &name, to, writer)),
            Request::Drain(on) => {
                let event = if on {
                    Event::Draining
                } else {
                    Event::DrainUndone
                };
                let record = self.node_record(on, false, now);
                Ok((Reply::Done(Ok(())), vec![(me, record)], vec![event]))
            }
            Request::DrainNode(node, on) => ops::drain_node(table, &node, on, now)
                .map(|writes| {
                    let event = Event::DrainRequested { node, on };
                    (Reply::Done(Ok(())), writes, vec![event])
                })
                .map_err(|e| Reply::Done(Err(e))),
            Request::ForceLeave(node) => {
                ops::force_leave(table, &self.members, &self.config.name, &node)
                    .map(|writes| {
                        let event = Event::NodeForgotten { node };
                        (Reply::Done(Ok(())), writes, vec![event])
                    })
                    .map_err(|e| Reply::Done(Err(e)))
            }
            Request::KeyInstall(key) => keyring::install(&self.ring, &self.table, key)
                .map(|writes| (Reply::Done(Ok(())), writes, Vec::new()))
                .map_err(|e| Reply::Done(Err(e))),
            Request::KeyUse(fingerprint) => keyring::use_key(&self.ring, &self.table, &fingerprint)
                .map(|writes| (Reply::Done(Ok(())), writes, Vec::new()))
                .map_err(|e| Reply::Done(Err(e))),
            Request::KeyRemove(fingerprint) => {
                let mut alive = self.alive.clone();
                alive.insert(self.config.name.clone());
                keyring::remove(&self.ring, &self.table, &fingerprint, &alive)
                    .map(|writes| (Reply::Done(Ok(())), writes, Vec::new()))
                    .map_err(|e| Reply::Done(Err(e)))
            }
            Request::Leave => {
                // Leaving keeps an operator's drain as it was.
                let draining = self
                    .table
                    .node(&self.config.name)
                    .is_some_and(|n| n.draining);
                let record = self.node_record(draining, true, now);
                Ok((Reply::Done(Ok(())), vec![(me, record)], Vec::new()))
            }
        };
        let (reply, writes, events) = match planned {
            Ok(planned) => planned,
            Err(refused) => {
                self.out.push(Effect::Reply(id, refused));
                return;
            }
        };
        if writes.is_empty() {
            self.out.push(Effect::Reply(id, reply));
            return;
        }
        let records: Records = writes
            .into_iter()
            .map(|(key, value)| {
                let ts = self.clock.tick(now);
                (key, Arc::new(Record { ts, value }))
            })
            .collect();
        // Saved first, applied and answered once on disk.
        let seq = self.saves.save_now();
        let held = Held {
            reply,
            records,
            events,
        };
        self.saves.hold(id, seq, held, now);
        self.pending = self.saves.held_records().cloned().collect();
        self.out.push(Effect::Save { seq });
    }

    /// A save finished: applies (or drops) the writes it held, answers
    /// them, and begins the next queued request.
    fn saved(&mut self, seq: u64, result: Result<(), String>, now: u64) {
        let released = self.saves.done(seq);
        match result {
            Ok(()) => {
                if self.save_failures > 0 {
                    self.log(Event::SaveRecovered {
                        failures: self.save_failures,
                    });
                    self.save_failures = 0;
                    self.save_failure_logged = None;
                }
                for (id, held) in released {
                    for (key, record) in held.records {
                        self.apply_local(key, record, now);
                    }
                    for event in held.events {
                        self.log(event);
                    }
                    self.out.push(Effect::Reply(id, held.reply));
                }
            }
            Err(error) => {
                self.save_failures += 1;
                self.stats.save_failures += 1;
                let due = self
                    .save_failure_logged
                    .is_none_or(|at| now.saturating_sub(at) >= SAVE_FAILED_LOG_MS);
                if due {
                    self.save_failure_logged = Some(now);
                    self.log(Event::SaveFailed {
                        error: error.clone(),
                        failures: self.save_failures,
                    });
                }
                self.saves.retry(now);
                for (id, held) in released {
                    let refused = held.reply.refused(OpError::NotSaved(error.clone()));
                    self.out.push(Effect::Reply(id, refused));
                }
            }
        }
        self.next_request(now);
    }

    /// After held writes were released: keeps the save's pending records
    /// to those still held, then begins the next queued request.
    fn next_request(&mut self, now: u64) {
        self.pending = self.saves.held_records().cloned().collect();
        while !self.saves.holding() {
            let Some((id, request)) = self.queued.pop_front() else {
                break;
            };
            self.begin(id, request, now);
        }
    }

    fn merge(&mut self, source: Source, records: Records, now: u64) {
        // (Only records that would win are checked: a refused one changes
        // nothing, and copies of what the table holds are most of a merge.)
        let (merged, rejected) = self
            .table
            .merge_admitted(records, |key, record| admission::admits(key, record, now));
        if rejected > 0 {
            self.stats.records_rejected += rejected as u64;
            self.log(Event::RecordsRejected { count: rejected });
        }
        // Old records new to this table may be ones it already forgot.
        let old = now.saturating_sub(self.collector.max_age_ms());
        for merged in &merged {
            self.clock.observe(&merged.record.ts);
        }
        let mut fresh_old = Vec::new();
        for merged in merged {
            if merged.record.ts.wall_ms < old && !merged.existed {
                fresh_old.push(merged.key.clone());
            }
            if let Some(change) =
                ops::service_change(merged.was_live_service, &merged.key, &merged.record)
            {
                self.log(Event::Service(change));
            }
            if let Value::Claim(Claim {
                owner: Some(owner), ..
            }) = &merged.record.value
            {
                self.touched.claims_of(owner);
            }
            self.keys_touched |= matches!(merged.key, Key::ClusterKey(_));
            self.nodes_touched |= matches!(merged.key, Key::Node(_));
            self.changed(&merged.key, now);
            if source == Source::AntiEntropy {
                self.forwarded.push((merged.key, merged.record));
            }
        }
        if !fresh_old.is_empty() {
            for key in self
                .collector
                .refused(&self.table, &self.members, &fresh_old, now)
            {
                self.table.forget(&key);
                self.forwarded.retain(|(k, _)| *k != key);
                self.stats.refused += 1;
            }
        }
    }

    fn set_members(&mut self, peers: Vec<Peer>, now: u64) {
        if !self.converged {
            self.seen.extend(peers.iter().map(|p| p.name.clone()));
        }
        let me = &self.config.name;
        let mut members = Members::new(
            peers
                .iter()
                .filter(|p| p.state.is_active())
                .map(|p| p.name.clone())
                .chain([me.clone()]),
        )
        .with_gone(
            peers
                .iter()
                .filter(|p| !p.state.is_active() && p.name != *me)
                .map(|p| p.name.clone()),
        );
        // The quorum is recomputed by the next pass.
        members.set_quorum(*self.members.quorum());
        let clash = peers
            .iter()
            .any(|p| p.name == *me && p.addr != self.config.addr && p.state.is_active());
        let alive: BTreeSet<String> = peers
            .iter()
            .filter(|p| p.state == PeerState::Alive && p.name != *me)
            .map(|p| p.name.clone())
            .collect();
        if self.members.names().any(|n| !members.is_live(n)) {
            self.lost_at = now;
        }
        if alive != self.alive {
            self.alive = alive;
            self.reconcile_soon(now);
            self.stir(now);
        }
        let known: BTreeSet<_> = peers
            .iter()
            .filter(|p| p.state.is_active() && p.addr != self.config.addr)
            .map(|p| (p.name.clone(), p.addr, p.incarnation))
            .collect();
        // A member that just came up gets a round soon (a few at a time).
        let newcomers: Vec<SocketAddr> = known
            .iter()
            .filter(|id| !self.known.contains(*id))
            .map(|(_, addr, _)| *addr)
            .collect();
        for peer in newcomers {
            self.unsynced.insert(peer);
            self.deferred.remove(&peer);
        }
        self.known = known;
        let active: BTreeSet<SocketAddr> = self.known.iter().map(|(_, a, _)| *a).collect();
        self.unsynced.retain(|a| active.contains(a));
        self.syncing.retain(|a| active.contains(a));
        // Rounds with a member that went must be had again once it is back.
        if !self.rounds.is_empty() {
            let names: BTreeSet<&str> = self.known.iter().map(|(n, ..)| n.as_str()).collect();
            self.rounds.retain(|name, _| names.contains(name.as_str()));
        }
        self.deferred.retain(|a| active.contains(a));
        self.sync_newcomers();
        self.peers = peers
            .iter()
            .filter(|p| p.state == PeerState::Alive && p.addr != self.config.addr)
            .map(|p| p.addr)
            .collect();
        if members != self.members || clash != self.clash {
            self.members = members;
            self.clash = clash;
            self.collector.saw(&self.members, now);
            self.touched.everything();
            self.reconcile_soon(now);
            self.stir(now);
        }
    }

    /// Opens the gate once the table caught up with a member and
    /// membership has shown every node the table lists (or it had the
    /// time to).
    fn open_gate(&mut self, now: u64) {
        if self.converged || !self.synced_once {
            return;
        }
        let settled = now.saturating_sub(self.started_ms) >= SETTLE_MS;
        let all_seen = || {
            self.table
                .nodes()
                .all(|(name, n)| n.leaving || name == self.config.name || self.seen.contains(name))
        };
        if settled || all_seen() {
            self.seen.clear();
            self.converged = true;
            self.touched.everything();
            self.reconcile_soon(now);
            self.log(Event::CaughtUp);
        }
    }

    /// Up to `n` distinct alive peers, at random.
    fn random_peers(&mut self, n: usize) -> Vec<SocketAddr> {
        let mut peers = self.peers.clone();
        let mut picked = Vec::with_capacity(n.min(peers.len()));
        while picked.len() < n && !peers.is_empty() {
            let i = self.rng.random_range(0..peers.len());
            picked.push(peers.swap_remove(i));
        }
        picked
    }

    /// Does what is due at `now`.
    fn run_due(&mut self, now: u64) {
        if !self.converged
            && now.saturating_sub(self.started_ms) >= ALONE_GRACE_MS
            && self.members.names().count() <= 1
        {
            // Alone for a while: nobody to catch up with.
            self.converged = true;
            self.touched.everything();
            self.reconcile_soon(now);
        }
        self.open_gate(now);
        if now >= self.full_pass_at || self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.touched.everything();
            self.reconcile_soon(now);
        }
        if self.reconcile_at.is_some_and(|at| at <= now) {
            self.reconcile(now);
        }
        if now >= self.sync_at {
            let jitter = self.rng.random_range(0.8..1.2);
            let base = self.config.anti_entropy_period_ms;
            let quiet = base
                .saturating_mul(1 << self.quiet_rounds.min(16))
                .min(QUIET_SYNC_MS.max(base));
            let period = quiet as f64 * jitter;
            self.sync_at = now.saturating_add(period as u64);
            self.quiet_rounds = self.quiet_rounds.saturating_add(1);
            // A member not caught up with yet goes first (its newcomer
            // round may have failed).
            let peer = if self.unsynced.is_empty() {
                self.random_peers(1).pop()
            } else {
                let i = self.rng.random_range(0..self.unsynced.len());
                self.unsynced.iter().nth(i).copied()
            };
            if let Some(peer) = peer {
                self.begin_round(peer);
            }
        }
        if now >= self.rebalance_at {
            self.rebalance_at = now.saturating_add(self.config.rebalance_interval_ms.max(1));
            self.rebalance(now);
        }
        if now >= self.collector.next_at {
            let keys = self.collector.collect(&self.table, &self.members, now);
            if !keys.is_empty() {
                for key in &keys {
                    self.table.forget(key);
                    self.changed(key, now);
                }
                self.stats.forgotten += keys.len() as u64;
                self.log(Event::Forgot { count: keys.len() });
            }
        }
        if let Some(seq) = self.saves.take_due(now) {
            self.out.push(Effect::Save { seq });
        }
        let overdue = self.saves.overdue(now);
        if !overdue.is_empty() {
            self.log(Event::SaveSlow);
            // (If that save ends well after all, the next one takes the
            // dropped write off the disk again.)
            self.saves.changed(now);
            for (id, held) in overdue {
                let refused = held.reply.refused(OpError::NotSaved(format!(
                    "the disk did not answer within {} s",
                    saves::WAIT_MS / 1000
                )));
                self.out.push(Effect::Reply(id, refused));
            }
            self.next_request(now);
        }
    }

    /// Hands one slot over if this node is over the load cap.
    fn rebalance(&mut self, now: u64) {
        if !self.converged || self.clash {
            return;
        }
        let Some(h) = rebalance::pick(&self.table, &self.members, &self.config.name) else {
            return;
        };
        self.write_claim(
            &h.service,
            h.slot,
            Some(h.to.clone()),
            h.failed_on,
            h.version,
            now,
        );
        self.log(Event::SlotHandedOver {
            service: h.service,
            slot: h.slot,
            to: h.to,
        });
    }

    /// What this node knows of the majority now.
    fn quorum(&self) -> Quorum {
        let me = &self.config.name;
        let (mut nodes, mut alive) = (0, 0);
        for (name, _) in self.table.nodes().filter(|(_, r)| !r.leaving) {
            nodes += 1;
            if name == me || self.alive.contains(name) {
                alive += 1;
            }
        }
        // The oldest of the live members' last completed rounds' beginnings.
        let mut settled_before = (u64::MAX, u32::MAX);
        for name in self.members.names().filter(|n| n != me) {
            let completed = self.rounds.get(name).and_then(|r| r.completed);
            settled_before = settled_before.min(completed.unwrap_or((0, 0)));
        }
        Quorum::new(
            nodes,
            alive,
            self.unsynced.is_empty(),
            self.lost_at,
            settled_before,
            &self.config.detection,
        )
    }

    fn reconcile(&mut self, now: u64) {
        // A slot this node just claimed starts in the next pass (the
        // claim is in the table then): that pass runs at once, not after
        // the gap that batches changes from peers.
        if self.pass(now, false) {
            self.pass(now, true);
        }
    }

    /// One reconcile pass (`follow_up`: right after one in this call);
    /// returns whether it wrote claims of this node.
    fn pass(&mut self, now: u64, follow_up: bool) -> bool {
        self.reconcile_at = None;
        self.last_reconcile = now;
        let quorum = self.quorum();
        let was = self.members.quorum();
        if quorum.caught_up() != was.caught_up() || quorum.majority() != was.majority() {
            // Only at-most-once slots read the quorum.
            let once = self.touched.at_most_once(&self.table);
            if once && quorum.majority() != was.majority() {
                self.log(if quorum.majority() {
                    Event::MajorityRegained
                } else {
                    Event::MajorityLost
                });
            }
        }
        self.members.set_quorum(quorum);
        if self.touched.is_empty() {
            return false;
        }
        let me = self.config.name.clone();
        let pass = match self.touched.take(&self.table, &me) {
            None => {
                self.full_pass_at = now.saturating_add(FULL_PASS_MS);
                self.stats.full_passes += 1;
                // A full pass asks again for every start: the safety net
                // for a start the supervisor never got (not one asked
                // for a moment ago, in this call).
                if !follow_up {
                    self.starting.clear();
                }
                reconcile_scope(&self.table, &self.members, &me, now, Scope::All)
            }
            Some(slots) => {
                self.stats.partial_passes += 1;
                reconcile_scope(&self.table, &self.members, &me, now, Scope::Slots(&slots))
            }
        };
        for waiting in pass.waiting {
            self.touched.wait(waiting);
        }
        self.settle(pass.unsettled);
        if let Some(at) = pass.retry_at {
            self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
        }
        let outgoing = self.outgoing.len();
        for action in pass.actions {
            self.execute(action, now);
        }
        let me = &self.config.name;
        self.outgoing.iter().skip(outgoing).any(|(key, record)| {
            matches!(key, Key::Claim(..))
                && matches!(&record.value, Value::Claim(c) if c.owner.as_deref() == Some(me.as_str()))
        })
    }

    fn execute(&mut self, action: Action, now: u64) {
        // Until the table caught up with a peer, it may be stale: a
        // restarted node must not restart or give away slots that were
        // taken over while it was gone, nor take slots back.
        let gated = matches!(
            action,
            Action::Claim { .. } | Action::Start { .. } | Action::Release { .. }
        );
        if gated && !self.converged {
            return;
        }
        let me = self.config.name.clone();
        match action {
            Action::Claim {
                service,
                slot,
                version,
                previous,
                failed_on,
            } => {
                // Claims are by name: with another live member of this
                // name, claim nothing until an operator resolves it.
                if self.clash {
                    return;
                }
                self.write_claim(&service, slot, Some(me), failed_on, version, now);
                self.log(match previous {
                    Some(from) => Event::SlotMoved {
                        service,
                        slot,
                        from,
                    },
                    None => Event::SlotClaimed { service, slot },
                });
            }
            Action::Release {
                service,
                slot,
                version,
                failed_on,
                reason,
            } => {
                self.write_claim(&service, slot, None, failed_on, version, now);
                self.log(Event::SlotReleased {
                    service,
                    slot,
                    reason,
                });
            }
            Action::Start {
                service,
                slot,
                version,
                update,
            } => {
                let key = (service, slot);
                // A stop sent earlier is over once a start is asked for.
                self.stopping.remove(&key);
                if self.starting.get(&key) == Some(&version) {
                    return;
                }
                let Some((spec, _)) = self.table.live_service(&key.0) else {
                    return;
                };
                // Another live member with this name may run it already.
                if self.clash && spec.partition == Partition::AtMostOnce {
                    return;
                }
                let spec = Box::new(spec.clone());
                if update {
                    self.log(Event::UpdateProgressed {
                        service: key.0.clone(),
                        version,
                        slot,
                    });
                }
                self.starting.insert(key, version);
                self.out.push(Effect::Start {
                    spec,
                    slot,
                    version,
                });
            }
            Action::Stop {
                service,
                slot,
                reason,
            } => {
                let key = (service.clone(), slot);
                self.starting.remove(&key);
                if self
                    .stopping
                    .get(&key)
                    .is_some_and(|at| now.saturating_sub(*at) < STOP_RESEND_MS)
                {
                    return;
                }
                self.stopping.insert(key, now);
                if reason == Reason::OwnedElsewhere {
                    self.log(Event::SlotLost {
                        service: service.clone(),
                        slot,
                    });
                }
                self.out.push(Effect::Stop { service, slot });
            }
            Action::ForgetStatus { key } => self.write(key, Value::Tombstone, now),
            Action::UpdateFailed {
                service,
                slot,
                since,
                why,
            } => self.update_failed(service, slot, since, why, now),
        }
    }

    /// This node's instance of a slot failed the update to instance version
    /// `since`: said once per update, and with `auto_revert`, the last
    /// healthy version written back.
    fn update_failed(&mut self, service: String, slot: u32, since: u64, why: String, now: u64) {
        let Some(record) = self.table.service(&service) else {
            return;
        };
        if self.failed_updates.get(service.as_str()) == Some(&since) {
            return;
        }
        let (version, auto_revert) = (
            record.version,
            record.spec.as_ref().is_some_and(|s| s.update.auto_revert),
        );
        self.failed_updates.insert(service.as_str().into(), since);
        self.log(Event::UpdateFailed {
            service: service.clone(),
            version,
            slot,
            why,
        });
        if !auto_revert {
            return;
        }
        let writer = ops::Writer {
            origin: &self.config.name,
            now,
        };
        let Some((written, to, writes)) = ops::revert(&self.table, &service, since, writer) else {
            return;
        };
        for (key, value) in writes {
            self.write(key, value, now);
        }
        self.log(Event::UpdateReverted {
            service,
            version: written,
            failed: version,
            to,
            slot,
        });
    }

    /// Spreads what this call wrote, and forwards what it learned by
    /// anti-entropy.
    fn flush(&mut self, now: u64) {
        let written = std::mem::take(&mut self.outgoing);
        let forwarded = std::mem::take(&mut self.forwarded);
        if !self.config.broadcast_deltas {
            return;
        }
        if written.len() > MAX_DELTAS {
            // (Every member gets it when there are few enough.)
            let forward = self.peers.len() > WRITER_PEERS;
            self.push(WRITER_PEERS, written, forward);
        } else if !written.is_empty() {
            self.out.push(Effect::Broadcast(written));
        }
        if forwarded.len() > MAX_DELTAS || self.forward_waiting {
            self.forward_pending.extend(forwarded);
            let due = self
                .forwarded_at
                .is_none_or(|at| now.saturating_sub(at) >= FORWARD_GAP_MS);
            if due {
                self.forwarded_at = Some(now);
                self.forward_waiting = false;
                let records = std::mem::take(&mut self.forward_pending);
                self.push(BULK_PEERS, records, true);
            } else {
                // (Pushed at the gap's end, with whatever else is new by
                // then.)
                self.forward_waiting = true;
            }
        }
    }

    /// Begins rounds with newcomers not caught up with yet, up to
    /// [`NEWCOMER_ROUNDS`] in flight.
    fn sync_newcomers(&mut self) {
        let mut free = NEWCOMER_ROUNDS.saturating_sub(self.syncing.len());
        let mut waiting: Vec<SocketAddr> = self
            .unsynced
            .iter()
            .filter(|a| !self.syncing.contains(*a) && !self.deferred.contains(*a))
            .copied()
            .collect();
        // At random, so that the members of one side of a heal don't all
        // begin with the same few of the other.
        while free > 0 && !waiting.is_empty() {
            free -= 1;
            let peer = waiting.swap_remove(self.rng.random_range(0..waiting.len()));
            self.syncing.insert(peer);
            self.begin_round(peer);
        }
    }

    /// Pushes `records` to `n` random peers at once.
    fn push(&mut self, n: usize, records: Records, forward: bool) {
        for peer in self.random_peers(n) {
            let records = records.clone();
            self.out.push(Effect::Push {
                peer,
                records,
                forward,
            });
        }
    }

    /// Begins an anti-entropy round with `peer`, noting when (a reading
    /// of the clock after every record written or received so far).
    fn begin_round(&mut self, peer: SocketAddr) {
        let reading = self.clock.tick(0);
        if let Some(rounds) = self.rounds_with(peer) {
            // (With one in flight already, the older beginning is what a
            // completion can vouch for.)
            rounds
                .begun
                .get_or_insert((reading.wall_ms, reading.counter));
        }
        self.out.push(Effect::Sync(peer));
    }

    /// The rounds with the member at `peer`.
    fn rounds_with(&mut self, peer: SocketAddr) -> Option<&mut Rounds> {
        let name = self
            .known
            .iter()
            .find(|(_, addr, _)| *addr == peer)?
            .0
            .clone();
        Some(self.rounds.entry(name).or_default())
    }

    /// At-most-once claims not settled: begins a round with each live
    /// member no round begun after the newest of them completed with (and
    /// none is in flight with), and decides them again when one completes.
    fn settle(&mut self, unsettled: Vec<Unsettled>) {
        let Some(newest) = unsettled.iter().map(|u| u.claimed).max() else {
            return;
        };
        self.settling
            .extend(unsettled.into_iter().map(|u| (u.service, u.slot)));
        let me = &self.config.name;
        let lacking: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(name, ..)| name != me && self.members.is_live(name))
            .filter(|(name, ..)| {
                self.rounds
                    .get(name)
                    .is_none_or(|r| r.begun.is_none() && r.completed.is_none_or(|c| c <= newest))
            })
            .map(|(_, addr, _)| *addr)
            .collect();
        for peer in lacking {
            self.begin_round(peer);
        }
    }
}

/// This node's anti-entropy rounds with one member, as clock readings.
#[derive(Debug, Clone, Copy, Default)]
struct Rounds {
    /// When the one in flight began.
    begun: Option<Reading>,
    /// When the last completed one began.
    completed: Option<Reading>,
}

#[cfg(test)]
mod tests;
