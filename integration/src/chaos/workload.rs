//! The operations an operator issues during the faults, and what the
//! cluster must show for them afterwards.
//!
//! Writes are last-writer-wins per service record, so what must survive is
//! the record of the last acknowledged write to each service, as the agent
//! that acknowledged it stored it (its `version`, replicas, generation,
//! stopped flag): the harness issues one operation at a time, on one
//! machine's clock, so the last acknowledged write is also the newest. A
//! write that was not acknowledged may or may not have landed: until the
//! next acknowledged write to that service, its spec is not checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::Value;

use crate::Agent;

/// One operator operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new service, `replicas` slots, at-most-once if `once`.
    Deploy {
        /// Its name.
        name: String,
        /// Its slots.
        replicas: u32,
        /// `partition = "at-most-once"`.
        once: bool,
    },
    /// A new generation of the environment: a rolling update.
    Update {
        /// The service.
        name: String,
    },
    /// `scale NAME N`.
    Scale {
        /// The service.
        name: String,
        /// The new number of slots.
        replicas: u32,
    },
    /// `stop NAME`.
    Stop {
        /// The service.
        name: String,
    },
    /// `start NAME`.
    Start {
        /// The service.
        name: String,
    },
    /// `remove NAME`.
    Remove {
        /// The service.
        name: String,
    },
}

impl Op {
    /// The service it writes.
    pub fn service(&self) -> &str {
        match self {
            Self::Deploy { name, .. }
            | Self::Update { name }
            | Self::Scale { name, .. }
            | Self::Stop { name }
            | Self::Start { name }
            | Self::Remove { name } => name,
        }
    }

    /// Its kind, for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deploy { .. } => "deploy",
            Self::Update { .. } => "update",
            Self::Scale { .. } => "scale",
            Self::Stop { .. } => "stop",
            Self::Start { .. } => "start",
            Self::Remove { .. } => "remove",
        }
    }
}

/// A service record as an agent shows it: what the invariants compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The record's version: every write makes a new one.
    pub version: u64,
    /// Its slots.
    pub replicas: u32,
    /// Stopped by `stop`.
    pub stopped: bool,
}

impl Shown {
    /// Reads one entry of `services --json`.
    pub fn of(view: &Value) -> Option<Self> {
        Some(Self {
            version: view["version"].as_u64()?,
            replicas: u32::try_from(view["replicas"].as_u64()?).ok()?,
            stopped: view["stopped"].as_bool()?,
        })
    }
}

/// The `GEN` of a service's environment as `agent` stores it: which
/// update its instances must run.
pub fn generation(agent: &Agent, name: &str) -> anyhow::Result<u64> {
    let specs: Value = serde_json::from_str(&agent.cli(&["inspect", name, "--json"])?)?;
    specs[0]["env"]["GEN"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .with_context(|| format!("{name}: no GEN in its stored spec"))
}

/// What the cluster must show for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Its last acknowledged write left this record.
    Spec(Shown),
    /// Its last acknowledged write removed it.
    Removed,
    /// Its last write was not acknowledged: either outcome may stand.
    Unknown,
}

/// One service the workload made.
#[derive(Debug, Clone)]
pub struct Service {
    /// The `sleep` argument that finds its instances among all processes.
    pub marker: String,
    /// At-most-once.
    pub once: bool,
    /// The generation of the next update.
    pub next_generation: u64,
    /// What the cluster must show.
    pub expected: Expected,
}

/// The services made so far, and the operations issued.
#[derive(Debug, Default)]
pub struct Workload {
    /// By name.
    pub services: BTreeMap<String, Service>,
    /// Every operation, with whether it was acknowledged.
    pub issued: Vec<(Op, bool)>,
    marker_base: u64,
    /// The first service's check passes while this file exists.
    pub check_flag: PathBuf,
}

/// The spec of one workload service: `sleep MARKER`, its generation in
/// `GEN`, updated one slot at a time; with `check`, healthy while that
/// file exists (the harness removes it for a while: a flapping check).
pub fn spec_json(
    name: &str,
    replicas: u32,
    once: bool,
    marker: &str,
    generation: u64,
    check: Option<&Path>,
) -> String {
    let partition = if once { "at-most-once" } else { "available" };
    let check = check.map_or(String::new(), |flag| {
        format!(
            r#", "max_restarts": 1000, "check": {{"command": ["test", "-f", "{}"], "interval": "500ms", "timeout": "300ms", "grace": "1s", "failures": 2}}"#,
            flag.display()
        )
    });
    format!(
        r#"{{"name": "{name}", "provider": "exec", "replicas": {replicas}, "partition": "{partition}", "stop_timeout": "1s", "env": {{"GEN": "{generation}"}}, "update": {{"max_parallel": 1, "min_healthy_time": "0s"}}, "params": {{"command": ["sleep", "{marker}"]}}{check}}}"#
    )
}

impl Workload {
    /// A workload whose markers start at `marker_base` (distinct per run,
    /// so concurrent runs never count each other's processes).
    pub fn new(marker_base: u64, check_flag: PathBuf) -> Self {
        Self {
            marker_base,
            check_flag,
            ..Self::default()
        }
    }

    /// The check of `name`'s spec: the first service has one.
    fn check_of(&self, name: &str) -> Option<&Path> {
        (name == "c0").then_some(self.check_flag.as_path())
    }

    /// A random operation on the services there are (a deploy when there
    /// are few).
    pub fn pick(&self, rng: &mut StdRng) -> Op {
        let present: Vec<&String> = self
            .services
            .iter()
            .filter(|(_, s)| s.expected != Expected::Removed)
            .map(|(n, _)| n)
            .collect();
        if present.len() < 3 || rng.random_range(0..6) == 0 {
            let once = rng.random_range(0..4) == 0;
            return Op::Deploy {
                name: format!("c{}", self.services.len()),
                replicas: if once { 1 } else { rng.random_range(1..=3) },
                once,
            };
        }
        let name = present[rng.random_range(0..present.len())].clone();
        let service = &self.services[&name];
        let stopped = match &service.expected {
            Expected::Spec(shown) => Some(shown.stopped),
            _ => None,
        };
        match rng.random_range(0..10) {
            // (At-most-once services keep one slot: the watch counts
            // instances per service.)
            4..=5 if !service.once => Op::Scale {
                replicas: rng.random_range(1..=3),
                name,
            },
            6 if stopped == Some(false) => Op::Stop { name },
            7 if stopped == Some(true) => Op::Start { name },
            // (The first service stays: its check is the one that flaps.)
            8 | 9 if present.len() > 4 && name != "c0" => Op::Remove { name },
            _ => Op::Update { name },
        }
    }

    /// Issues `op` through `agent`'s CLI and records what it must leave.
    pub fn issue(&mut self, agent: &Agent, op: Op) {
        if let Op::Deploy { name, once, .. } = &op {
            let marker = (self.marker_base + self.services.len() as u64).to_string();
            self.services.insert(
                name.clone(),
                Service {
                    marker,
                    once: *once,
                    next_generation: 1,
                    expected: Expected::Unknown,
                },
            );
        }
        let result = self.run(agent, &op);
        let acked = result.is_ok();
        let name = op.service().to_owned();
        let expected = if let Err(e) = result {
            // Refused for a failed save: nothing was written, and nothing
            // may appear.
            let nothing = format!("{e:#}").contains("nothing was written");
            match self.services.get(&name) {
                Some(s) if nothing => s.expected.clone(),
                _ => Expected::Unknown,
            }
        } else if matches!(op, Op::Remove { .. }) {
            Expected::Removed
        } else {
            // The writer's own view right after the write: its record.
            shown_by(agent, &name)
                .ok()
                .flatten()
                .map_or(Expected::Unknown, Expected::Spec)
        };
        if let Some(service) = self.services.get_mut(&name) {
            service.expected = expected;
        }
        self.issued.push((op, acked));
    }

    fn run(&mut self, agent: &Agent, op: &Op) -> anyhow::Result<()> {
        let check = self.check_of(op.service()).map(Path::to_owned);
        let check = check.as_deref();
        let service = self
            .services
            .get_mut(op.service())
            .context("a service the workload made")?;
        match op {
            Op::Deploy {
                name,
                replicas,
                once,
            } => {
                agent.deploy(&spec_json(
                    name,
                    *replicas,
                    *once,
                    &service.marker,
                    0,
                    check,
                ))?;
            }
            Op::Update { name } => {
                // The rest of the spec as this agent has it: an update
                // changes the generation alone.
                let shown = shown_by(agent, name)?.context("the service, on this agent")?;
                let current = generation(agent, name)?;
                service.next_generation = service.next_generation.max(current + 1);
                let spec = spec_json(
                    name,
                    shown.replicas,
                    service.once,
                    &service.marker,
                    service.next_generation,
                    check,
                );
                service.next_generation += 1;
                // (A stopped service runs again: its spec says nothing of
                // stopping.)
                agent.deploy(&spec)?;
            }
            Op::Scale { name, replicas } => {
                agent.cli(&["scale", name, &replicas.to_string()])?;
            }
            Op::Stop { name } => {
                agent.cli(&["stop", name])?;
            }
            Op::Start { name } => {
                agent.cli(&["start", name])?;
            }
            Op::Remove { name } => {
                agent.cli(&["remove", name])?;
            }
        }
        Ok(())
    }

    /// How many operations were acknowledged, and how many not.
    pub fn acknowledged(&self) -> (usize, usize) {
        let acked = self.issued.iter().filter(|(_, a)| *a).count();
        (acked, self.issued.len() - acked)
    }
}

/// `name` as `agent` shows it, if it lists it.
pub fn shown_by(agent: &Agent, name: &str) -> anyhow::Result<Option<Shown>> {
    Ok(agent
        .services()?
        .iter()
        .find(|s| s["name"] == name)
        .and_then(Shown::of))
}
