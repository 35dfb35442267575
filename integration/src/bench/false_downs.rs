//! False downs under the same stress for both systems: a Serf cluster
//! and mob clusters (`suspect_to_down_after` 1 s, 1.5 s, 3 s) of 5 agents
//! run side by side while one agent of each is frozen by SIGSTOP (1.0,
//! 1.5, 2.0, 3.0 s), and then while 8 busy loops load the 2 cores. Every
//! agent stays alive, so every `member down` (mob) and every
//! `EventMemberFailed` (Serf) in any agent's log is a false one.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::report::Section;
use super::serf::{self, SerfAgent};
use super::{Mode, mob_timings};
use crate::{Agent, local_cluster_with};

/// After a pause or the load ends: long enough for a suspicion begun
/// during it to time out (a smoke run only shows the part works).
fn aftermath(mode: Mode) -> Duration {
    Duration::from_secs(mode.pick(2, 8))
}

struct Clusters {
    serf: Vec<SerfAgent>,
    /// `suspect_to_down_after` in ms, and the cluster.
    mob: Vec<(u64, Vec<Agent>)>,
}

impl Clusters {
    /// False declarations so far: Serf's, then each mob cluster's.
    fn downs(&self) -> Vec<usize> {
        let serf = self
            .serf
            .iter()
            .map(|a| a.log().matches("EventMemberFailed").count())
            .sum();
        let mob = self.mob.iter().map(|(_, agents)| {
            agents
                .iter()
                .map(|a| a.log_events("member down").len())
                .sum::<usize>()
        });
        std::iter::once(serf).chain(mob).collect()
    }

    /// SIGSTOP (or SIGCONT) agent `i` of every cluster.
    fn signal(&mut self, i: usize, signal: Signal) -> anyhow::Result<()> {
        let i = i % self.serf.len();
        self.serf[i].signal(signal)?;
        for (_, agents) in &self.mob {
            if let Some(pid) = agents[i].pid() {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), signal)?;
            }
        }
        Ok(())
    }

    fn labels(&self) -> Vec<String> {
        std::iter::once("Serf".to_owned())
            .chain(
                self.mob
                    .iter()
                    .map(|(ms, _)| format!("mob {:.1} s", *ms as f64 / 1000.0)),
            )
            .collect()
    }
}

/// `count` busy loops, killed on drop.
struct BusyLoops(Vec<Child>);

impl BusyLoops {
    fn start(count: usize) -> anyhow::Result<Self> {
        let loops = (0..count)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdin(Stdio::null())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(loops))
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the part.
pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let dir = tempfile::tempdir()?;
    let mut mob = Vec::new();
    for ms in mode.pick(&[1500][..], &[1000, 1500, 3000][..]) {
        let root = dir.path().join(format!("mob-{ms}"));
        std::fs::create_dir_all(&root)?;
        let extra = mob_timings(&root, *ms)?;
        mob.push((*ms, local_cluster_with(&root, 5, &extra)?));
    }
    let serf_root = dir.path().join("serf");
    std::fs::create_dir_all(&serf_root)?;
    let mut clusters = Clusters {
        serf: serf::cluster(&serf_root, 5, 18_946, None)?,
        mob,
    };
    std::thread::sleep(Duration::from_secs(3));
    let labels = clusters.labels();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "| stress | trials | {} |\n|---|---|{}",
        labels.join(" | "),
        "---|".repeat(labels.len())
    );
    let pauses: &[f64] = mode.pick(&[1.5], &[1.0, 1.5, 2.0, 3.0]);
    let trials = mode.pick(1, 3);
    let mut victim = 0;
    for pause in pauses {
        let before = clusters.downs();
        for _ in 0..trials {
            clusters.signal(victim, Signal::SIGSTOP)?;
            std::thread::sleep(Duration::from_secs_f64(*pause));
            clusters.signal(victim, Signal::SIGCONT)?;
            std::thread::sleep(aftermath(mode));
            victim += 1;
        }
        let after = clusters.downs();
        eprintln!("false downs, SIGSTOP {pause} s: {before:?} -> {after:?}");
        let _ = writeln!(
            body,
            "| one agent frozen (SIGSTOP) {pause:.1} s | {trials} | {} |",
            counts(&before, &after)
        );
    }
    let secs = mode.pick(3, 60);
    let before = clusters.downs();
    {
        let _load = BusyLoops::start(8)?;
        std::thread::sleep(Duration::from_secs(secs));
    }
    std::thread::sleep(aftermath(mode));
    let after = clusters.downs();
    eprintln!("false downs, 8 busy loops {secs} s: {before:?} -> {after:?}");
    let _ = writeln!(
        body,
        "| 8 busy loops on {} cores, {secs} s | 1 | {} |",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        counts(&before, &after)
    );
    let _ = writeln!(
        body,
        "\nCells: declarations of a live agent as down (mob: `member down` lines; Serf: \
         `EventMemberFailed`), summed over every agent of the 5-node cluster. The clusters \
         run side by side: each pause freezes one agent of every cluster at once, and the \
         busy loops load them all."
    );
    Ok(Section {
        part: "false-downs".into(),
        title: "False downs under pauses and load: mob and Serf".into(),
        body,
    })
}

fn counts(before: &[usize], after: &[usize]) -> String {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b).to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}
