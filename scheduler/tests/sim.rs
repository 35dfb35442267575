//! Deterministic simulation: N virtual nodes run the real `reconcile` and
//! the real table merge over a lossy network with partitions, crashes and
//! restarts, in virtual time (one tick = one gossip round, ~100 ms).
//!
//! Three times: a partition (deploys and removes on every side), a crash and
//! a restart, then a heal. After each heal every node is up and connected;
//! the simulation runs until the invariants hold (or fails after a round
//! limit), then checks that they keep holding through a quiet period:
//! - no service is lost: every node's table holds every live service;
//! - every slot of every live service is owned by exactly one live,
//!   eligible node, and runs there;
//! - no node runs an instance it doesn't own.
//!
//! CI runs 200 seeds at 20 nodes x 200 services (~160 s on 2 cores).
//! `MOB_SIM_NODES`, `MOB_SIM_SERVICES` and `MOB_SIM_SEEDS` size other runs,
//! e.g.
//! `MOB_SIM_NODES=1000 MOB_SIM_SERVICES=50 MOB_SIM_SEEDS=1 cargo test --release -p mob-scheduler --test sim -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mob_scheduler::placement::{Members, eligible};
use mob_scheduler::reconcile::{Action, reconcile};
use mob_scheduler::record::{
    Claim, InstanceState, NodeRecord, ServiceRecord, Status, Value, claim_key, node_key,
    service_key, status_key,
};
use mob_scheduler::spec::{ProviderKind, ServiceSpec};
use mob_scheduler::spec_file::parse_specs;
use mob_scheduler::{Clock, Record, Table};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const TICK_MS: u64 = 100;
/// Anti-entropy every this many ticks per node.
const AE_EVERY: u64 = 20;
/// Reconcile at least every this many ticks, changes or not.
const RECONCILE_EVERY: u64 = 10;

struct Node {
    name: String,
    up: bool,
    group: usize,
    table: Table,
    clock: Clock,
    /// Instances running here: slot -> version.
    running: BTreeMap<(String, u32), u64>,
    dirty: bool,
}

/// A delta in flight: (deliver at tick, to node, records).
type Message = (u64, usize, Vec<(String, Record)>);

struct Sim {
    rng: StdRng,
    nodes: Vec<Node>,
    now: u64,
    tick: u64,
    loss: f64,
    /// (deliver at tick, to, records)
    inflight: VecDeque<Message>,
    dropped: u64,
    delivered: u64,
}

impl Sim {
    fn new(seed: u64, n: usize, loss: f64) -> Self {
        let mut sim = Self {
            rng: StdRng::seed_from_u64(seed),
            nodes: (0..n)
                .map(|i| Node {
                    name: format!("n{i:04}"),
                    up: true,
                    group: 0,
                    table: Table::new(),
                    clock: Clock::new(format!("n{i:04}")),
                    running: BTreeMap::new(),
                    dirty: true,
                })
                .collect(),
            now: 1_000_000,
            tick: 0,
            loss,
            inflight: VecDeque::new(),
            dropped: 0,
            delivered: 0,
        };
        for i in 0..n {
            let record = NodeRecord {
                addr: String::new(),
                providers: vec![ProviderKind::Exec, ProviderKind::Shell],
                tags: BTreeMap::new(),
                draining: false,
                drain_started_ms: 0,
                leaving: false,
                version: "sim".into(),
                started_at_ms: 0,
            };
            sim.write(i, node_key(&format!("n{i:04}")), Value::Node(record));
        }
        sim
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        a != b && self.nodes[a].up && self.nodes[b].up && self.nodes[a].group == self.nodes[b].group
    }

    fn members(&self, i: usize) -> Members {
        Members::new(
            (0..self.nodes.len())
                .filter(|j| *j == i || self.reachable(i, *j))
                .map(|j| self.nodes[j].name.clone()),
        )
    }

    /// A local write, sent at once as a delta to every reachable node.
    fn write(&mut self, i: usize, key: String, value: Value) {
        let ts = self.nodes[i].clock.tick(self.now);
        let record = Record { ts, value };
        self.nodes[i].table.apply(key.clone(), record.clone());
        self.nodes[i].dirty = true;
        for j in 0..self.nodes.len() {
            if !self.reachable(i, j) {
                continue;
            }
            if self.rng.random_bool(self.loss) {
                self.dropped += 1;
            } else {
                self.inflight
                    .push_back((self.tick + 1, j, vec![(key.clone(), record.clone())]));
            }
        }
    }

    fn merge_into(&mut self, j: usize, records: Vec<(String, Record)>) {
        let node = &mut self.nodes[j];
        for (k, r) in records {
            node.clock.observe(&r.ts);
            if node.table.apply(k, r) {
                node.dirty = true;
            }
        }
    }

    fn deploy(&mut self, from: usize, json: &str) {
        let spec = parse_specs(json).unwrap().remove(0);
        let version = match self.nodes[from]
            .table
            .get(&service_key(&spec.name))
            .map(|r| &r.value)
        {
            Some(Value::Service(s)) => s.version + 1,
            _ => 1,
        };
        self.write(
            from,
            service_key(&spec.name),
            Value::Service(ServiceRecord {
                version,
                spec: Some(spec),
            }),
        );
    }

    fn status(&mut self, i: usize, service: &str, slot: u32, state: InstanceState, version: u64) {
        let status = Status {
            state,
            pid: Some(1),
            restarts: 0,
            since_ms: self.now,
            last_exit: None,
            last_signal: None,
            version,
        };
        let key = status_key(&self.nodes[i].name.clone(), service, slot);
        self.write(i, key, Value::Status(status));
    }

    fn step(&mut self) {
        self.tick += 1;
        self.now += TICK_MS;
        while self
            .inflight
            .front()
            .is_some_and(|(at, _, _)| *at <= self.tick)
        {
            let Some((_, to, records)) = self.inflight.pop_front() else {
                break;
            };
            if self.nodes[to].up {
                self.delivered += 1;
                self.merge_into(to, records);
            }
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                continue;
            }
            // Anti-entropy with one random reachable peer, both ways.
            if (self.tick + i as u64).is_multiple_of(AE_EVERY) {
                let peers: Vec<usize> = (0..self.nodes.len())
                    .filter(|j| self.reachable(i, *j))
                    .collect();
                if !peers.is_empty() {
                    let j = peers[self.rng.random_range(0..peers.len())];
                    // The agent's exchange: digests, then the records of
                    // the buckets that differ, both ways.
                    let (ours, theirs) =
                        (self.nodes[i].table.digest(), self.nodes[j].table.digest());
                    if ours != theirs {
                        // Records of equal buckets are equal: merging the
                        // whole tables gives what the bucket exchange gives.
                        let (low, high) = self.nodes.split_at_mut(i.max(j));
                        let (a, b) = if i < j {
                            (&mut low[i], &mut high[0])
                        } else {
                            (&mut high[0], &mut low[j])
                        };
                        observe_all(&mut a.clock, &b.table);
                        observe_all(&mut b.clock, &a.table);
                        a.dirty |= !a.table.merge(&b.table).is_empty();
                        b.dirty |= !b.table.merge(&a.table).is_empty();
                    }
                }
            }
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up
                || !(self.nodes[i].dirty || (self.tick + i as u64).is_multiple_of(RECONCILE_EVERY))
            {
                continue;
            }
            self.nodes[i].dirty = false;
            let members = self.members(i);
            let me = self.nodes[i].name.clone();
            for action in reconcile(&self.nodes[i].table, &members, &me, self.now) {
                self.execute(i, &me, action);
            }
        }
    }

    fn execute(&mut self, i: usize, me: &str, action: Action) {
        match action {
            Action::Claim {
                service,
                slot,
                version,
                failed_on,
                ..
            } => {
                let claim = Claim {
                    owner: Some(me.to_owned()),
                    failed_on,
                    version,
                };
                self.write(i, claim_key(&service, slot), Value::Claim(claim));
            }
            Action::Release {
                service,
                slot,
                version,
                failed_on,
                ..
            } => {
                let claim = Claim {
                    owner: None,
                    failed_on,
                    version,
                };
                self.write(i, claim_key(&service, slot), Value::Claim(claim));
            }
            Action::Start {
                slot,
                version,
                spec,
            } => {
                let key = (spec.name.clone(), slot);
                if self.nodes[i].running.get(&key) != Some(&version) {
                    self.nodes[i].running.insert(key, version);
                    self.status(i, &spec.name, slot, InstanceState::Running, version);
                }
            }
            Action::Stop { service, slot, .. } => {
                let was = self.nodes[i].running.remove(&(service.clone(), slot));
                let recorded = matches!(self.nodes[i].table.get(&status_key(me, &service, slot)).map(|r| &r.value),
                    Some(Value::Status(s)) if s.state.is_active());
                if was.is_some() || recorded {
                    self.status(i, &service, slot, InstanceState::Stopped, was.unwrap_or(0));
                }
            }
            Action::ForgetStatus { key } => self.write(i, key, Value::Tombstone),
        }
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.nodes[i].running.clear();
        for n in &mut self.nodes {
            n.dirty = true;
        }
    }

    fn restart(&mut self, i: usize) {
        // The table survives (it is on disk); instances don't.
        self.nodes[i].up = true;
        self.nodes[i].running.clear();
        for n in &mut self.nodes {
            n.dirty = true;
        }
    }

    fn partition(&mut self, groups: usize) {
        for i in 0..self.nodes.len() {
            self.nodes[i].group = self.rng.random_range(0..groups);
            self.nodes[i].dirty = true;
        }
    }

    fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
            n.dirty = true;
        }
    }

    /// The first invariant that fails, if any.
    fn violation(&self, expected_services: &BTreeSet<String>) -> Option<String> {
        let first = self.nodes.iter().find(|n| n.up)?;
        let reference = &first.table;
        // Equal digests mean equal tables: compare only the others.
        let digest = reference.digest();
        let differing: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.up && n.table.digest() != digest)
            .collect();
        let others = differing.iter().map(|n| (n.name.as_str(), &n.table));
        for (name, table) in std::iter::once((first.name.as_str(), reference)).chain(others) {
            let names: BTreeSet<&str> =
                live_services(table).map(|(s, _)| s.name.as_str()).collect();
            if !names
                .iter()
                .copied()
                .eq(expected_services.iter().map(String::as_str))
            {
                return Some(format!("{name} holds services {names:?}"));
            }
        }
        let mut owners: BTreeMap<(String, u32), usize> = BTreeMap::new();
        for (spec, _) in live_services(reference) {
            for slot in 0..spec.replicas {
                let key = claim_key(&spec.name, slot);
                let claim = std::iter::once(reference)
                    .chain(differing.iter().map(|n| &n.table))
                    .map(|table| match table.get(&key).map(|r| &r.value) {
                        Some(Value::Claim(c)) => c.owner.clone(),
                        _ => None,
                    });
                let seen: BTreeSet<Option<String>> = claim.collect();
                if seen.len() != 1 {
                    return Some(format!(
                        "{}/{slot}: nodes disagree on the owner: {seen:?}",
                        spec.name
                    ));
                }
                let Some(Some(owner)) = seen.into_iter().next() else {
                    return Some(format!("{}/{slot} has no owner", spec.name));
                };
                let Some(idx) = self.nodes.iter().position(|n| n.name == owner && n.up) else {
                    return Some(format!(
                        "{}/{slot} owned by {owner}, which is down",
                        spec.name
                    ));
                };
                let members = self.members(idx);
                if !eligible(reference, &members, spec, &owner) {
                    return Some(format!("{}/{slot} owned by ineligible {owner}", spec.name));
                }
                owners.insert((spec.name.clone(), slot), idx);
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            for key in n.running.keys() {
                if owners.get(key) != Some(&i) {
                    return Some(format!("{} runs {key:?} which it doesn't own", n.name));
                }
            }
        }
        for (key, idx) in &owners {
            if !self.nodes[*idx].running.contains_key(key) {
                return Some(format!(
                    "{key:?} is not running on its owner {}",
                    self.nodes[*idx].name
                ));
            }
        }
        None
    }
}

/// Live services of a table, without copying them.
fn live_services(table: &Table) -> impl Iterator<Item = (&ServiceSpec, u64)> {
    table
        .services()
        .filter_map(|(_, _, s)| s.spec.as_ref().map(|spec| (spec, s.version)))
}

impl Sim {
    /// After a heal: steps until every invariant holds (600 rounds at
    /// most), then checks they keep holding through a quiet period.
    /// Returns the rounds it took.
    fn converge(&mut self, seed: u64, heal: usize, expected: &BTreeSet<String>) -> u64 {
        const LIMIT: u64 = 600;
        const QUIET: usize = 20;
        let start = self.tick;
        loop {
            self.step();
            match self.violation(expected) {
                None => break,
                Some(v) if self.tick - start > LIMIT => {
                    panic!("seed {seed}: not converged {LIMIT} rounds after heal {heal}: {v}")
                }
                Some(_) => {}
            }
        }
        let rounds = self.tick - start;
        for _ in 0..QUIET {
            self.step();
            if let Some(v) = self.violation(expected) {
                panic!("seed {seed}: diverged again after heal {heal}: {v}");
            }
        }
        rounds
    }
}

fn observe_all(clock: &mut Clock, table: &Table) {
    for (_, record) in table.iter() {
        clock.observe(&record.ts);
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs one seeded scenario; returns the rounds to converge after each heal.
fn run(seed: u64, nodes: usize, services: usize) -> Vec<u64> {
    let mut sim = Sim::new(seed, nodes, 0.2);
    let mut rounds = Vec::new();
    let mut expected = BTreeSet::new();
    for s in 0..services {
        let replicas = 1 + (s % 3);
        let from = sim.rng.random_range(0..nodes);
        let name = format!("svc-{s:04}");
        sim.deploy(from, &format!(r#"{{"name":"{name}","provider":"exec","replicas":{replicas},"params":{{"command":"x"}}}}"#));
        expected.insert(name);
    }
    for _ in 0..30 {
        sim.step();
    }
    // Chaos: partitions with deploys and removes on both sides, crashes and
    // restarts.
    for round in 0..3 {
        sim.partition(2 + round % 2);
        for k in 0..5 {
            let from = sim.rng.random_range(0..nodes);
            if sim.nodes[from].up {
                let name = format!("late-{round}-{k}");
                sim.deploy(from, &format!(r#"{{"name":"{name}","provider":"exec","replicas":2,"params":{{"command":"x"}}}}"#));
                expected.insert(name);
            }
        }
        let victim = sim.rng.random_range(0..nodes);
        sim.crash(victim);
        for _ in 0..20 {
            sim.step();
        }
        let remove = format!("svc-{:04}", sim.rng.random_range(0..services));
        let from = sim.rng.random_range(0..nodes);
        if sim.nodes[from].up && expected.contains(&remove) {
            let version = match sim.nodes[from]
                .table
                .get(&service_key(&remove))
                .map(|r| &r.value)
            {
                Some(Value::Service(s)) => s.version + 1,
                _ => 1,
            };
            if sim.nodes[from].table.get(&service_key(&remove)).is_some() {
                sim.write(
                    from,
                    service_key(&remove),
                    Value::Service(ServiceRecord {
                        version,
                        spec: None,
                    }),
                );
                expected.remove(&remove);
            }
        }
        sim.restart(victim);
        for _ in 0..10 {
            sim.step();
        }
        sim.heal();
        rounds.push(sim.converge(seed, round, &expected));
    }
    assert!(
        sim.dropped > 0 && sim.delivered > 0,
        "the loss knob had no effect"
    );
    rounds
}

#[test]
fn converges_after_partitions_crashes_and_loss() {
    let nodes = env_or("MOB_SIM_NODES", 20);
    let services = env_or("MOB_SIM_SERVICES", 200);
    let seeds = env_or("MOB_SIM_SEEDS", 200) as u64;
    // Seeds are independent: every core takes the next one until none is
    // left.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicU64::new(0);
    let mut rounds: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    std::iter::from_fn(|| {
                        let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        (seed < seeds).then(|| run(seed, nodes, services))
                    })
                    .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .flatten()
            .collect()
    });
    rounds.sort_unstable();
    eprintln!(
        "sim: {nodes} nodes x {services} services, {seeds} seeds x 3 heals: rounds to converge after a heal min {} median {} max {}",
        rounds[0],
        rounds[rounds.len() / 2],
        rounds[rounds.len() - 1]
    );
}
