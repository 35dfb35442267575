//! Failure detection, mob next to Serf: 5 agents of each on loopback,
//! kill -9 of one until the first and until every survivor reports it
//! failed, then a graceful leave of another until every survivor reports
//! it left. Trials interleave the systems (a fresh cluster each), so a
//! noisy minute hits them alike; mob runs at its default
//! `suspect_to_down_after` (1.5 s) and at 1 s and 3 s, the trade-off an
//! operator tunes (see the false-downs part for the pause each tolerates).
//!
//! mob's times are its agents' own log timestamps; Serf's are its member
//! lists read over RPC every 10 ms ([`super::serf::POLL`]).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use super::report::{Samples, Section, ratio, samples_header};
use super::serf::{self, Rpc};
use super::{Mode, mob_delays, mob_timings};
use crate::{Agent, local_cluster_with};

/// One system's figures over the trials.
#[derive(Debug, Default, Clone)]
struct Figures {
    first: Samples,
    all: Samples,
    left: Samples,
    /// Graceful leaves some survivor reported as a failure.
    left_as_failed: usize,
}

impl Figures {
    /// Every survivor's delay to report a kill: the first and the last.
    fn record_kill(&mut self, delays: &[f64]) {
        self.first
            .push(delays.iter().copied().fold(f64::MAX, f64::min));
        self.all.push(delays.iter().copied().fold(0.0, f64::max));
    }

    /// Every survivor's delay to report a graceful leave: the last.
    fn record_leave(&mut self, delays: &[f64]) {
        self.left.push(delays.iter().copied().fold(0.0, f64::max));
    }
}

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq)]
enum System {
    Serf,
    /// mob with this `suspect_to_down_after`, in ms.
    Mob(u64),
}

impl System {
    fn label(self) -> String {
        match self {
            Self::Serf => "Serf".to_owned(),
            Self::Mob(1500) => "mob (default, suspect_to_down_after 1.5 s)".to_owned(),
            Self::Mob(ms) => format!("mob, suspect_to_down_after {:.1} s", ms as f64 / 1000.0),
        }
    }
}

/// Runs the part.
pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let trials = mode.pick(1, 10);
    let systems = [
        System::Serf,
        System::Mob(1500),
        System::Mob(1000),
        System::Mob(3000),
    ];
    let systems = if mode == Mode::Smoke {
        &systems[..2]
    } else {
        &systems[..]
    };
    let mut figures = vec![Figures::default(); systems.len()];
    for trial in 0..trials {
        // Interleaved, starting with a different system each trial.
        for k in 0..systems.len() {
            let i = (k + trial) % systems.len();
            let dir = tempfile::tempdir()?;
            let settle = Duration::from_millis(2000 + 250 * (trial as u64 % 4));
            let victim = trial % 5;
            let leaver = (trial + 1) % 5;
            match systems[i] {
                System::Serf => serf_trial(dir.path(), settle, victim, leaver, &mut figures[i])?,
                System::Mob(ms) => {
                    mob_trial(dir.path(), ms, settle, victim, leaver, &mut figures[i])?
                }
            }
            eprintln!(
                "detection trial {trial}: {}: all failed {:.2} s, all left {:.3} s",
                systems[i].label(),
                figures[i].all.0.last().copied().unwrap_or(f64::NAN),
                figures[i].left.0.last().copied().unwrap_or(f64::NAN),
            );
        }
    }
    let mut body = String::new();
    body.push_str(&samples_header("measure (s)"));
    let rows = [
        ("kill -9 → first survivor reports it failed", 0),
        ("kill -9 → all survivors report it failed", 1),
        ("graceful leave → all survivors report it left", 2),
    ];
    for (what, which) in rows {
        for (system, f) in systems.iter().zip(&figures) {
            let samples = [&f.first, &f.all, &f.left][which];
            if samples.is_empty() {
                continue;
            }
            let _ = writeln!(
                body,
                "| {what}: {} | {} |",
                system.label(),
                samples.cells(3)
            );
        }
    }
    let serf_all = figures[0].all.median();
    let _ = writeln!(
        body,
        "\n| ratio of medians, kill -9 → all (mob / Serf) | |\n|---|---|"
    );
    for (system, f) in systems.iter().zip(&figures).skip(1) {
        let _ = writeln!(
            body,
            "| {} | {} |",
            system.label(),
            ratio(f.all.median(), serf_all)
        );
    }
    let _ = writeln!(
        body,
        "\nGraceful leaves reported as failed: {}.",
        systems
            .iter()
            .zip(&figures)
            .map(|(s, f)| format!("{} {}", s.label(), f.left_as_failed))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        body,
        "\nSerf: `serf agent` with its default LAN profile, read over RPC every 10 ms \
         (its event handlers are coalesced for a second); mob: its agents' log timestamps. \
         Each trial: a fresh 5-node cluster, a settle of 2 to 2.75 s, the victims rotate."
    );
    Ok(Section {
        part: "detection".into(),
        title: "Failure detection: mob and Serf, 5 agents each".into(),
        body,
    })
}

fn mob_trial(
    dir: &Path,
    suspect_to_down_ms: u64,
    settle: Duration,
    victim: usize,
    leaver: usize,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let extra = mob_timings(dir, suspect_to_down_ms)?;
    let mut agents = local_cluster_with(dir, 5, &extra)?;
    std::thread::sleep(settle);
    let mut victim = agents.remove(victim);
    let name = victim.name().to_owned();
    let killed_at = SystemTime::now();
    victim.kill9()?;
    let delays = wait_mob(&agents, "member down", &name, killed_at)?;
    figures.record_kill(&delays);

    let leaver = leaver.min(agents.len() - 1);
    let mut leaver = agents.remove(leaver);
    let name = leaver.name().to_owned();
    let stopped_at = SystemTime::now();
    leaver.terminate()?;
    let delays = wait_mob(&agents, "member left", &name, stopped_at)?;
    figures.record_leave(&delays);
    let downs = mob_delays(&agents, "member down", "node", &name, stopped_at);
    figures.left_as_failed += usize::from(downs.iter().flatten().count() > 0);
    Ok(())
}

/// Every survivor's delay to `message` about `node`, once all have one.
fn wait_mob(
    agents: &[Agent],
    message: &str,
    node: &str,
    since: SystemTime,
) -> anyhow::Result<Vec<f64>> {
    let mut delays = Vec::new();
    crate::wait_until(
        &format!("all survivors to log {message} {node}"),
        Duration::from_secs(30),
        || {
            delays = mob_delays(agents, message, "node", node, since)
                .into_iter()
                .flatten()
                .collect();
            Ok(delays.len() == agents.len())
        },
    )?;
    Ok(delays)
}

fn serf_trial(
    dir: &Path,
    settle: Duration,
    victim: usize,
    leaver: usize,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let mut agents = serf::cluster(dir, 5, 17_946, None)?;
    std::thread::sleep(settle);
    let mut victim = agents.remove(victim);
    let killed_at = Instant::now();
    victim.kill9()?;
    let (delays, _) = wait_serf(&agents, &victim.name, "failed", killed_at)?;
    figures.record_kill(&delays);

    let leaver = leaver.min(agents.len() - 1);
    let mut leaver = agents.remove(leaver);
    let stopped_at = Instant::now();
    leaver.leave()?;
    let (delays, failed) = wait_serf(&agents, &leaver.name, "left", stopped_at)?;
    figures.record_leave(&delays);
    figures.left_as_failed += usize::from(failed);
    Ok(())
}

/// Polls every survivor's member list (one thread each) until it gives
/// `node` the `status`; returns each one's delay since `since`, and
/// whether any showed `failed` on the way.
pub(super) fn wait_serf(
    survivors: &[serf::SerfAgent],
    node: &str,
    status: &str,
    since: Instant,
) -> anyhow::Result<(Vec<f64>, bool)> {
    let deadline = since + Duration::from_secs(60);
    type Seen = (f64, bool);
    let results: Vec<anyhow::Result<Seen>> = std::thread::scope(|scope| {
        let handles: Vec<_> = survivors
            .iter()
            .map(|agent| {
                scope.spawn(move || -> anyhow::Result<Seen> {
                    let mut rpc = Rpc::connect(agent.rpc)?;
                    let mut saw_failed = false;
                    loop {
                        let now = Instant::now();
                        let seen = rpc.status_of(node)?;
                        let delay = now.duration_since(since).as_secs_f64();
                        saw_failed |= seen.as_deref() == Some("failed");
                        if seen.as_deref() == Some(status) {
                            return Ok((delay, saw_failed));
                        }
                        if now > deadline {
                            anyhow::bail!("{} never reported {node} {status}", agent.name);
                        }
                        std::thread::sleep(serf::POLL);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("poller panicked"))?)
            .collect()
    });
    let mut delays = Vec::new();
    let mut failed = false;
    for result in results {
        let (delay, f) = result.context("serf survivor")?;
        delays.push(delay);
        failed |= f && status != "failed";
    }
    Ok((delays, failed))
}
