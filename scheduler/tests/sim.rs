//! Deterministic simulation of the real node core: N virtual hosts each
//! run a `mob_scheduler::Node` (the same type the agent runs) over a
//! virtual network with loss, delay and partitions, a supervisor model
//! (instances start after a delay, crash and restart, fail for good, stop
//! after a delay), node crashes and restarts from the table they last saved, and
//! a name clash. Virtual time: one tick is 100 ms.
//!
//! Scenario: a bulk deploy from one node, then three times: a partition
//! with deploys and removes on its sides, instance crashes, a node crash,
//! its restart from its saved table, a heal. After each heal the
//! simulation runs until the invariants hold (or fails after a round
//! limit), then checks that they keep holding through a quiet period:
//! - nothing is lost: every node's table holds every live service;
//! - every slot of every live service is owned by exactly one live,
//!   eligible node (all agree), and runs there;
//! - no node runs an instance it doesn't own;
//! - every live node runs its slot of every every-node service.
//!
//! Checked all along:
//! - an at-most-once slot never has two instances at once;
//! - a restarted node with its stale table starts and claims nothing
//!   before its first anti-entropy round;
//! - two live nodes with one name claim nothing;
//! - a record garbage collection forgot never comes back through a merge
//!   (and the knob had an effect: peers did send some back);
//! - the bulk deploy reaches every node.
//!
//! CI runs 200 seeds at 20 nodes x 200 services. `MOB_SIM_NODES`,
//! `MOB_SIM_SERVICES`, `MOB_SIM_SEEDS` and `MOB_SIM_ROUNDS` size other
//! runs; the large one is `#[ignore]`d (see README).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use mob_scheduler::node::{
    Effect, Input, InstanceReport, NodeConfig, OpError, Peer, PeerState, Reply, Request, Source,
};
use mob_scheduler::placement::{LOAD_FACTOR, fits};
use mob_scheduler::quorum::Detection;
use mob_scheduler::record::{InstanceState, Status, Value};
use mob_scheduler::spec::{EVERY_NODE_SLOT, Partition, ProviderKind, ServiceSpec};
use mob_scheduler::spec_file::parse_specs;
use mob_scheduler::{Key, Node, Records, Table};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

const TICK_MS: u64 = 100;
/// GC age: short, so removed services are forgotten within a run.
const GC_AFTER_MS: u64 = 20_000;
/// Anti-entropy period.
const AE_PERIOD_MS: u64 = 2_000;
/// Pause between handovers: shorter than the agent's 2 s, so that a node
/// a partition left with many slots sheds them within a convergence's
/// round limit.
const REBALANCE_MS: u64 = 100;

/// An instance in the supervisor model.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    version: u64,
    /// What it runs: a start of a spec that is not the same instance
    /// replaces it.
    spec: Box<ServiceSpec>,
    running: bool,
    /// Ended for good; a start of the same version doesn't revive it.
    failed: bool,
    /// When this instance spec first started (the status's `started_ms`).
    started_ms: u64,
    /// Stopped to run a new instance spec, and not up again yet: down for
    /// a rolling update.
    replacing: bool,
}

struct Host {
    name: String,
    addr: SocketAddr,
    node: Option<Node>,
    /// Bumped on every start of the node: messages to an earlier one are lost.
    incarnation: u64,
    group: usize,
    instances: BTreeMap<(String, u32), Instance>,
    /// Keeps its saved table (the crash victims do).
    keeps_disk: bool,
    disk: Table,
    /// The member view last given, to give only changes.
    view: Vec<Peer>,
    /// When the node last started.
    started_tick: u64,
}

impl Host {
    /// A host whose node starts at `tick` with an empty table.
    fn new(name: String, addr: SocketAddr, seed: u64, has_seeds: bool, tick: u64) -> Self {
        let node = Node::new(
            config(&name, addr, seed, has_seeds),
            Table::new(),
            now(tick),
        );
        Self {
            name,
            addr,
            node: Some(node),
            incarnation: 0,
            group: 0,
            instances: BTreeMap::new(),
            keeps_disk: false,
            disk: Table::new(),
            view: Vec::new(),
            started_tick: tick,
        }
    }
}

enum Event {
    Deliver {
        to: usize,
        incarnation: u64,
        input: Input,
    },
    Round {
        from: usize,
        to: usize,
    },
    InstanceUp {
        host: usize,
        incarnation: u64,
        key: (String, u32),
        version: u64,
    },
    InstanceDown {
        host: usize,
        incarnation: u64,
        key: (String, u32),
        version: u64,
    },
}

struct Sim {
    rng: SmallRng,
    hosts: Vec<Host>,
    tick: u64,
    loss: f64,
    events: BTreeMap<(u64, u64), Event>,
    seq: u64,
    dropped: u64,
    delivered: u64,
    /// Instances that failed for good.
    failed: u64,
    /// Chance that a save fails (a full disk, for a moment).
    save_fails: f64,
    /// Saves that failed.
    saves_failed: u64,
    next_request: u64,
    replies: BTreeMap<u64, Reply>,
    /// A name two live hosts share, while they do.
    clash: Option<String>,
    /// At-most-once services: never two instances of one slot, at any step.
    once: BTreeSet<String>,
    /// Services updated by rolling updates, with their `max_parallel`:
    /// never more slots down for the update at once.
    rolling: BTreeMap<String, u32>,
    /// The most slots of a rolling service seen down for its update at
    /// once, by service.
    rolling_down: BTreeMap<String, usize>,
    /// Membership as SWIM sees it, slowly (else at once and symmetric).
    lagged: Option<Lagged>,
    violations: Vec<String>,
    /// Deltas in flight, by (tick, to, incarnation).
    deltas: BTreeMap<(u64, usize, u64), Records>,
    /// Bumped by every crash, restart, partition and heal.
    topology: u64,
    topology_given: u64,
    /// Member views handed to nodes, counted.
    views_given: u64,
    /// The last end-state check: the state's fingerprint and its result.
    checked: Option<(u64, Option<String>)>,
}

/// Membership with SWIM's delays, within the bounds [`Detection`] states:
/// when a link is cut, each side suspects the other after 1 to
/// `2 (n - 1) + 1` ticks (the probe round-robin), and marks it down
/// [`SUSPECT_TICKS`] later; a healed link is seen alive after 1 to 3 ticks.
/// Stops take up to [`STOP_TICKS`] (the process exits after SIGTERM).
#[derive(Default)]
struct Lagged {
    /// `(viewer, viewed)`: reachable as last scheduled, the state the
    /// viewer sees, and a generation that outdates pending transitions.
    seen: BTreeMap<(usize, usize), (bool, PeerState, u64)>,
    /// `(tick, seq) -> (viewer, viewed, generation, state)`.
    transitions: BTreeMap<(u64, u64), (usize, usize, u64, PeerState)>,
    /// Instances told to stop and not yet exited: `(until tick, host, slot)`.
    stopping: Vec<(u64, usize, (String, u32))>,
}

/// Ticks from suspect to down in the lagged model (the config's 500 ms).
const SUSPECT_TICKS: u64 = 5;
/// Longest stop in the lagged model: the lagged scenario's `stop_timeout`.
const STOP_TICKS: u64 = 20;

fn now(tick: u64) -> u64 {
    1_000_000 + tick * TICK_MS
}

fn config(name: &str, addr: SocketAddr, seed: u64, has_seeds: bool) -> NodeConfig {
    NodeConfig {
        name: name.to_owned(),
        addr,
        providers: vec![ProviderKind::Exec, ProviderKind::Shell],
        tags: BTreeMap::new(),
        version: "sim".into(),
        has_seeds,
        broadcast_deltas: true,
        anti_entropy_period_ms: AE_PERIOD_MS,
        gc_after_ms: GC_AFTER_MS,
        seed,
        rebalance_interval_ms: REBALANCE_MS,
        detection: Detection {
            probe_period_ms: TICK_MS,
            probe_rtt_ms: TICK_MS,
            suspect_to_down_ms: SUSPECT_TICKS * TICK_MS,
        },
        keyring: Default::default(),
    }
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7946))
}

fn spec_json(name: &str, replicas: u32) -> String {
    format!(
        r#"{{"name":"{name}","provider":"exec","replicas":{replicas},"params":{{"command":"x"}}}}"#
    )
}

/// The bulk deploy's service number `s`: mostly counted replicas, some
/// every-node, some at-most-once; with `lagged` membership, all
/// at-most-once.
fn bulk_spec_json(s: usize, lagged: bool) -> String {
    let name = format!("svc-{s:04}");
    if lagged {
        return format!(
            r#"{{"name":"{name}","provider":"exec","replicas":{},"partition":"at-most-once","stop_timeout":"{}ms","params":{{"command":"x"}}}}"#,
            1 + s % 3,
            STOP_TICKS * TICK_MS
        );
    }
    match s % 40 {
        7 => format!(
            r#"{{"name":"{name}","provider":"exec","replicas":"every-node","params":{{"command":"x"}}}}"#
        ),
        13 => format!(
            r#"{{"name":"{name}","provider":"exec","replicas":{},"partition":"at-most-once","stop_timeout":"1s","params":{{"command":"x"}}}}"#,
            1 + s % 3
        ),
        _ => spec_json(&name, 1 + (s % 3) as u32),
    }
}

impl Sim {
    fn new(seed: u64, n: usize, loss: f64, victims: &BTreeSet<usize>) -> Self {
        let mut sim = Self {
            rng: SmallRng::seed_from_u64(seed),
            hosts: Vec::new(),
            tick: 0,
            loss,
            events: BTreeMap::new(),
            seq: 0,
            dropped: 0,
            delivered: 0,
            failed: 0,
            save_fails: 0.0,
            saves_failed: 0,
            next_request: 0,
            replies: BTreeMap::new(),
            clash: None,
            once: BTreeSet::new(),
            rolling: BTreeMap::new(),
            rolling_down: BTreeMap::new(),
            lagged: None,
            violations: Vec::new(),
            topology: 1,
            topology_given: 0,
            views_given: 0,
            checked: None,
            deltas: BTreeMap::new(),
        };
        for i in 0..n {
            // The first node starts alone; the others join it.
            let mut host = Host::new(
                format!("n{i:04}"),
                addr_of(i),
                seed * 7919 + i as u64,
                i > 0,
                0,
            );
            host.keeps_disk = victims.contains(&i);
            sim.hosts.push(host);
        }
        for i in 0..n {
            sim.feed(i, Input::Tick);
        }
        sim
    }

    fn later(&mut self, ticks: u64, event: Event) {
        self.seq += 1;
        self.events.insert((self.tick + ticks, self.seq), event);
    }

    fn up(&self, i: usize) -> bool {
        self.hosts.get(i).is_some_and(|h| h.node.is_some())
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        a != b && self.up(a) && self.up(b) && self.hosts[a].group == self.hosts[b].group
    }

    fn host_at(&self, addr: SocketAddr) -> Option<usize> {
        self.hosts.iter().position(|h| h.addr == addr)
    }

    /// Hands `input` to host `i`'s node and carries out the effects.
    fn feed(&mut self, i: usize, input: Input) {
        let Some(node) = self.hosts.get_mut(i).and_then(|h| h.node.as_mut()) else {
            return;
        };
        let converged_before = node.converged();
        let is_sync = matches!(input, Input::Synced(_));
        self.views_given += u64::from(matches!(input, Input::Members(_)));
        let effects = node.handle(input, now(self.tick));
        let converged_after = node.converged();
        let alone = node.members().names().nth(1).is_none();
        // The gate may open on this input: claims and starts are allowed
        // then, except before a peer was caught up with.
        let gated = !converged_before && (!converged_after || !is_sync) && !alone;
        let clashing = self.clash.as_deref() == Some(self.hosts[i].name.as_str());
        for effect in effects {
            if gated || clashing {
                let name = self.hosts[i].name.as_str();
                // A claim this node wrote since it started (it may forward
                // older ones it learned, of its name).
                let started = now(self.hosts[i].started_tick);
                let claims = matches!(&effect, Effect::Broadcast(records)
                    if records.iter().any(|(k, r)| matches!(k, Key::Claim(..))
                        && r.ts.node == name
                        && r.ts.wall_ms >= started
                        && matches!(&r.value, Value::Claim(c) if c.owner.as_deref() == Some(name))));
                let starts = matches!(effect, Effect::Start { .. });
                if (claims || starts) && gated {
                    self.violations.push(format!(
                        "{name} claimed or started before catching up with a peer"
                    ));
                }
                if claims && clashing {
                    self.violations.push(format!(
                        "{name} claimed while another live node has its name"
                    ));
                }
            }
            self.apply(i, effect);
        }
    }

    fn apply(&mut self, i: usize, effect: Effect) {
        let incarnation = self.hosts[i].incarnation;
        match effect {
            Effect::Broadcast(records) => {
                for j in 0..self.hosts.len() {
                    if !self.reachable(i, j) {
                        continue;
                    }
                    // Each record is lost, or arrives 1 to 3 ticks later;
                    // deltas that reach a node in the same tick are handed
                    // over together.
                    // (One draw per record and peer decides both.)
                    let lost_below = (self.loss * f64::from(u32::MAX)) as u32;
                    let mut arriving: [Records; 3] = Default::default();
                    for record in &records {
                        let draw: u32 = self.rng.random();
                        if draw < lost_below {
                            self.dropped += 1;
                            continue;
                        }
                        arriving[(draw % 3) as usize].push(record.clone());
                    }
                    for (delay, batch) in (1..).zip(arriving) {
                        if !batch.is_empty() {
                            let key = (self.tick + delay, j, self.hosts[j].incarnation);
                            self.deltas.entry(key).or_default().extend(batch);
                        }
                    }
                }
            }
            Effect::Sync(peer) => {
                if let Some(j) = self.host_at(peer) {
                    self.later(1, Event::Round { from: i, to: j });
                }
            }
            // A push is a stream, as a round is: lost as often.
            Effect::Push {
                peer,
                records,
                forward,
            } => match self.host_at(peer) {
                Some(j) if self.reachable(i, j) && !self.rng.random_bool(self.loss / 2.0) => {
                    let incarnation = self.hosts[j].incarnation;
                    let input = Input::Records(Source::of_push(forward), records);
                    self.later(
                        1,
                        Event::Deliver {
                            to: j,
                            incarnation,
                            input,
                        },
                    );
                }
                _ => self.dropped += 1,
            },
            Effect::Start {
                spec,
                slot,
                version,
            } => {
                let key = (spec.name.clone(), slot);
                let started_ms = now(self.tick);
                // What the node knew when it decided: an instance whose
                // restart raced with this start (its running report not
                // in yet) was down as far as the node could tell.
                let known_running = self.hosts[i].node.as_ref().is_some_and(|n| {
                    n.table()
                        .status(&self.hosts[i].name, &key.0, slot)
                        .is_some_and(|s| s.state == InstanceState::Running)
                });
                match self.hosts[i].instances.get_mut(&key) {
                    Some(inst) if inst.version == version => {}
                    Some(inst) if !inst.spec.same_instance_of_slot(&spec, slot) => {
                        // A new instance spec: the old one stops, the new
                        // one starts. If the old one ran, this is a step
                        // of a rolling update (else it was down already).
                        *inst = Instance {
                            version,
                            spec,
                            running: false,
                            failed: false,
                            started_ms,
                            replacing: inst.running && known_running,
                        };
                        self.report(i, &key, InstanceState::Starting, version);
                        self.up_later(i, key, version, 2);
                    }
                    Some(inst) => {
                        // A scale: restamp.
                        inst.version = version;
                        let state = if inst.running {
                            InstanceState::Running
                        } else {
                            InstanceState::Starting
                        };
                        self.report(i, &key, state, version);
                    }
                    None => {
                        self.hosts[i].instances.insert(
                            key.clone(),
                            Instance {
                                version,
                                spec,
                                running: false,
                                failed: false,
                                started_ms,
                                replacing: false,
                            },
                        );
                        self.report(i, &key, InstanceState::Starting, version);
                        self.up_later(i, key, version, 1);
                    }
                }
            }
            Effect::Stop { service, slot } => {
                let key = (service, slot);
                match self.hosts[i].instances.remove(&key) {
                    Some(inst) => {
                        let ticks = match &mut self.lagged {
                            // A failed instance has no process left.
                            Some(lagged) if !inst.failed => {
                                let ticks = self.rng.random_range(1..=STOP_TICKS);
                                lagged.stopping.push((self.tick + ticks, i, key.clone()));
                                ticks
                            }
                            _ => 1,
                        };
                        self.later(
                            ticks,
                            Event::InstanceDown {
                                host: i,
                                incarnation,
                                key,
                                version: inst.version,
                            },
                        );
                    }
                    None => self.report(i, &key, InstanceState::Stopped, 0),
                }
            }
            Effect::Save { seq } => {
                let result = if self.rng.random_bool(self.save_fails) {
                    self.saves_failed += 1;
                    Err("No space left on device (os error 28)".to_owned())
                } else {
                    if self.hosts[i].keeps_disk
                        && let Some(node) = &self.hosts[i].node
                    {
                        self.hosts[i].disk = node.to_save().to_table();
                    }
                    Ok(())
                };
                self.later(
                    1,
                    Event::Deliver {
                        to: i,
                        incarnation,
                        input: Input::Saved { seq, result },
                    },
                );
            }
            Effect::Reply(id, reply) => {
                self.replies.insert(id, reply);
            }
            // The simulated network has no keys.
            Effect::Log(_) | Effect::Keyring(_) | Effect::Forgotten(_) => {}
        }
    }

    /// The supervisor's report of an instance, delivered this tick.
    fn report(&mut self, i: usize, key: &(String, u32), state: InstanceState, version: u64) {
        let started_ms = self.hosts[i]
            .instances
            .get(key)
            .map_or(0, |inst| inst.started_ms);
        let status = Status {
            state,
            pid: state.is_active().then_some(1),
            restarts: 0,
            since_ms: now(self.tick),
            last_exit: None,
            last_signal: None,
            last_error: None,
            version,
            started_ms,
            proven: false,
            ip: None,
            ports: Default::default(),
        };
        let input = Input::Instance(InstanceReport {
            service: key.0.clone(),
            slot: key.1,
            status,
        });
        let incarnation = self.hosts[i].incarnation;
        self.later(
            0,
            Event::Deliver {
                to: i,
                incarnation,
                input,
            },
        );
    }

    /// An anti-entropy round, as the agent's exchange does it: digest,
    /// the peer's records of the differing buckets, then ours less those.
    fn round(&mut self, i: usize, j: usize) {
        let dropped = !self.reachable(i, j) || self.rng.random_bool(self.loss / 2.0);
        let a = self.hosts.get(i).and_then(|h| h.node.as_ref());
        let b = self.hosts.get(j).and_then(|h| h.node.as_ref());
        let (Some(a), Some(b), false) = (a, b, dropped) else {
            self.dropped += u64::from(dropped);
            // (A host that is gone, the twin, has no address left to name.)
            if let Some(peer) = self.hosts.get(j).map(|h| h.addr) {
                self.feed(i, Input::SyncFailed(peer));
            }
            return;
        };
        // (Equal tables end the round at the summary, as the agent's do.)
        let buckets = if a.table().summary() == b.table().summary() {
            Vec::new()
        } else {
            b.table().differing_buckets(&a.table().digest())
        };
        if !buckets.is_empty() {
            let theirs = b.table().records_in(&buckets);
            self.feed(i, Input::Records(Source::AntiEntropy, theirs.clone()));
            let ours = match &self.hosts[i].node {
                Some(a) => a.table().records_in_except(&buckets, &theirs),
                None => return,
            };
            self.feed(j, Input::Records(Source::AntiEntropy, ours));
        }
        self.delivered += 1;
        // The initiator hears of it, as the agent's does.
        let aj = self.hosts[j].addr;
        self.feed(i, Input::Synced(aj));
    }

    /// Gives each node the members it sees, when that changed.
    fn membership(&mut self) {
        if self.lagged.is_some() {
            self.lagged_membership();
            return;
        }
        if self.topology == self.topology_given {
            return;
        }
        self.topology_given = self.topology;
        for i in 0..self.hosts.len() {
            if !self.up(i) {
                continue;
            }
            let view: Vec<Peer> = (0..self.hosts.len())
                .map(|j| Peer {
                    name: self.hosts[j].name.clone(),
                    addr: self.hosts[j].addr,
                    incarnation: self.hosts[j].incarnation,
                    state: if j == i || self.reachable(i, j) {
                        PeerState::Alive
                    } else {
                        PeerState::Gone
                    },
                })
                .collect();
            if view != self.hosts[i].view {
                self.hosts[i].view = view.clone();
                self.feed(i, Input::Members(view));
            }
        }
    }

    /// [`Lagged`] membership: schedules what a topology change will show,
    /// applies what is due, and gives the nodes whose view changed.
    fn lagged_membership(&mut self) {
        let Some(mut lagged) = self.lagged.take() else {
            return;
        };
        let n = self.hosts.len();
        let up = (0..n).filter(|i| self.up(*i)).count() as u64;
        let mut changed = BTreeSet::new();
        if self.topology != self.topology_given {
            self.topology_given = self.topology;
            for i in 0..n {
                if self.up(i) && self.hosts[i].view.is_empty() {
                    // Just (re)started: gets its first view.
                    changed.insert(i);
                }
                for j in (0..n).filter(|j| *j != i) {
                    let reach = self.reachable(i, j);
                    let entry = lagged
                        .seen
                        .entry((i, j))
                        .or_insert((false, PeerState::Gone, 0));
                    if entry.0 == reach {
                        continue;
                    }
                    entry.0 = reach;
                    entry.2 += 1;
                    let generation = entry.2;
                    let mut at = |ticks: u64, state: PeerState| {
                        self.seq += 1;
                        lagged
                            .transitions
                            .insert((self.tick + ticks, self.seq), (i, j, generation, state));
                    };
                    if reach {
                        at(self.rng.random_range(1..=3), PeerState::Alive);
                    } else {
                        let suspect = self.rng.random_range(1..=2 * up.saturating_sub(1) + 1);
                        at(suspect, PeerState::Suspect);
                        at(suspect + SUSPECT_TICKS, PeerState::Gone);
                    }
                }
            }
        }
        while let Some(entry) = lagged.transitions.first_entry() {
            if entry.key().0 > self.tick {
                break;
            }
            let (i, j, generation, state) = entry.remove();
            if let Some(seen) = lagged.seen.get_mut(&(i, j))
                && seen.2 == generation
            {
                seen.1 = state;
                changed.insert(i);
            }
        }
        for i in changed {
            if !self.up(i) {
                continue;
            }
            let view: Vec<Peer> = (0..n)
                .map(|j| Peer {
                    name: self.hosts[j].name.clone(),
                    addr: self.hosts[j].addr,
                    incarnation: self.hosts[j].incarnation,
                    state: if j == i {
                        PeerState::Alive
                    } else {
                        lagged.seen.get(&(i, j)).map_or(PeerState::Gone, |s| s.1)
                    },
                })
                .collect();
            self.hosts[i].view = view.clone();
            self.feed(i, Input::Members(view));
        }
        lagged
            .stopping
            .retain(|(until, host, _)| *until > self.tick && self.hosts[*host].node.is_some());
        self.lagged = Some(lagged);
    }

    fn step(&mut self, crashes: bool) {
        self.tick += 1;
        self.membership();
        while let Some(entry) = self.deltas.first_entry() {
            if entry.key().0 > self.tick {
                break;
            }
            let ((_, to, incarnation), records) = entry.remove_entry();
            if self.up(to) && self.hosts[to].incarnation == incarnation {
                self.delivered += 1;
                self.feed(to, Input::Records(Source::Delta, records));
            }
        }
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > self.tick {
                break;
            }
            match entry.remove() {
                Event::Deliver {
                    to,
                    incarnation,
                    input,
                } => {
                    if self.up(to) && self.hosts[to].incarnation == incarnation {
                        self.delivered += 1;
                        self.feed(to, input);
                    }
                }
                Event::Round { from, to } => self.round(from, to),
                Event::InstanceUp {
                    host,
                    incarnation,
                    key,
                    version,
                } => {
                    if self.up(host)
                        && self.hosts[host].incarnation == incarnation
                        && let Some(inst) = self.hosts[host].instances.get_mut(&key)
                        && inst.version == version
                        && !inst.running
                        && !inst.failed
                    {
                        inst.running = true;
                        inst.replacing = false;
                        self.report(host, &key, InstanceState::Running, version);
                    }
                }
                Event::InstanceDown {
                    host,
                    incarnation,
                    key,
                    version,
                } => {
                    // (Unless it was started again meanwhile: the supervisor
                    // reports the new instance.)
                    if self.up(host)
                        && self.hosts[host].incarnation == incarnation
                        && !self.hosts[host].instances.contains_key(&key)
                    {
                        self.report(host, &key, InstanceState::Stopped, version);
                    }
                }
            }
        }
        if crashes && self.rng.random_bool(0.05) {
            // An instance exits for good: its restart budget is spent.
            if let Some((i, key, version)) = self.stop_random_instance() {
                if let Some(inst) = self.hosts[i].instances.get_mut(&key) {
                    inst.failed = true;
                }
                self.failed += 1;
                self.report(i, &key, InstanceState::Failed, version);
            }
        }
        if crashes && self.rng.random_bool(0.3) {
            // An instance crashes; its restart policy brings it back.
            if let Some((i, key, version)) = self.stop_random_instance() {
                self.report(i, &key, InstanceState::Backoff, version);
                self.up_later(i, key, version, 2);
            }
        }
        for i in 0..self.hosts.len() {
            let due = self.hosts[i]
                .node
                .as_ref()
                .is_some_and(|n| n.next_deadline() <= now(self.tick));
            if due {
                self.feed(i, Input::Tick);
            }
        }
        self.check_collected();
        self.check_at_most_once();
        self.check_rolling();
    }

    /// No more than `max_parallel` slots of a service are down for its
    /// update at once: an instance stopped for a new instance spec is not
    /// up again yet, and no other instance of the slot runs anywhere.
    fn check_rolling(&mut self) {
        if self.rolling.is_empty() {
            return;
        }
        let live = || self.hosts.iter().filter(|h| h.node.is_some());
        let mut slots: BTreeSet<(&str, u32)> = BTreeSet::new();
        for h in live() {
            for ((service, slot), inst) in &h.instances {
                if !inst.replacing || inst.running || !self.rolling.contains_key(service) {
                    continue;
                }
                let elsewhere = live().any(|other| {
                    other
                        .instances
                        .get(&(service.clone(), *slot))
                        .is_some_and(|i| i.running)
                });
                if !elsewhere {
                    slots.insert((service.as_str(), *slot));
                }
            }
        }
        let listed = format!("{slots:?}");
        let mut down: BTreeMap<&str, usize> = BTreeMap::new();
        for (service, _) in slots {
            *down.entry(service).or_default() += 1;
        }
        for (service, n) in down {
            let most = self.rolling_down.entry(service.to_owned()).or_default();
            *most = (*most).max(n);
            let max_parallel = self.rolling[service] as usize;
            // (0: all at once.)
            if max_parallel > 0 && n > max_parallel {
                let v = format!(
                    "T{t} {n} slots of {service} are down for its update at once (max_parallel {max_parallel}): {listed}",
                    t = self.tick
                );
                self.violations.push(v);
            }
        }
    }

    /// No slot of an at-most-once service has two instances (starting,
    /// running or restarting) at once, anywhere.
    fn check_at_most_once(&mut self) {
        if self.once.is_empty() {
            return;
        }
        let mut seen: BTreeMap<(&str, u32), &str> = BTreeMap::new();
        let stopping = self
            .lagged
            .iter()
            .flat_map(|l| &l.stopping)
            .map(|(_, host, key)| (&self.hosts[*host], key));
        let instances = self
            .hosts
            .iter()
            .filter(|h| h.node.is_some())
            .flat_map(|h| {
                h.instances
                    .iter()
                    .filter(|(_, i)| !i.failed)
                    .map(move |(key, _)| (h, key))
            });
        for (h, (service, slot)) in instances.chain(stopping) {
            if !self.once.contains(service) {
                continue;
            }
            {
                // (One host's supervisor runs one instance per slot.)
                if let Some(other) = seen.insert((service, *slot), &h.name)
                    && other != h.name
                {
                    let v = format!(
                        "T{t} at-most-once {service}/{slot} runs on {other} and {} at once",
                        h.name,
                        t = self.tick
                    );
                    self.violations.push(v);
                    return;
                }
            }
        }
    }

    /// The supervisor brings an instance up `ticks` from now.
    fn up_later(&mut self, host: usize, key: (String, u32), version: u64, ticks: u64) {
        let incarnation = self.hosts[host].incarnation;
        self.later(
            ticks,
            Event::InstanceUp {
                host,
                incarnation,
                key,
                version,
            },
        );
    }

    /// Ends a random running instance's process: (host, slot, version).
    fn stop_random_instance(&mut self) -> Option<(usize, (String, u32), u64)> {
        let i = self.rng.random_range(0..self.hosts.len());
        let running: Vec<_> = self.hosts[i]
            .instances
            .iter()
            .filter(|(_, v)| v.running)
            .map(|(k, v)| (k.clone(), v.version))
            .collect();
        if running.is_empty() {
            return None;
        }
        let (key, version) = running[self.rng.random_range(0..running.len())].clone();
        if let Some(inst) = self.hosts[i].instances.get_mut(&key) {
            inst.running = false;
        }
        Some((i, key, version))
    }

    fn request(&mut self, i: usize, request: Request) -> u64 {
        self.next_request += 1;
        let id = self.next_request;
        self.feed(i, Input::Request(id, request));
        id
    }

    fn crash(&mut self, i: usize) {
        self.topology += 1;
        self.hosts[i].node = None;
        // Instances die with their agent.
        self.hosts[i].instances.clear();
    }

    fn restart(&mut self, i: usize, seed: u64) {
        self.topology += 1;
        let started = self.tick;
        let host = &mut self.hosts[i];
        host.started_tick = started;
        host.incarnation += 1;
        host.view.clear();
        let table = host.disk.clone();
        let config = config(&host.name, host.addr, seed, true);
        host.node = Some(Node::new(config, table, now(self.tick)));
        self.feed(i, Input::Tick);
    }

    fn partition(&mut self, groups: usize) {
        self.topology += 1;
        for i in 0..self.hosts.len() {
            self.hosts[i].group = self.rng.random_range(0..groups);
        }
    }

    fn heal(&mut self) {
        self.topology += 1;
        for h in &mut self.hosts {
            h.group = 0;
        }
    }

    /// A removed service's record older than GC age plus a collection
    /// period must be gone everywhere: a node holding it got it back
    /// through a merge.
    fn check_collected(&mut self) {
        let period_ticks = GC_AFTER_MS / 4 / TICK_MS + 2;
        if !self.tick.is_multiple_of(5) {
            return;
        }
        let horizon = now(self.tick).saturating_sub(GC_AFTER_MS + GC_AFTER_MS / 4 + 2 * TICK_MS);
        for h in &self.hosts {
            let Some(node) = &h.node else { continue };
            // A node holds what it brought from disk until its first
            // collection.
            if self.tick < h.started_tick + period_ticks {
                continue;
            }
            for (name, record, service) in node.table().services() {
                if service.spec.is_none() && record.ts.wall_ms < horizon {
                    self.violations
                        .push(format!("{}: collected {name} came back", h.name));
                    return;
                }
            }
        }
    }

    /// [`Sim::violation`], computed again only when something it reads
    /// changed: a quiet step (much of a quiet period, and of the wait for
    /// an at-most-once margin) changes nothing it looks at.
    fn check(&mut self, expected: &BTreeSet<String>) -> Option<String> {
        let fingerprint = self.fingerprint(expected);
        if let Some((at, result)) = &self.checked
            && *at == fingerprint
        {
            return result.clone();
        }
        let result = self.violation(expected);
        self.checked = Some((fingerprint, result.clone()));
        result
    }

    /// A hash of everything [`Sim::violation`] reads: every node's table
    /// (by its digest), gate and member views (counted); every instance;
    /// what SWIM shows in the lagged model; the name clash, the
    /// violations noted and the services expected.
    fn fingerprint(&self, expected: &BTreeSet<String>) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (
            self.violations.len(),
            self.views_given,
            &self.clash,
            expected,
        )
            .hash(&mut h);
        self.hosts.len().hash(&mut h);
        for host in &self.hosts {
            (&host.name, host.incarnation).hash(&mut h);
            match &host.node {
                Some(node) => (node.table().summary(), node.converged()).hash(&mut h),
                None => 0u8.hash(&mut h),
            }
            host.instances.len().hash(&mut h);
            for (key, inst) in &host.instances {
                (key, inst.version, inst.running, inst.failed).hash(&mut h);
            }
        }
        if let Some(lagged) = &self.lagged {
            for (pair, (reachable, state, _)) in &lagged.seen {
                (pair, reachable, *state as u8).hash(&mut h);
            }
        }
        h.finish()
    }

    /// The first end-state invariant that fails, if any. Cheap checks on
    /// one table first (most calls, during convergence, stop there), then
    /// the other tables against it.
    fn violation(&self, expected: &BTreeSet<String>) -> Option<String> {
        if let Some(v) = self.violations.first() {
            return Some(v.clone());
        }
        let up: BTreeMap<&str, usize> = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.node.is_some())
            .map(|(i, h)| (h.name.as_str(), i))
            .collect();
        // With lagged membership: every live node sees every other alive.
        if let Some(lagged) = &self.lagged {
            for (&i, &j) in up.values().flat_map(|i| up.values().map(move |j| (i, j))) {
                let alive = i == j
                    || lagged
                        .seen
                        .get(&(i, j))
                        .is_some_and(|s| s.1 == PeerState::Alive);
                if !alive {
                    return Some(format!(
                        "{} does not see {} alive yet",
                        self.hosts[i].name, self.hosts[j].name
                    ));
                }
            }
        }
        let first = self.hosts.iter().find_map(|h| h.node.as_ref())?;
        let reference = first.table();
        // What runs where, borrowed: looked up once per slot below.
        let running: BTreeSet<(usize, &str, u32)> = self
            .hosts
            .iter()
            .enumerate()
            .flat_map(|(i, h)| {
                h.instances
                    .iter()
                    .filter(|(_, inst)| inst.running)
                    .map(move |((name, slot), _)| (i, name.as_str(), *slot))
            })
            .collect();
        let mut owners: BTreeMap<(&str, u32), usize> = BTreeMap::new();
        let mut live = 0;
        // Claims and services are both in name order: walk them together.
        let mut claims = reference.claims().peekable();
        // Owners seen, with their node record.
        let mut records: BTreeMap<&str, (usize, &mob_scheduler::record::NodeRecord)> =
            BTreeMap::new();
        // Every-node services: one instance on every live host.
        let mut every_node: BTreeSet<&str> = BTreeSet::new();
        // Slots each node holds that may move to even out the load.
        let mut movable: BTreeMap<usize, usize> = BTreeMap::new();
        for (name, _, service) in reference.services() {
            let Some(spec) = &service.spec else { continue };
            live += 1;
            if spec.every_node {
                every_node.insert(name);
                // Or it failed there for good (its node says so): it stays
                // failed until redeployed.
                let runs = |idx: usize| {
                    let host = &self.hosts[idx];
                    running.contains(&(idx, name, EVERY_NODE_SLOT))
                        || host.node.as_ref().is_some_and(|n| {
                            n.table()
                                .status(&host.name, name, EVERY_NODE_SLOT)
                                .is_some_and(|s| s.state == InstanceState::Failed)
                        })
                };
                if let Some((host, _)) = up.iter().find(|(_, idx)| !runs(**idx)) {
                    return Some(format!("every-node {name} does not run on {host}"));
                }
                continue;
            }
            for slot in 0..spec.replicas {
                while claims
                    .next_if(|(s, k, _)| (*s, *k) < (name, slot))
                    .is_some()
                {}
                let owner = match claims.peek() {
                    Some((s, k, c)) if (*s, *k) == (name, slot) => c.owner.as_deref(),
                    _ => None,
                };
                let Some(owner) = owner else {
                    return Some(format!(
                        "{name}/{slot} has no owner: {:?}",
                        reference.claim(name, slot)
                    ));
                };
                let seen = match records.get(owner) {
                    Some(seen) => Some(*seen),
                    None => up
                        .get(owner)
                        .and_then(|idx| reference.node(owner).map(|r| (*idx, r))),
                };
                let Some((idx, record)) = seen else {
                    return Some(format!(
                        "{name}/{slot} owned by {owner}, which is down or has no record"
                    ));
                };
                records.insert(owner, (idx, record));
                if !fits(record, spec) {
                    return Some(format!("{name}/{slot} owned by ineligible {owner}"));
                }
                if !running.contains(&(idx, name, slot)) {
                    return Some(format!("{name}/{slot} is not running on its owner {owner}"));
                }
                // An update ended on one version: the owner runs the
                // service's instance spec.
                if self.rolling.contains_key(name) {
                    let runs = self.hosts[idx]
                        .instances
                        .get(&(name.to_owned(), slot))
                        .map_or(0, |inst| inst.version);
                    if runs < service.instance_since {
                        return Some(format!(
                            "{name}/{slot} runs version {runs} on {owner}, not the instance version {}",
                            service.instance_since
                        ));
                    }
                }
                // And the owner knows it (its report arrived): until then
                // it would not hand the slot over, and may just after.
                let knows = self.hosts[idx].node.as_ref().is_some_and(|n| {
                    n.table()
                        .status(owner, name, slot)
                        .is_some_and(|s| s.state == InstanceState::Running)
                });
                if !knows {
                    return Some(format!(
                        "{owner} has not yet reported {name}/{slot} running"
                    ));
                }
                owners.insert((name, slot), idx);
                // (A slot that failed somewhere may have no node left to
                // move to.)
                let failed_nowhere = match claims.peek() {
                    Some((_, _, c)) => c.failed_on.is_empty(),
                    None => true,
                };
                if spec.moves_to_rebalance() && failed_nowhere {
                    *movable.entry(idx).or_default() += 1;
                }
            }
        }
        // Rebalanced: no node over the load cap with a slot that may move
        // while another is under it (else it is still handing slots over,
        // one every rebalance interval).
        let cap =
            (reference.live_slots() as f64 * LOAD_FACTOR / up.len().max(1) as f64).ceil() as usize;
        let room = up.keys().any(|name| reference.load(name) < cap);
        if let Some((name, _)) = up
            .iter()
            .find(|(name, idx)| room && reference.load(name) > cap && movable.contains_key(*idx))
        {
            return Some(format!(
                "{name} holds {} slots, over the cap {cap}",
                reference.load(name)
            ));
        }
        if live != expected.len() {
            return Some(format!(
                "{} holds {live} services, {} expected",
                first.name(),
                expected.len()
            ));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            // A failed instance has no process left (the supervisor only
            // keeps its record until a stop).
            for (key, _) in h.instances.iter().filter(|(_, inst)| !inst.failed) {
                let own = key.1 == EVERY_NODE_SLOT && every_node.contains(key.0.as_str());
                if !own && owners.get(&(key.0.as_str(), key.1)) != Some(&i) {
                    return Some(format!("{} runs {key:?} which it doesn't own", h.name));
                }
            }
        }
        // Every other table: the same services, the same owners.
        let digest = reference.digest();
        for h in &self.hosts {
            let Some(node) = &h.node else { continue };
            let table = node.table();
            if table.digest() == digest {
                continue;
            }
            let names = table
                .services()
                .filter(|(_, _, s)| s.spec.is_some())
                .map(|(n, _, _)| n);
            if !names.eq(expected.iter().map(String::as_str)) {
                return Some(format!(
                    "{} does not hold exactly the live services",
                    h.name
                ));
            }
            // Both are in (service, slot) order: walk them side by side.
            let mut claims = table.claims().peekable();
            for ((name, slot), idx) in &owners {
                while claims
                    .next_if(|(s, k, _)| (*s, *k) < (*name, *slot))
                    .is_some()
                {}
                let owner = match claims.peek() {
                    Some((s, k, c)) if (*s, *k) == (*name, *slot) => c.owner.as_deref(),
                    _ => None,
                };
                if owner != Some(self.hosts[*idx].name.as_str()) {
                    return Some(format!(
                        "{name}/{slot}: {} says the owner is {owner:?}",
                        h.name
                    ));
                }
            }
        }
        if !reference
            .services()
            .filter(|(_, _, s)| s.spec.is_some())
            .map(|(n, _, _)| n)
            .eq(expected.iter().map(String::as_str))
        {
            return Some(format!(
                "{} does not hold exactly the live services",
                first.name()
            ));
        }
        // Rebalancing settled: no node would hand a slot over (over the
        // mean while another is under the floor); the quiet period then
        // checks that nothing moves.
        if let Some(h) = self
            .hosts
            .iter()
            .find(|h| h.node.as_ref().is_some_and(Node::would_hand_over))
        {
            return Some(format!("{} still hands slots over", h.name));
        }
        None
    }

    /// After a heal: steps until every invariant holds, then checks they
    /// keep holding through a quiet period. Returns the rounds it took.
    /// With `keep_running`, every step also checks that no slot that ran
    /// stops running everywhere (after a join: rebalancing moves slots
    /// drain-style). After a heal a loser may stop before the winner's
    /// instance is back up, so that is not checked there.
    fn converge(
        &mut self,
        seed: u64,
        heal: usize,
        expected: &BTreeSet<String>,
        keep_running: bool,
    ) -> u64 {
        const QUIET: usize = 20;
        // At-most-once slots start only the margin after a member went,
        // and the margin grows with the cluster (membership probes every
        // member in turn): the limit allows for it.
        let margin = mob_scheduler::quorum::Quorum::new(
            self.hosts.len(),
            self.hosts.len(),
            true,
            0,
            (0, 0),
            &config("n", addr_of(0), 0, false).detection,
        )
        .margin_ms(&parse_specs(&bulk_spec_json(13, false)).unwrap()[0]);
        let limit = 600 + margin / TICK_MS;
        let start = self.tick;
        loop {
            self.step_checked(keep_running);
            match self.check(expected) {
                None => break,
                Some(v) if self.tick - start > limit || !self.violations.is_empty() => {
                    panic!(
                        "seed {seed}: not converged {} rounds after heal {heal}: {v}",
                        self.tick - start
                    )
                }
                Some(_) => {}
            }
        }
        let rounds = self.tick - start;
        if self.hosts.len() >= 100 {
            eprintln!("seed {seed}: converged after heal {heal} in {rounds} rounds");
        }
        let owners = self.owners();
        for _ in 0..QUIET {
            self.step_checked(keep_running);
            if let Some(v) = self.check(expected) {
                panic!("seed {seed}: diverged again after heal {heal}: {v}");
            }
        }
        let after = self.owners();
        let moved: Vec<_> = owners
            .iter()
            .filter(|(k, o)| after.get(*k) != Some(*o))
            .collect();
        assert!(
            moved.is_empty() && owners.len() == after.len(),
            "seed {seed}: slots moved after convergence {heal}: {moved:?}"
        );
        rounds
    }

    /// One step without injected faults; with `keep_running`, checking
    /// that every live slot that ran somewhere still does: a handover never
    /// leaves a slot running nowhere.
    fn step_checked(&mut self, keep_running: bool) {
        if !keep_running {
            self.step(false);
            return;
        }
        let before = self.running_slots();
        self.step(false);
        let after = self.running_slots();
        let live = |service: &str, slot: u32| {
            self.hosts.iter().filter_map(|h| h.node.as_ref()).all(|n| {
                n.table()
                    .live_service(service)
                    .is_some_and(|(spec, _)| spec.has_slot(slot))
            })
        };
        if let Some((service, slot)) = before
            .difference(&after)
            .find(|(service, slot)| live(service, *slot))
        {
            self.violations
                .push(format!("{service}/{slot} runs nowhere after running"));
        }
    }

    /// Slots with a running instance on some live host.
    fn running_slots(&self) -> BTreeSet<(String, u32)> {
        self.hosts
            .iter()
            .filter(|h| h.node.is_some())
            .flat_map(|h| {
                h.instances
                    .iter()
                    .filter(|(_, i)| i.running)
                    .map(|(k, _)| k.clone())
            })
            .collect()
    }

    /// The owner of every live slot, in the first live node's table.
    fn owners(&self) -> BTreeMap<(String, u32), String> {
        let Some(node) = self.hosts.iter().find_map(|h| h.node.as_ref()) else {
            return BTreeMap::new();
        };
        let table = node.table();
        table
            .claims()
            .filter(|(s, k, _)| {
                table
                    .live_service(s)
                    .is_some_and(|(spec, _)| *k < spec.replicas)
            })
            .filter_map(|(s, k, c)| Some(((s.to_owned(), k), c.owner.clone()?)))
            .collect()
    }

    /// Slots held over the load cap, in the first node's table, with the
    /// live hosts as candidates.
    fn excess(&self) -> usize {
        let Some(table) = self
            .hosts
            .iter()
            .find_map(|h| h.node.as_ref())
            .map(Node::table)
        else {
            return 0;
        };
        let live: BTreeSet<&str> = self
            .hosts
            .iter()
            .filter(|h| h.node.is_some())
            .map(|h| h.name.as_str())
            .collect();
        let cap =
            (table.live_slots() as f64 * LOAD_FACTOR / live.len().max(1) as f64).ceil() as usize;
        live.iter().map(|n| table.load(n).saturating_sub(cap)).sum()
    }

    /// `count` new hosts join with empty tables.
    fn join(&mut self, count: usize, seed: u64) {
        for _ in 0..count {
            let i = self.hosts.len();
            let host = Host::new(
                format!("n{i:04}"),
                addr_of(i),
                seed * 7919 + i as u64,
                true,
                self.tick,
            );
            self.hosts.push(host);
            self.feed(i, Input::Tick);
        }
        self.topology += 1;
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a run measured.
#[derive(Default)]
struct Outcome {
    rounds: Vec<u64>,
    /// Rounds until the bulk deploy reached every node.
    bulk_rounds: u64,
    /// Slots the joined nodes hold once rebalanced.
    moved_to_joined: usize,
    /// Records peers sent back that GC had forgotten, refused.
    refused: u64,
    /// Instances that failed for good.
    failed: u64,
    /// Saves that failed.
    saves_failed: u64,
    /// Operator writes refused because their save failed.
    writes_not_saved: u64,
}

/// Runs one seeded scenario.
fn run(seed: u64, nodes: usize, services: usize, rounds: usize, lagged: bool) -> Outcome {
    let mut victim_rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let victims: Vec<usize> = (0..rounds)
        .map(|_| victim_rng.random_range(1..nodes))
        .collect();
    let mut sim = Sim::new(seed, nodes, 0.2, &victims.iter().copied().collect());
    if lagged {
        sim.lagged = Some(Lagged::default());
    }
    let mut outcome = Outcome::default();
    let mut expected = BTreeSet::new();
    for _ in 0..5 {
        sim.step(false);
    }
    // One bulk deploy: more records than deltas carry, pushed by
    // anti-entropy.
    let text = format!(
        "[{}]",
        (0..services)
            .map(|s| bulk_spec_json(s, lagged))
            .collect::<Vec<_>>()
            .join(",")
    );
    let specs = parse_specs(&text).unwrap();
    expected.extend(specs.iter().map(|s| s.name.clone()));
    sim.once.extend(
        specs
            .iter()
            .filter(|s| s.partition == Partition::AtMostOnce)
            .map(|s| s.name.clone()),
    );
    let from = sim.rng.random_range(0..nodes);
    sim.request(from, Request::Deploy(specs));
    let reached = (1..=600).find(|_| {
        sim.step(false);
        sim.hosts.iter().all(|h| {
            h.node
                .as_ref()
                .is_some_and(|n| n.table().services().count() == services)
        })
    });
    let Some(reached) = reached else {
        panic!("seed {seed}: the bulk deploy did not reach every node in 60 s");
    };
    outcome.bulk_rounds = reached;
    outcome.rounds.push(sim.converge(seed, 0, &expected, false));
    // Two nodes join: claims are sticky, so only rebalancing gives them
    // slots (none with at-most-once services only: they don't move), off the nodes over the new cap, without a slot ever running
    // nowhere.
    sim.join(2, seed);
    let excess = sim.excess();
    outcome.rounds.push(sim.converge(seed, 0, &expected, true));
    // From here on disks fail now and then: a write refused for it must
    // never appear anywhere (the checks compare with `expected`, which
    // holds only what was acknowledged), and nothing acknowledged is lost.
    sim.save_fails = 0.1;
    let joined: usize = sim.hosts[nodes..]
        .iter()
        .map(|h| {
            sim.hosts[0]
                .node
                .as_ref()
                .map_or(0, |n| n.table().load(&h.name))
        })
        .sum();
    assert!(
        excess == 0 || joined > 0 || lagged,
        "seed {seed}: {excess} slots over the cap after the join, none moved to the new nodes"
    );
    outcome.moved_to_joined += joined;

    for (round, victim) in victims.iter().copied().enumerate() {
        sim.partition(2 + round % 2);
        for k in 0..5 {
            let from = sim.rng.random_range(0..nodes);
            if sim.up(from) {
                let name = format!("late-{round}-{k}");
                let id = sim.request(
                    from,
                    Request::Deploy(parse_specs(&spec_json(&name, 2)).unwrap()),
                );
                for _ in 0..3 {
                    sim.step(true);
                }
                if matches!(sim.replies.get(&id), Some(Reply::Deployed(Ok(_)))) {
                    expected.insert(name);
                }
            }
        }
        sim.crash(victim);
        for _ in 0..20 {
            sim.step(true);
        }
        let remove = format!("svc-{:04}", sim.rng.random_range(0..services));
        let from = sim.rng.random_range(0..nodes);
        if sim.up(from) && expected.contains(&remove) {
            let id = sim.request(from, Request::Remove(remove.clone()));
            for _ in 0..3 {
                sim.step(true);
            }
            if matches!(sim.replies.get(&id), Some(Reply::Written(Ok(_)))) {
                expected.remove(&remove);
            }
        }
        sim.restart(victim, seed * 31 + round as u64);
        // With lagged membership, long enough for the majority side to
        // take over what the other side stopped (the margin is about 45
        // ticks).
        for _ in 0..if lagged { 80 } else { 10 } {
            sim.step(true);
        }
        sim.heal();
        outcome
            .rounds
            .push(sim.converge(seed, round + 1, &expected, false));
        // (With lagged membership a node learns of the twin late; the
        // clash is the instant model's.)
        if round == 0 && nodes > 2 && !lagged {
            // A second host takes a live node's name for a while.
            let twin = sim.rng.random_range(0..nodes);
            let name = sim.hosts[twin].name.clone();
            let addr = SocketAddr::from(([10, 9, 9, 9], 7946));
            let mut host = Host::new(name.clone(), addr, seed, true, sim.tick);
            host.incarnation = 1;
            sim.hosts.push(host);
            sim.topology += 1;
            sim.clash = Some(name);
            // New slots while the name is shared: some are placed on it.
            let names: Vec<String> = (0..10).map(|k| format!("twin-{k}")).collect();
            let text = format!(
                "[{}]",
                names
                    .iter()
                    .map(|n| spec_json(n, 2))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let id = sim.request(
                (twin + 1) % nodes,
                Request::Deploy(parse_specs(&text).unwrap()),
            );
            sim.step(false);
            if matches!(sim.replies.get(&id), Some(Reply::Deployed(Ok(_)))) {
                expected.extend(names);
            }
            for _ in 0..20 {
                sim.step(false);
            }
            sim.clash = None;
            let twin = sim.hosts.len() - 1;
            sim.crash(twin);
            sim.hosts.pop();
            sim.topology += 1;
            outcome
                .rounds
                .push(sim.converge(seed, round + 1, &expected, false));
        }
    }
    assert!(
        sim.dropped > 0 && sim.delivered > 0,
        "the loss knob had no effect"
    );
    outcome.failed = sim.failed;
    outcome.saves_failed = sim.saves_failed;
    outcome.writes_not_saved = sim
        .replies
        .values()
        .filter(|r| {
            matches!(
                r,
                Reply::Deployed(Err(OpError::NotSaved(_)))
                    | Reply::Written(Err(OpError::NotSaved(_)))
            )
        })
        .count() as u64;
    outcome.refused = sim
        .hosts
        .iter()
        .filter_map(|h| h.node.as_ref())
        .map(|n| n.stats().refused)
        .sum();
    outcome
}

fn run_seeds(nodes: usize, services: usize, seeds: u64, rounds: usize, lagged: bool) {
    let started = std::time::Instant::now();
    // Seeds are independent: every core takes the next one until none is left.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicU64::new(0);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    std::iter::from_fn(|| {
                        let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        (seed < seeds).then(|| run(seed, nodes, services, rounds, lagged))
                    })
                    .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut rounds_all: Vec<u64> = outcomes
        .iter()
        .flat_map(|o| o.rounds.iter().copied())
        .collect();
    rounds_all.sort_unstable();
    let refused: u64 = outcomes.iter().map(|o| o.refused).sum();
    let joined: usize = outcomes.iter().map(|o| o.moved_to_joined).sum();
    let mut bulk: Vec<u64> = outcomes.iter().map(|o| o.bulk_rounds).collect();
    bulk.sort_unstable();
    let failed: u64 = outcomes.iter().map(|o| o.failed).sum();
    let saves_failed: u64 = outcomes.iter().map(|o| o.saves_failed).sum();
    let not_saved: u64 = outcomes.iter().map(|o| o.writes_not_saved).sum();
    eprintln!(
        "sim: {nodes} nodes x {services} services, {seeds} seeds, {} convergences: rounds to converge min {} median {} max {}; bulk deploy reached every node in {} / {} / {} rounds; {joined} slots rebalanced to joined nodes; {refused} collected records refused on merge; {saves_failed} saves failed, {not_saved} operator writes refused for it; wall {:.1} s",
        rounds_all.len(),
        rounds_all[0],
        rounds_all[rounds_all.len() / 2],
        rounds_all[rounds_all.len() - 1],
        bulk[0],
        bulk[bulk.len() / 2],
        bulk[bulk.len() - 1],
        started.elapsed().as_secs_f64(),
    );
    if seeds >= 20 {
        assert!(
            failed > 0,
            "no instance ever failed for good: the knob had no effect"
        );
        assert!(
            refused > 0,
            "no peer ever sent a collected record back: the GC knob had no effect"
        );
        assert!(
            not_saved > 0,
            "no operator write was refused for a failed save: the disk knob had no effect"
        );
    }
}

#[test]
fn converges_after_partitions_crashes_and_loss() {
    run_seeds(
        env_or("MOB_SIM_NODES", 20),
        env_or("MOB_SIM_SERVICES", 200),
        env_or("MOB_SIM_SEEDS", 200) as u64,
        env_or("MOB_SIM_ROUNDS", 3),
        false,
    );
}

/// At-most-once services only, with membership as slow and asymmetric
/// as SWIM's and stops that take their time: the side that lost the
/// majority stops before the other side starts, in every partition.
#[test]
fn at_most_once_slots_never_run_twice_with_slow_detection() {
    run_seeds(
        env_or("MOB_SIM_NODES", 7),
        env_or("MOB_SIM_SERVICES", 40),
        env_or("MOB_SIM_SEEDS", 100) as u64,
        env_or("MOB_SIM_ROUNDS", 3),
        true,
    );
}

/// A service updated by rolling updates: `replicas` slots, `max_parallel`
/// at a time, healthy 300 ms (3 ticks) before the next goes; `round`
/// tells its versions apart.
fn rolling_spec_json(name: &str, replicas: u32, max_parallel: u32, round: usize) -> String {
    format!(
        r#"{{"name":"{name}","provider":"exec","replicas":{replicas},"env":{{"ROUND":"{round}"}},"update":{{"max_parallel":{max_parallel},"min_healthy_time":"300ms","healthy_deadline":"60s"}},"params":{{"command":"x"}}}}"#
    )
}

/// Rolling updates under partitions, a crash and restart with the saved
/// table, instance crashes and message loss: never more than
/// `max_parallel` slots of a service down for the update at any step, and
/// after each heal every slot runs the service's instance version.
fn rolling(seed: u64) -> BTreeMap<String, usize> {
    const NODES: usize = 5;
    let victim = 1 + seed as usize % (NODES - 1);
    let mut sim = Sim::new(seed, NODES, 0.05, &BTreeSet::from([victim]));
    let services = [("roll-one", 4, 1), ("roll-two", 6, 2), ("roll-all", 3, 0)];
    let deploy = |sim: &mut Sim, round: usize| {
        let text = format!(
            "[{}]",
            services
                .iter()
                .map(|(name, replicas, parallel)| rolling_spec_json(
                    name, *replicas, *parallel, round
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        let from = (0..NODES).find(|i| sim.up(*i)).unwrap_or(0);
        let id = sim.request(from, Request::Deploy(parse_specs(&text).unwrap()));
        for _ in 0..3 {
            sim.step(false);
        }
        assert!(
            matches!(sim.replies.get(&id), Some(Reply::Deployed(Ok(_)))),
            "seed {seed}: round {round}'s deploy was not acknowledged: {:?}",
            sim.replies.get(&id)
        );
    };
    for (name, _, parallel) in services {
        sim.rolling.insert(name.to_owned(), parallel);
    }
    let expected: BTreeSet<String> = services.iter().map(|(n, ..)| n.to_string()).collect();
    deploy(&mut sim, 0);
    sim.converge(seed, 0, &expected, false);
    for round in 1..=4 {
        deploy(&mut sim, round);
        match round % 4 {
            1 => sim.partition(2),
            2 => sim.crash(victim),
            _ => {}
        }
        for _ in 0..15 {
            sim.step(true);
        }
        if !sim.up(victim) {
            sim.restart(victim, seed * 31 + round as u64);
        }
        sim.heal();
        sim.converge(seed, round, &expected, false);
    }
    sim.rolling_down
}

#[test]
fn rolling_updates_take_max_parallel_slots_at_a_time_and_end_on_one_version() {
    let seeds = env_or("MOB_SIM_SEEDS", 40) as u64;
    let mut most: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..seeds {
        for (service, n) in rolling(seed) {
            let m = most.entry(service).or_default();
            *m = (*m).max(n);
        }
    }
    // The rollouts happened: slots went down for them (all at once for
    // max_parallel 0), and never more than allowed (checked per step).
    assert_eq!(most.get("roll-one"), Some(&1), "{most:?}");
    assert_eq!(most.get("roll-two"), Some(&2), "{most:?}");
    assert!(most.get("roll-all").is_some_and(|n| *n >= 2), "{most:?}");
}

#[test]
#[ignore = "large: 1,000 nodes x 10,000 services, minutes"]
fn a_thousand_nodes_and_ten_thousand_services_converge() {
    run_seeds(1000, 10_000, 1, env_or("MOB_SIM_ROUNDS", 1), false);
}
