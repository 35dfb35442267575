//! What `services` and `status` show: every slot of every live service,
//! where it runs and in what state, derived from the table alone.

use serde::{Deserialize, Serialize};

use crate::placement::{Assignment, Members, assign, fits};
use crate::record::{InstanceState, Status};
use crate::spec::{EVERY_NODE_SLOT, Partition, ProviderKind, ServiceSpec};
use crate::table::Table;

/// One slot of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotView {
    /// Slot number, `0..replicas` (an every-node service's slots all have
    /// the same number; its `node` tells them apart).
    pub slot: u32,
    /// Owner's node name; `None` while unplaced.
    pub node: Option<String>,
    /// State of the instance.
    pub state: InstanceState,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u32,
    /// Since when (unix ms) in this state, if known.
    pub since_ms: Option<u64>,
    /// Why a slot is not running, when that needs saying.
    pub reason: Option<String>,
    /// Version of the service spec the instance runs, if it reported.
    pub version: Option<u64>,
    /// With a health check: `pending` (not passed yet since its start),
    /// `passing` or `failing`; `None` without a check, or with no
    /// instance up.
    pub health: Option<String>,
    /// Exit code of the instance's last run, if it ended with one.
    pub last_exit: Option<i32>,
    /// Signal that ended the instance's last run, if any.
    pub last_signal: Option<i32>,
    /// The IP its node advertises, once an instance reported.
    pub addr: Option<std::net::IpAddr>,
    /// Its host ports by name (none until an instance reported).
    pub ports: std::collections::BTreeMap<String, u16>,
}

impl SlotView {
    /// Whether the instance is up and, with a check, passing it: what
    /// `resolve` and DNS give out.
    pub fn serves(&self) -> bool {
        self.state == InstanceState::Running
    }
}

/// One live service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: ProviderKind,
    /// Desired replicas (0 for an every-node service).
    pub replicas: u32,
    /// One slot per eligible node.
    pub every_node: bool,
    /// Version of the spec.
    pub version: u64,
    /// Node that wrote the current version.
    pub origin: String,
    /// The spec itself.
    pub spec: ServiceSpec,
    /// Every slot.
    pub slots: Vec<SlotView>,
}

/// Specs of every live (not removed) service, with their versions, by name.
pub fn live_specs(table: &Table) -> Vec<(ServiceSpec, u64)> {
    table
        .services()
        .filter_map(|(_, _, s)| s.spec.clone().map(|spec| (spec, s.version)))
        .collect()
}

/// Views of every live (not removed) service, by name, as seen with
/// `members` live.
pub fn services(table: &Table, members: &Members) -> Vec<ServiceView> {
    let assignment = assign(table, members);
    table
        .services()
        .filter_map(|(name, record, service)| {
            let spec = service.spec.as_ref()?;
            Some(ServiceView {
                name: name.to_owned(),
                provider: spec.params.provider(),
                replicas: spec.replicas,
                every_node: spec.every_node,
                version: service.version,
                origin: record.ts.node.clone(),
                slots: if spec.stopped {
                    Vec::new()
                } else if spec.every_node {
                    every_node_slots(table, members, spec)
                } else {
                    (0..spec.replicas)
                        .map(|slot| slot_view(table, members, &assignment, spec, slot))
                        .collect()
                },
                spec: spec.clone(),
            })
        })
        .collect()
}

/// Whether some slot of `service` is running on its live owner.
pub fn is_running_somewhere(table: &Table, members: &Members, service: &str) -> bool {
    let Some((spec, _)) = table.live_service(service).filter(|(s, _)| !s.stopped) else {
        return false;
    };
    let runs_on = |node: &str, slot: u32| {
        table
            .status(node, service, slot)
            .is_some_and(|st| st.state == InstanceState::Running)
    };
    if spec.every_node {
        return members.names().any(|node| runs_on(node, EVERY_NODE_SLOT));
    }
    table
        .claims_of(service)
        .take_while(|(slot, _)| *slot < spec.replicas)
        .any(|(slot, claim)| {
            claim
                .owner
                .as_deref()
                .is_some_and(|owner| members.is_live(owner) && runs_on(owner, slot))
        })
}

/// The first dependency of `spec` not running anywhere, if any.
pub fn missing_dependency<'a>(
    table: &Table,
    members: &Members,
    spec: &'a ServiceSpec,
) -> Option<&'a str> {
    spec.depends_on
        .iter()
        .find(|d| !is_running_somewhere(table, members, d))
        .map(String::as_str)
}

/// An every-node service's slots: one per live eligible node, and one per
/// node that still reports an instance.
fn every_node_slots(table: &Table, members: &Members, spec: &ServiceSpec) -> Vec<SlotView> {
    let name = spec.name.as_str();
    table
        .nodes()
        .filter_map(|(node, record)| {
            let live = members.is_live(node);
            let status = table.status(node, name, EVERY_NODE_SLOT);
            let wanted = live && fits(record, spec);
            if !wanted && !status.is_some_and(|s| s.state.is_active()) {
                return None;
            }
            let state = match status {
                _ if !live => InstanceState::Lost,
                Some(s) => s.state,
                None => InstanceState::Pending,
            };
            let reason = match state {
                InstanceState::Lost => Some("node is down".to_owned()),
                InstanceState::Pending => missing_dependency(table, members, spec)
                    .map(|d| format!("waiting for dependency {d} to run")),
                _ if !wanted => Some("node no longer eligible; stopping".to_owned()),
                _ => last_error(status),
            };
            Some(SlotView {
                slot: EVERY_NODE_SLOT,
                node: Some(node.to_owned()),
                state,
                pid: status.filter(|_| live).and_then(|s| s.pid),
                restarts: status.map_or(0, |s| s.restarts),
                since_ms: status.map(|s| s.since_ms),
                reason,
                version: status.map(|s| s.version),
                health: health_of(spec, state),
                last_exit: status.and_then(|s| s.last_exit),
                last_signal: status.and_then(|s| s.last_signal),
                addr: status.and_then(|s| s.ip),
                ports: status.map(|s| s.ports.clone()).unwrap_or_default(),
            })
        })
        .collect()
}

/// How the slot's run on the last node it failed on ended: its last
/// error, or its exit.
fn last_failure(table: &Table, service: &str, slot: u32) -> Option<String> {
    let node = table.claim(service, slot)?.failed_on.last()?;
    let status = table.status(node, service, slot)?;
    last_error(Some(status)).or_else(|| match (status.last_exit, status.last_signal) {
        (Some(code), _) => Some(format!("exit code {code}")),
        (None, Some(signal)) => Some(format!("signal {signal}")),
        (None, None) => None,
    })
}

/// The health a slot's state shows, for a service with a check.
fn health_of(spec: &ServiceSpec, state: InstanceState) -> Option<String> {
    spec.check.as_ref()?;
    let health = match state {
        InstanceState::Starting => "pending",
        InstanceState::Running => "passing",
        InstanceState::Unhealthy => "failing",
        _ => return None,
    };
    Some(health.to_owned())
}

/// Why the instance's last run ended badly (a start that failed, a stop
/// as unhealthy), while that holds.
fn last_error(status: Option<&Status>) -> Option<String> {
    status?.last_error.clone()
}

fn slot_view(
    table: &Table,
    members: &Members,
    assignment: &Assignment,
    spec: &ServiceSpec,
    slot: u32,
) -> SlotView {
    let name = spec.name.as_str();
    let owner = table.claim(name, slot).and_then(|c| c.owner.clone());
    let status: Option<&Status> = owner
        .as_ref()
        .and_then(|node| table.status(node, name, slot));
    let lost = owner.as_ref().is_some_and(|o| !members.is_live(o));
    let key = (name.to_owned(), slot);
    let state = if lost {
        InstanceState::Lost
    } else if owner.is_none() && assignment.failed.contains(&key) {
        InstanceState::Failed
    } else {
        status.as_ref().map_or(InstanceState::Pending, |s| s.state)
    };
    let reason = match state {
        InstanceState::Lost => {
            Some("owner is down; waiting for another node to take the slot".to_owned())
        }
        InstanceState::Pending | InstanceState::Failed => {
            assignment
                .unplaced
                .get(&key)
                .cloned()
                .or_else(|| {
                    missing_dependency(table, members, spec)
                        .map(|d| format!("waiting for dependency {d} to run"))
                })
                .or_else(|| {
                    (spec.partition == Partition::AtMostOnce && owner.is_some()).then(|| {
                        "at-most-once: its owner waits until no other instance can run (a majority in sight, the margin after a node went, its claim settled)".to_owned()
                    })
                })
                .or_else(|| last_error(status))
        }
        _ => last_error(status),
    };
    // A slot failed everywhere has no owner: say how it ended last.
    let reason = match (state, &owner, reason) {
        (InstanceState::Failed, None, Some(reason)) => {
            Some(match last_failure(table, name, slot) {
                Some(last) => format!("{reason}; last: {last}"),
                None => reason,
            })
        }
        (_, _, reason) => reason,
    };
    SlotView {
        slot,
        state,
        pid: status.as_ref().filter(|_| !lost).and_then(|s| s.pid),
        restarts: status.as_ref().map_or(0, |s| s.restarts),
        since_ms: status.as_ref().map(|s| s.since_ms),
        version: status.as_ref().map(|s| s.version),
        health: health_of(spec, state),
        last_exit: status.and_then(|s| s.last_exit),
        last_signal: status.and_then(|s| s.last_signal),
        addr: status.and_then(|s| s.ip),
        ports: status.map(|s| s.ports.clone()).unwrap_or_default(),
        node: owner,
        reason,
    }
}
