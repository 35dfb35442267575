//! What `services` and `status` show: every slot of every live service,
//! where it runs and in what state, derived from the table alone.

use serde::{Deserialize, Serialize};

use crate::record::{InstanceState, Value, claim_key, status_key};
use crate::spec::{ProviderKind, ServiceSpec};
use crate::table::Table;

/// One slot of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotView {
    /// Slot number, `0..replicas`.
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
}

/// One live service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Name.
    pub name: String,
    /// Provider.
    pub provider: ProviderKind,
    /// Desired replicas.
    pub replicas: u32,
    /// Version of the spec.
    pub version: u64,
    /// Node that wrote the current version.
    pub origin: String,
    /// The spec itself.
    pub spec: ServiceSpec,
    /// Every slot.
    pub slots: Vec<SlotView>,
}

/// Views of every live (not removed) service, by name.
pub fn services(table: &Table) -> Vec<ServiceView> {
    table
        .services()
        .filter_map(|(name, record, service)| {
            let spec = service.spec.as_ref()?;
            Some(ServiceView {
                name: name.to_owned(),
                provider: spec.params.provider(),
                replicas: spec.replicas,
                version: service.version,
                origin: record.ts.node.clone(),
                slots: (0..spec.replicas)
                    .map(|slot| slot_view(table, name, slot))
                    .collect(),
                spec: spec.clone(),
            })
        })
        .collect()
}

/// The view of one live service.
pub fn service(table: &Table, name: &str) -> Option<ServiceView> {
    services(table).into_iter().find(|s| s.name == name)
}

fn slot_view(table: &Table, name: &str, slot: u32) -> SlotView {
    let owner = match table.get(&claim_key(name, slot)).map(|r| &r.value) {
        Some(Value::Claim(claim)) => claim.owner.clone(),
        _ => None,
    };
    let status = owner.as_ref().and_then(|node| {
        match table.get(&status_key(node, name, slot)).map(|r| &r.value) {
            Some(Value::Status(status)) => Some(status.clone()),
            _ => None,
        }
    });
    SlotView {
        slot,
        state: status.as_ref().map_or(InstanceState::Pending, |s| s.state),
        pid: status.as_ref().and_then(|s| s.pid),
        restarts: status.as_ref().map_or(0, |s| s.restarts),
        since_ms: status.as_ref().map(|s| s.since_ms),
        node: owner,
    }
}
