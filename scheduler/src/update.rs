//! Rolling updates without a leader: when a slot's owner may replace its
//! instance with the new version, and when an update failed.
//!
//! Every owner decides from the table alone. A service's *instance
//! version* ([`ServiceRecord::instance_since`]) is the first version whose
//! spec its instances run now; a status behind it runs an older instance
//! spec (a scale or a new update policy doesn't move it: see
//! [`ServiceSpec::same_instance`]). The owner of slot `i`, running an
//! instance behind, replaces it only when every slot `j <= i -
//! max_parallel` is done: its owner (a live member) runs the instance
//! version and has been `running` for `min_healthy_time`, or no live
//! member could take it. So the slots in progress lie within
//! `max_parallel` consecutive numbers: at most `max_parallel` are down for
//! the update at once.
//!
//! A slot without an owner is *not* done while some member could take it
//! (deviating from "unplaced counts as done"): in a partition, a side that
//! sees an owner down would otherwise replace a second slot while the
//! first is still starting on the other side.
//!
//! An update failed on a slot when its instance of the new version was
//! never healthy for `min_healthy_time` ([`Status::proven`]) and spent its
//! restart budget, or is not `running` `healthy_deadline` after it first
//! started. The slots after it never see it done, so the update stops
//! there; with `auto_revert`, that slot's owner writes the last healthy
//! spec back as a new version, which rolls out by the same rule.
//!
//! [`ServiceRecord::instance_since`]: crate::record::ServiceRecord::instance_since
//! [`Status::proven`]: crate::record::Status::proven

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::placement::{Members, fits};
use crate::record::{InstanceState, Status};
use crate::spec::{MAX_REPLICAS, ServiceSpec};
use crate::table::Table;

/// Default [`UpdatePolicy::min_healthy_time`].
pub const DEFAULT_MIN_HEALTHY_TIME: Duration = Duration::from_secs(3);
/// Default [`UpdatePolicy::healthy_deadline`].
pub const DEFAULT_HEALTHY_DEADLINE: Duration = Duration::from_secs(300);

/// `[update]`: how a new version replaces the running instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// Slots replaced at once; 0: all at once.
    pub max_parallel: u32,
    /// Healthy this long before the next slot may go.
    pub min_healthy_time: Duration,
    /// Not healthy this long after its start: the update failed.
    pub healthy_deadline: Duration,
    /// A failed update writes the last healthy version back.
    pub auto_revert: bool,
}

impl Default for UpdatePolicy {
    /// One slot at a time, 3 s healthy, 5 min deadline, no revert (Nomad's
    /// defaults, but 3 s instead of 10 s: a small fleet's services start
    /// fast).
    fn default() -> Self {
        Self {
            max_parallel: 1,
            min_healthy_time: DEFAULT_MIN_HEALTHY_TIME,
            healthy_deadline: DEFAULT_HEALTHY_DEADLINE,
            auto_revert: false,
        }
    }
}

impl UpdatePolicy {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_parallel > MAX_REPLICAS {
            return Err((
                "max_parallel",
                format!("{} is out of range 0..={MAX_REPLICAS}", self.max_parallel),
            ));
        }
        if self.healthy_deadline <= self.min_healthy_time {
            return Err((
                "healthy_deadline",
                format!(
                    "{:?} must be longer than min_healthy_time ({:?})",
                    self.healthy_deadline, self.min_healthy_time
                ),
            ));
        }
        Ok(())
    }

    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// `min_healthy_time` in ms.
    pub fn min_healthy_ms(&self) -> u64 {
        Self::ms(self.min_healthy_time)
    }

    /// `healthy_deadline` in ms.
    pub fn deadline_ms(&self) -> u64 {
        Self::ms(self.healthy_deadline)
    }
}

/// Whether a slot's owner may replace its instance now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Replace it.
    Go,
    /// Not yet; decide again at this time (a slot before it becomes
    /// healthy long enough), or when the table changes (`None`).
    Wait(Option<u64>),
}

/// Whether `status` runs the instance version `since`.
pub fn runs_version(status: &Status, since: u64) -> bool {
    status.version >= since
}

/// Whether the owner of `slot` of `spec`, which runs an instance older
/// than `since`, may replace it at `now`.
pub fn turn(
    table: &Table,
    members: &Members,
    spec: &ServiceSpec,
    since: u64,
    slot: u32,
    now: u64,
) -> Turn {
    let policy = &spec.update;
    if policy.max_parallel == 0 {
        return Turn::Go;
    }
    let name = spec.name.as_str();
    let before = (slot + 1).saturating_sub(policy.max_parallel);
    let mut pace = Pace::new(spec, since, now);
    for j in 0..before {
        let owner = table
            .claim(name, j)
            .and_then(|c| c.owner.as_deref())
            .filter(|o| members.is_live(o));
        match owner {
            Some(owner) if !pace.slot(table.status(owner, name, j)) => return Turn::Wait(None),
            Some(_) => {}
            None if someone_could_run(table, members, spec) => return Turn::Wait(None),
            None => {}
        }
    }
    pace.turn()
}

/// [`turn`] for an every-node service: its slots are the eligible live
/// members in name order, each done when its own instance is.
pub fn turn_every_node(
    table: &Table,
    members: &Members,
    spec: &ServiceSpec,
    since: u64,
    me: &str,
    now: u64,
) -> Turn {
    if spec.update.max_parallel == 0 {
        return Turn::Go;
    }
    let mut nodes: Vec<&str> = members
        .names()
        .filter(|n| table.node(n).is_some_and(|r| fits(r, spec)))
        .collect();
    nodes.sort_unstable();
    let Some(i) = nodes.iter().position(|n| *n == me) else {
        return Turn::Go;
    };
    let before = (i + 1).saturating_sub(spec.update.max_parallel as usize);
    let mut pace = Pace::new(spec, since, now);
    for node in &nodes[..before] {
        if !pace.slot(table.status(node, &spec.name, crate::spec::EVERY_NODE_SLOT)) {
            return Turn::Wait(None);
        }
    }
    pace.turn()
}

/// The slots before one, judged in turn: each must run the instance
/// version, healthy for `min_healthy_time`; the latest time one becomes
/// so is when to decide again.
struct Pace {
    since: u64,
    min_healthy: u64,
    now: u64,
    at: Option<u64>,
}

impl Pace {
    fn new(spec: &ServiceSpec, since: u64, now: u64) -> Self {
        Self {
            since,
            min_healthy: spec.update.min_healthy_ms(),
            now,
            at: None,
        }
    }

    /// One slot before, by its owner's status: `false` when it is not
    /// done and its time can't be told (not running the new version).
    fn slot(&mut self, status: Option<&Status>) -> bool {
        match status {
            Some(s) if runs_version(s, self.since) && s.state == InstanceState::Running => {
                let healthy_at = s.since_ms.saturating_add(self.min_healthy);
                if !s.proven && healthy_at > self.now {
                    self.at = Some(self.at.map_or(healthy_at, |a| a.max(healthy_at)));
                }
                true
            }
            _ => false,
        }
    }

    fn turn(self) -> Turn {
        match self.at {
            Some(at) => Turn::Wait(Some(at)),
            None => Turn::Go,
        }
    }
}

fn someone_could_run(table: &Table, members: &Members, spec: &ServiceSpec) -> bool {
    members.names().any(|n| {
        table
            .node(n)
            .is_some_and(|r| !r.is_draining() && fits(r, spec))
    })
}

/// Whether instance version `since` of `name` is an update: an earlier
/// version with a spec is kept (a first deploy that fails is no update to
/// revert).
pub fn is_update(table: &Table, name: &str, since: u64) -> bool {
    table.history(name).is_some_and(|h| {
        h.versions
            .iter()
            .any(|v| v.version < since && v.spec.is_some())
    })
}

/// How this node's instance of a slot fares on the instance version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Healthy long enough, or not on the new version (nothing to judge).
    Settled,
    /// On its way; judged again at this time (its deadline).
    Pending(u64),
    /// The update failed on this slot, for this reason.
    Failed(String),
}

/// Judges this node's instance of a slot of `spec` at instance version
/// `since`.
pub fn progress(spec: &ServiceSpec, since: u64, status: &Status, now: u64) -> Progress {
    if !runs_version(status, since) || status.proven {
        return Progress::Settled;
    }
    match status.state {
        InstanceState::Failed => Progress::Failed(
            status
                .last_error
                .clone()
                .unwrap_or_else(|| "restart budget spent".into()),
        ),
        InstanceState::Starting | InstanceState::Backoff | InstanceState::Unhealthy => {
            let deadline = status.started_ms.saturating_add(spec.update.deadline_ms());
            if now < deadline {
                return Progress::Pending(deadline);
            }
            let last = status
                .last_error
                .as_deref()
                .map(|e| format!("; last: {e}"))
                .unwrap_or_default();
            Progress::Failed(format!(
                "not running {:?} after its start{last}",
                spec.update.healthy_deadline
            ))
        }
        InstanceState::Running
        | InstanceState::Stopped
        | InstanceState::Pending
        | InstanceState::Lost => Progress::Settled,
    }
}

/// Whether a new report proves the instance: it ran healthy for
/// `min_healthy_time` on this version (since its first start here).
/// `previous` is the status it replaces.
pub fn proven(spec: &ServiceSpec, previous: Option<&Status>, next: &Status, now: u64) -> bool {
    let Some(prev) = previous.filter(|p| p.started_ms == next.started_ms) else {
        return false;
    };
    prev.proven
        || (prev.state == InstanceState::Running
            && now.saturating_sub(prev.since_ms) >= spec.update.min_healthy_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: InstanceState, version: u64, since_ms: u64, started_ms: u64) -> Status {
        Status {
            state,
            pid: None,
            restarts: 0,
            since_ms,
            last_exit: None,
            last_signal: None,
            last_error: None,
            version,
            started_ms,
            proven: false,
            ip: None,
            ports: Default::default(),
        }
    }

    fn spec() -> ServiceSpec {
        crate::spec_file::parse_specs(
            "name = \"web\"\nprovider = \"shell\"\nparams = { command = \"sleep 100\" }\n[update]\nmin_healthy_time = \"2s\"\nhealthy_deadline = \"10s\"\n",
        )
        .map(|mut v| v.remove(0))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_slot_is_proven_after_min_healthy_time_running_and_not_before() {
        let spec = spec();
        let running = status(InstanceState::Running, 2, 1_000, 500);
        let next = status(InstanceState::Backoff, 2, 2_500, 500);
        assert!(!proven(&spec, Some(&running), &next, 2_500));
        assert!(proven(&spec, Some(&running), &next, 3_000));
        // A new start of the version (another `started_ms`) starts afresh.
        let restarted = status(InstanceState::Starting, 2, 9_000, 9_000);
        assert!(!proven(&spec, Some(&running), &restarted, 9_000));
    }

    #[test]
    fn an_instance_fails_the_update_when_its_budget_is_spent_or_its_deadline_passes() {
        let spec = spec();
        let failed = status(InstanceState::Failed, 2, 5_000, 1_000);
        assert!(matches!(
            progress(&spec, 2, &failed, 5_000),
            Progress::Failed(_)
        ));
        let starting = status(InstanceState::Starting, 2, 1_000, 1_000);
        assert_eq!(
            progress(&spec, 2, &starting, 5_000),
            Progress::Pending(11_000)
        );
        assert!(
            matches!(progress(&spec, 2, &starting, 11_000), Progress::Failed(why) if why.contains("10s"))
        );
        // Proven, or behind the instance version: nothing to judge.
        let mut proven = failed.clone();
        proven.proven = true;
        assert_eq!(progress(&spec, 2, &proven, 5_000), Progress::Settled);
        assert_eq!(progress(&spec, 3, &failed, 5_000), Progress::Settled);
    }
}
