//! `hist/<name>`: the last [`MAX_VERSIONS`] versions of a service, for
//! `history`, `rollback` and an update's automatic revert.
//!
//! Whoever writes `svc/<name>` (an operator's verb, or an owner reverting
//! a failed update) writes the history beside it, in the same batch: the
//! previous current version gets its outcome as the writer sees it then
//! (healthy when every slot ran it), and the new one is appended. It is a
//! register like the others: two concurrent writers each append their
//! own version and one list wins, as one spec wins `svc/`. It is kept
//! apart from `svc/` so the service record stays small enough for a
//! gossip delta (ten specs are not).

use serde::{Deserialize, Serialize};

use crate::record::{InstanceState, ServiceRecord};
use crate::spec::{EVERY_NODE_SLOT, ServiceSpec};
use crate::table::Table;
use crate::update::runs_version;

/// Versions kept per service.
pub const MAX_VERSIONS: usize = 10;

/// A service's last versions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// At most [`MAX_VERSIONS`].
    pub versions: Vec<Version>,
}

/// One version of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Its number.
    pub version: u64,
    /// When it was written (unix ms).
    pub written_ms: u64,
    /// The node that wrote it.
    pub origin: String,
    /// Which verb wrote it.
    pub cause: Cause,
    /// The spec; `None` for a removal.
    pub spec: Option<ServiceSpec>,
    /// How it went, as its successor's writer saw it.
    pub outcome: Outcome,
}

/// What wrote a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// `deploy`.
    Deploy,
    /// `scale`.
    Scale,
    /// `remove`.
    Remove,
    /// `stop`.
    Stop,
    /// `start`.
    Start,
    /// `restart`, of every slot or of one.
    Restart(Option<u32>),
    /// `rollback` to this version.
    Rollback(u64),
    /// An update failed: its owner wrote back this healthy version.
    Revert {
        /// The version that failed.
        failed: u64,
        /// The version written back.
        to: u64,
    },
}

impl Cause {
    /// For output.
    pub fn describe(&self) -> String {
        match self {
            Self::Deploy => "deploy".into(),
            Self::Scale => "scale".into(),
            Self::Remove => "remove".into(),
            Self::Stop => "stop".into(),
            Self::Start => "start".into(),
            Self::Restart(None) => "restart".into(),
            Self::Restart(Some(slot)) => format!("restart of slot {slot}"),
            Self::Rollback(to) => format!("rollback to {to}"),
            Self::Revert { failed, to } => format!("revert of {failed} to {to}"),
        }
    }
}

/// How a version went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The current version (the views judge it live).
    Current,
    /// Every slot ran it.
    Healthy,
    /// Its update failed.
    Failed,
    /// Replaced before every slot ran it.
    Superseded,
}

impl Outcome {
    /// Lowercase name, for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Healthy => "healthy",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
        }
    }
}

impl History {
    /// The entry of `version`.
    pub fn get(&self, version: u64) -> Option<&Version> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The newest version before `before` that ran healthy, with a spec:
    /// what an automatic revert writes back.
    pub fn last_healthy(&self, before: u64) -> Option<&Version> {
        self.versions
            .iter()
            .rev()
            .filter(|v| v.version < before && v.spec.is_some())
            .find(|v| v.outcome == Outcome::Healthy)
    }
}

/// Whether every slot of the live service of `record` runs its instance
/// version, as `table` shows it.
pub fn all_running(table: &Table, name: &str, record: &ServiceRecord) -> bool {
    let Some(spec) = record.spec.as_ref().filter(|s| !s.stopped) else {
        return false;
    };
    let runs = |node: &str, slot: u32| {
        table.status(node, name, slot).is_some_and(|s| {
            s.state == InstanceState::Running && runs_version(s, record.instance_since)
        })
    };
    if spec.every_node {
        return table
            .nodes()
            .filter(|(node, _)| table.status(node, name, EVERY_NODE_SLOT).is_some())
            .all(|(node, _)| runs(node, EVERY_NODE_SLOT));
    }
    (0..spec.replicas).all(|slot| {
        table
            .claim(name, slot)
            .and_then(|c| c.owner.as_deref())
            .is_some_and(|owner| runs(owner, slot))
    })
}

/// The history after writing `record` for `name`: the previous current
/// version judged (`failed` if its update failed, else healthy when every
/// slot ran it), the new one appended, the oldest dropped past
/// [`MAX_VERSIONS`].
pub fn append(
    table: &Table,
    name: &str,
    record: &ServiceRecord,
    cause: Cause,
    origin: &str,
    now: u64,
) -> History {
    let mut history = table.history(name).cloned().unwrap_or_default();
    let judged = match cause {
        Cause::Revert { .. } => Outcome::Failed,
        _ => match table.service(name) {
            Some(previous) if all_running(table, name, previous) => Outcome::Healthy,
            _ => Outcome::Superseded,
        },
    };
    for v in &mut history.versions {
        if v.outcome == Outcome::Current {
            v.outcome = judged;
        }
    }
    history.versions.push(Version {
        version: record.version,
        written_ms: now,
        origin: origin.to_owned(),
        cause,
        spec: record.spec.clone(),
        outcome: Outcome::Current,
    });
    let excess = history.versions.len().saturating_sub(MAX_VERSIONS);
    history.versions.drain(..excess);
    history
}
