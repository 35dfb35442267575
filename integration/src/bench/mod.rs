//! Benchmarks that put mob next to what operators know, measured in the
//! same run on the same machine (`scripts/bench.sh`, the `mob-bench`
//! binary). A benchmark is not a test: CI runs only the smoke mode, which
//! checks that every part produces its table.
//!
//! # Layout
//! - [`report`]: samples and their quantiles, tables, the machine, and
//!   `BENCHMARKS.md` put together from the parts' sections.
//! - [`serf`]: Serf agents and a client of their RPC.
//! - [`peers`]: supervisord and runit, each supervising one process.
//! - one file per part: [`detection`], [`false_downs`], [`footprint`],
//!   [`restart`], [`deploy`], [`failover`].

pub mod deploy;
pub mod detection;
pub mod failover;
pub mod false_downs;
pub mod footprint;
pub mod peers;
pub mod report;
pub mod restart;
pub mod serf;

use std::path::Path;
use std::time::SystemTime;

use crate::Agent;

/// How much to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every trial the figures need (minutes per part).
    Full,
    /// One trial of each, seconds: proves the part runs and reports.
    Smoke,
}

impl Mode {
    /// `smoke` or `full`, by mode.
    pub fn pick<T>(self, smoke: T, full: T) -> T {
        match self {
            Self::Smoke => smoke,
            Self::Full => full,
        }
    }
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it measures, for `--help`.
    pub about: &'static str,
    /// Measures, returning its section.
    pub run: fn(Mode) -> anyhow::Result<report::Section>,
}

/// Every part, in the order `all` runs them and the file lists them.
pub const PARTS: &[Part] = &[
    Part {
        name: "detection",
        about: "kill -9 and graceful leave, mob (1, 1.5, 3 s) next to Serf",
        run: detection::run,
    },
    Part {
        name: "false-downs",
        about: "SIGSTOP pauses and 8 busy loops: live agents declared down, mob and Serf",
        run: false_downs::run,
    },
    Part {
        name: "footprint",
        about: "idle RSS, CPU and gossip bytes, mob and Serf (plain and -encrypt)",
        run: footprint::run,
    },
    Part {
        name: "restart",
        about: "crash to new pid under mob, supervisord and runit",
        run: restart::run,
    },
    Part {
        name: "deploy",
        about: "command to running: mob-agent deploy, supervisorctl start, sv up",
        run: deploy::run,
    },
    Part {
        name: "failover",
        about: "kill -9 of a service's node to running (and healthy) elsewhere",
        run: failover::run,
    },
];

/// The part called `name`.
pub fn part(name: &str) -> Option<&'static Part> {
    PARTS.iter().find(|p| p.name == name)
}

/// The version line of each system the parts run next to mob; a missing
/// peer is an error that says how to install it.
pub fn versions(agent: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let out = std::process::Command::new(agent).arg("version").output()?;
    let mob = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(vec![
        ("mob".to_owned(), mob),
        ("Serf".to_owned(), serf::version()?),
        ("supervisord".to_owned(), peers::supervisord_version()?),
        ("runit".to_owned(), peers::runit_version()?),
    ])
}

/// Seconds from `since` to the log timestamp of each agent's first
/// `message` line whose `field` is `value`; `None` for an agent without
/// one yet. Times from the agents' own logs, so polling does not blur them.
pub fn mob_delays(
    agents: &[Agent],
    message: &str,
    field: &str,
    value: &str,
    since: SystemTime,
) -> Vec<Option<f64>> {
    agents
        .iter()
        .map(|a| {
            a.log_events(message)
                .iter()
                .filter(|e| e[field] == value)
                .filter_map(|e| humantime::parse_rfc3339(e["timestamp"].as_str()?).ok())
                .filter_map(|t| t.duration_since(since).ok())
                .map(|d| d.as_secs_f64())
                .next()
        })
        .collect()
}

/// `run` arguments for agents with this `suspect_to_down_after` (a
/// config file in `dir`).
pub fn mob_timings(dir: &Path, suspect_to_down_ms: u64) -> anyhow::Result<Vec<String>> {
    let path = dir.join(format!("timings-{suspect_to_down_ms}.toml"));
    std::fs::write(
        &path,
        format!("[timings]\nsuspect_to_down_after = \"{suspect_to_down_ms}ms\"\n"),
    )?;
    Ok(vec!["--config".into(), path.display().to_string()])
}
