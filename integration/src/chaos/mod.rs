//! Chaos runs: real agents, each on its own network-namespace host, faults
//! drawn at random from a seed, operator writes issued during them, and
//! mob's promises checked after every heal.
//!
//! # Layout
//! - [`fault`]: [`Fault`], drawn from the seed, begun and ended on the
//!   cluster (kill -9, graceful stop, wiped data dir, SIGSTOP, partition,
//!   one-way loss, clock skew, a full disk, CPU saturation, a flooded
//!   gossip port).
//! - [`workload`]: [`workload::Workload`], the operator's deploys, updates,
//!   scales, stops, starts and removes, and what each acknowledged one must
//!   leave.
//! - [`invariant`]: the promises, counted from the agents' answers and the
//!   machine's processes; [`invariant::OnceSampler`] watches at-most-once
//!   services through the faults.
//!
//! A round is: one fault begun, a few writes at random live agents, the
//! fault ended (the agent started again, the link healed, the loops
//! killed), then every promise polled until it holds (at most
//! [`Config::heal_within`]) and checked again a second later. Every fault
//! and write is logged with the time since the start, so a seed replays
//! the same run.

pub mod fault;
pub mod invariant;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

pub use fault::Fault;

use crate::{Agent, AgentSpec, Netns, all_see_alive, new_key_file, wait_until};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Draws every fault and write.
    pub seed: u64,
    /// Hosts, one agent each.
    pub hosts: usize,
    /// Stop after this many rounds…
    pub rounds: Option<usize>,
    /// …or once this much time has passed.
    pub duration: Option<Duration>,
    /// How long the promises may take to hold after a heal.
    pub heal_within: Duration,
    /// How long CPU saturation and floods last.
    pub fault_secs: u64,
    /// Writes issued during each fault.
    pub writes_per_round: usize,
    /// Stop at the first violation (the CI test), or count them (the long
    /// run).
    pub stop_at_violation: bool,
}

impl Config {
    /// `rounds` rounds on 5 hosts, stopping at the first violation.
    pub fn rounds(seed: u64, rounds: usize) -> Self {
        Self {
            seed,
            hosts: 5,
            rounds: Some(rounds),
            duration: None,
            heal_within: Duration::from_secs(20),
            fault_secs: 5,
            writes_per_round: 3,
            stop_at_violation: true,
        }
    }
}

/// The agents and their hosts.
pub struct Cluster {
    /// The hosts.
    pub net: Netns,
    /// One agent per host, `h1`… on host 1….
    pub agents: Vec<Agent>,
    started: Instant,
    /// Every fault, write and heal, with its time.
    pub journal: Vec<String>,
    mounts: Vec<std::path::PathBuf>,
    dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The agents first: their data dirs are the tmpfs mounts.
        self.agents.clear();
        for mount in &self.mounts {
            let _ = std::process::Command::new("umount").arg(mount).status();
        }
    }
}

impl Cluster {
    /// Starts `hosts` agents, each joining all the others, and waits for
    /// them to see each other.
    pub fn start(tag: &str, hosts: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let net = Netns::up(tag, hosts)?;
        let key = new_key_file(&dir.path().join("cluster.key"))?;
        let gossip = |i: usize| SocketAddr::new(net.ip(i), 7946);
        // Each data dir on a tmpfs of its own, which a fault fills up.
        let mut mounts = Vec::new();
        for i in 1..=hosts {
            let state = dir.path().join(format!("h{i}-state"));
            std::fs::create_dir_all(&state)?;
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
                .arg(&state)
                .status()?;
            anyhow::ensure!(mounted.success(), "mounting a tmpfs on {}", state.display());
            mounts.push(state);
        }
        let agents = (1..=hosts)
            .map(|i| {
                let mut spec = AgentSpec::local(&format!("h{i}"), dir.path(), &key);
                spec.state_dir = Some(mounts[i - 1].clone());
                spec.bind = gossip(i);
                spec.netns = Some(net.ns(i));
                // Every other host is a seed: whichever restarts finds one.
                spec.join = (1..=hosts).filter(|j| *j != i).map(gossip).collect();
                Agent::start(spec)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let names: Vec<String> = agents.iter().map(|a| a.name().to_owned()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        wait_until("the cluster to form", Duration::from_secs(30), || {
            all_see_alive(&agents, &names)
        })?;
        Ok(Self {
            net,
            agents,
            started: Instant::now(),
            journal: Vec::new(),
            mounts,
            dir,
        })
    }

    /// Logs a line of the run, with the time since the start.
    pub fn note(&mut self, line: &str) {
        let line = format!("[{:7.2} s] {line}", self.started.elapsed().as_secs_f64());
        eprintln!("chaos: {line}");
        self.journal.push(line);
    }

    /// Prints every agent's log (for a failure).
    pub fn dump_logs(&self) {
        for agent in &self.agents {
            agent.dump_log();
        }
    }

    /// How many times each agent logged `member down` about `host`.
    fn downs_about(&self, host: &str) -> usize {
        self.agents
            .iter()
            .filter(|a| a.name() != host)
            .map(|a| {
                a.log_events("member down")
                    .iter()
                    .filter(|e| e["node"] == host)
                    .count()
            })
            .sum()
    }
}

/// What a run did and found.
#[derive(Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Rounds run.
    pub rounds: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Writes by kind: acknowledged, not.
    pub writes: BTreeMap<&'static str, (usize, usize)>,
    /// Time from each heal to every promise holding.
    pub heals: Vec<Duration>,
    /// Promises broken, in words, with the round and fault.
    pub violations: Vec<String>,
    /// Live agents declared down by a pause under 1.5 s or by CPU
    /// saturation.
    pub false_downs: Vec<String>,
    /// Pauses under 1.5 s and CPU saturations checked for false downs.
    pub pauses_checked: usize,
    /// Samples of the at-most-once watch.
    pub once_samples: u64,
    /// Rounds in which the first service's check failed for a while.
    pub flaps: usize,
    /// `instance unhealthy` lines the agents logged.
    pub unhealthy: usize,
    /// Wall time of the run.
    pub took: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut heals = self.heals.clone();
        heals.sort_unstable();
        let at = |q: f64| {
            heals
                .get(((heals.len().saturating_sub(1)) as f64 * q).round() as usize)
                .map_or(0.0, Duration::as_secs_f64)
        };
        writeln!(
            f,
            "chaos: seed {}, {} rounds in {:.0} s",
            self.seed,
            self.rounds,
            self.took.as_secs_f64()
        )?;
        writeln!(f, "faults injected:")?;
        for (kind, n) in &self.faults {
            writeln!(f, "  {kind:<16} {n}")?;
        }
        writeln!(f, "writes (acknowledged / not):")?;
        for (kind, (acked, not)) in &self.writes {
            writeln!(f, "  {kind:<16} {acked} / {not}")?;
        }
        writeln!(
            f,
            "heal -> every promise holding: median {:.2} s, max {:.2} s ({} heals)",
            at(0.5),
            at(1.0),
            heals.len()
        )?;
        writeln!(
            f,
            "false downs: {} (of {} short pauses and saturations); at-most-once samples: {}",
            self.false_downs.len(),
            self.pauses_checked,
            self.once_samples
        )?;
        writeln!(
            f,
            "check flapped in {} rounds: {} instances turned unhealthy",
            self.flaps, self.unhealthy
        )?;
        for line in &self.false_downs {
            writeln!(f, "  false down: {line}")?;
        }
        writeln!(f, "violations: {}", self.violations.len())?;
        for line in &self.violations {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Runs `config` on a fresh cluster.
pub fn run(config: &Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut cluster = Cluster::start("x", config.hosts)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let marker_base = 4_000_000 + u64::from(std::process::id() % 1_000) * 1_000;
    let flag = cluster.dir.path().join("check-passes");
    std::fs::write(&flag, b"")?;
    let mut workload = workload::Workload::new(marker_base, flag);
    let mut sampler = invariant::OnceSampler::start();
    let mut report = Report {
        seed: config.seed,
        ..Report::default()
    };
    cluster.note(&format!("seed {}, {} hosts", config.seed, config.hosts));
    let result = rounds(
        config,
        &mut cluster,
        &mut rng,
        &mut workload,
        &sampler,
        &mut report,
    );
    report.once_samples = sampler.stop();
    if let Ok(seen) = sampler.seen_twice.lock() {
        report.violations.extend(
            seen.iter()
                .map(|s| format!("at-most-once service ran twice: {s}")),
        );
    }
    for (op, acked) in &workload.issued {
        let entry = report.writes.entry(op.kind()).or_default();
        if *acked {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    report.unhealthy = cluster
        .agents
        .iter()
        .map(|a| a.log_events("instance unhealthy").len())
        .sum();
    report.took = started.elapsed();
    if result.is_err() || !report.violations.is_empty() {
        eprintln!("chaos: seed {} journal:", config.seed);
        for line in &cluster.journal {
            eprintln!("  {line}");
        }
        cluster.dump_logs();
    }
    result.map(|()| report)
}

fn rounds(
    config: &Config,
    cluster: &mut Cluster,
    rng: &mut StdRng,
    workload: &mut workload::Workload,
    sampler: &invariant::OnceSampler,
    report: &mut Report,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let done_rounds = config.rounds.is_some_and(|n| report.rounds >= n);
        let done_time = config.duration.is_some_and(|d| started.elapsed() >= d);
        if done_rounds || done_time {
            return Ok(());
        }
        let round = report.rounds;
        report.rounds += 1;
        let fault = Fault::pick(rng, config.hosts, config.fault_secs);
        *report.faults.entry(fault.kind()).or_default() += 1;
        cluster.note(&format!("round {round}: {fault:?}"));
        // A short pause, or a saturation, must not get anyone declared down.
        let watched: Option<Vec<String>> = match &fault {
            Fault::Freeze { host, ms } if *ms < 1_500 => Some(vec![format!("h{}", host + 1)]),
            Fault::Cpu { .. } => Some(cluster.agents.iter().map(|a| a.name().to_owned()).collect()),
            _ => None,
        };
        let downs_before: Vec<usize> = watched
            .iter()
            .flatten()
            .map(|h| cluster.downs_about(h))
            .collect();
        // Long enough for the cluster to act on it: a dead agent declared
        // down and its slots moved, both sides of a cut going on alone.
        let hold = Duration::from_millis(match &fault {
            Fault::Freeze { ms, .. } => *ms,
            Fault::Cpu { secs } | Fault::Flood { secs, .. } => secs * 1_000,
            _ => rng.random_range(2_000..=8_000),
        });
        let until = Instant::now() + hold;
        let ongoing = fault::begin(cluster, &fault, config.seed ^ round as u64)
            .with_context(|| format!("beginning {fault:?}"))?;
        // (Not the skewed agent either: a write stamped by a clock ahead
        // wins over later ones, as last-writer-wins says, and the model
        // would call the later ones lost.)
        let unusable = match &fault {
            Fault::Kill { host }
            | Fault::Stop { host }
            | Fault::Wipe { host }
            | Fault::Freeze { host, .. }
            | Fault::Skew { host, .. } => Some(*host),
            _ => None,
        };
        // Now and then the first service's check fails for up to 3 s of
        // the fault: its instances turn unhealthy and are restarted. (Not
        // longer: restarts back off, up to 30 s, which would outlast the
        // time the promises have after the heal.)
        let flapping = (round > 0 && rng.random_range(0..4) == 0).then(|| {
            let flag = workload.check_flag.clone();
            let flap = hold.min(Duration::from_secs(3));
            std::thread::spawn(move || {
                std::thread::sleep(flap);
                std::fs::write(&flag, b"")
            })
        });
        if flapping.is_some() {
            report.flaps += 1;
            std::fs::remove_file(&workload.check_flag)?;
            cluster.note("  c0's check fails for up to 3 s");
        }
        let gap = hold / (config.writes_per_round as u32 + 1);
        for _ in 0..config.writes_per_round {
            std::thread::sleep(gap);
            let op = workload.pick(rng);
            let at = loop {
                let i = rng.random_range(0..config.hosts);
                if Some(i) != unusable {
                    break i;
                }
            };
            workload.issue(&cluster.agents[at], op.clone());
            let acked = workload.issued.last().is_some_and(|(_, a)| *a);
            cluster.note(&format!(
                "  {} at h{}: {}",
                describe(&op),
                at + 1,
                if acked {
                    "acknowledged"
                } else {
                    "not acknowledged"
                }
            ));
            if let workload::Op::Deploy {
                name, once: true, ..
            } = &op
                && let (Some(service), Ok(mut markers)) =
                    (workload.services.get(name), sampler.markers.lock())
            {
                markers.push((name.clone(), service.marker.clone()));
            }
        }
        if let Some(left) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        if let Some(restored) = flapping {
            restored
                .join()
                .map_err(|_| anyhow::anyhow!("the check flag's thread panicked"))??;
        }
        fault::end(cluster, ongoing).with_context(|| format!("ending {fault:?}"))?;
        let healed = Instant::now();
        cluster.note("  healed");
        let mut last = None;
        let held = wait_until("every promise", config.heal_within, || {
            last = invariant::violated(cluster, workload)?;
            Ok(last.is_none())
        });
        let broken = match held {
            Ok(_) => {
                report.heals.push(healed.elapsed());
                cluster.note(&format!(
                    "  every promise holds {:.2} s after the heal",
                    healed.elapsed().as_secs_f64()
                ));
                // And still a second later, for what may not change by
                // then (slots may: rebalancing moves them drain-style to a
                // node that came back).
                std::thread::sleep(Duration::from_secs(1));
                invariant::settled(cluster, workload)?
                    .map(|v| format!("{v} (a second after it held)"))
            }
            Err(e) => Some(last.unwrap_or_else(|| format!("{e:#}"))),
        };
        if let Some(v) = broken {
            let line = format!("seed {} round {round} ({fault:?}): {v}", config.seed);
            cluster.note(&format!("  VIOLATED: {line}"));
            report.violations.push(line);
            if config.stop_at_violation {
                return Ok(());
            }
        }
        if let Some(hosts) = watched {
            report.pauses_checked += 1;
            for (host, before) in hosts.iter().zip(downs_before) {
                let after = cluster.downs_about(host);
                if after > before {
                    report.false_downs.push(format!(
                        "{host} declared down {} times during round {round} ({fault:?})",
                        after - before
                    ));
                }
            }
        }
    }
}

fn describe(op: &workload::Op) -> String {
    match op {
        workload::Op::Deploy {
            name,
            replicas,
            once,
        } => format!(
            "deploy {name} ({replicas} slots{})",
            if *once { ", at-most-once" } else { "" }
        ),
        workload::Op::Scale { name, replicas } => format!("scale {name} {replicas}"),
        other => format!("{} {}", other.kind(), other.service()),
    }
}
