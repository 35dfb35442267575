//! The operator's writes: what `deploy`, `remove` and `scale` write, and
//! why one writes nothing. Pure planning over the table; the
//! [`Node`](super::Node) stamps and applies what is planned.

use serde::{Deserialize, Serialize};

use crate::key::Key;
use crate::record::{Record, ServiceRecord, Value};
use crate::services_view::live_specs;
use crate::spec::{MAX_REPLICAS, ServiceSpec, SpecError, check_dependency_cycles};
use crate::table::Table;

/// Largest encoded spec accepted, so every record stays shippable.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;

/// Why an operation wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// No live service has that name.
    #[error("no service named {0:?}")]
    Unknown(String),
    /// The spec is invalid.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// The table could not be saved: the write was dropped, not applied
    /// and not sent to anyone.
    #[error("the table could not be saved ({0}); nothing was written")]
    NotSaved(String),
    /// This node's clock is far off from its peers': its writes would not
    /// be taken.
    #[error("this agent's clock is {} s {} its peers' (their datagrams are refused as stale); its writes would not be taken, so none is made: fix the clock (NTP)", .0.unsigned_abs() / 1000, if *.0 > 0 { "ahead of" } else { "behind" })]
    ClockSkew(i64),
    /// Too many writes wait for their saves already.
    #[error("{0} writes are waiting for the disk already; try again")]
    Busy(usize),
    /// `keys install` past [`super::keyring::MAX_KEYS`].
    #[error(
        "the keyring holds {} keys already; remove one first",
        super::keyring::MAX_KEYS
    )]
    KeyringFull,
    /// `keys use` or `keys remove` of a key no agent holds.
    #[error("key {0} is not installed")]
    KeyNotInstalled(String),
    /// `keys remove` of the key this agent seals with.
    #[error("key {0} is the primary key; `keys use` another one first")]
    RemovePrimary(String),
    /// `keys remove` of the key live members still seal with.
    #[error("key {fingerprint} is still the primary of {}; wait until `keys list` shows them on the new one", nodes.join(", "))]
    KeyInUse {
        /// The key.
        fingerprint: String,
        /// Live members whose primary it is.
        nodes: Vec<String>,
    },
}

/// What a deploy did to one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployKind {
    /// New (or redeployed after removal).
    Created,
    /// Spec changed.
    Updated,
    /// Same spec as already stored; nothing written.
    Unchanged,
}

/// One service's deploy outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    /// Service.
    pub name: String,
    /// Its version now.
    pub version: u64,
    /// What happened.
    pub kind: DeployKind,
}

/// What happened to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// It appeared.
    Deployed,
    /// Its spec changed.
    Updated,
    /// It was removed.
    Removed,
}

/// A change of a service as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    /// Which change.
    pub kind: ChangeKind,
    /// Service.
    pub name: String,
    /// Version written.
    pub version: u64,
    /// Node that wrote it.
    pub origin: String,
}

/// The change `record` makes to the service under `key`, given whether
/// the service was live before.
pub fn service_change(was_live: bool, key: &Key, record: &Record) -> Option<ServiceChange> {
    let (Key::Service(name), Value::Service(s)) = (key, &record.value) else {
        return None;
    };
    let kind = match (was_live, s.spec.is_some()) {
        (false, true) => ChangeKind::Deployed,
        (true, true) => ChangeKind::Updated,
        (true, false) => ChangeKind::Removed,
        (false, false) => return None,
    };
    Some(ServiceChange {
        kind,
        name: name.to_string(),
        version: s.version,
        origin: record.ts.node.clone(),
    })
}

fn version_of(table: &Table, name: &str) -> u64 {
    table.service(name).map_or(0, |s| s.version)
}

/// Whether some slot of the service failed somewhere at `version`: then
/// deploying the same spec again writes a new version, which clears the
/// failures and retries.
fn has_failures(table: &Table, name: &str, version: u64) -> bool {
    table
        .claims_of(name)
        .any(|(_, c)| c.version == version && !c.failed_on.is_empty())
}

/// A service record to write.
pub type Write = (Key, Value);

/// Plans a deploy. All or nothing: one invalid spec, a dependency cycle
/// with what is deployed, or an oversized spec, and nothing is written.
pub fn deploy(
    table: &Table,
    specs: Vec<ServiceSpec>,
) -> Result<(Vec<Deployed>, Vec<Write>), OpError> {
    for spec in &specs {
        spec.validate()?;
        let size = postcard::to_stdvec(spec).map_or(usize::MAX, |b| b.len());
        if size > MAX_SPEC_BYTES {
            return Err(SpecError {
                service: spec.name.clone(),
                field: "-".into(),
                message: format!("spec is {size} bytes encoded, at most {MAX_SPEC_BYTES}"),
            }
            .into());
        }
    }
    let incoming: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let existing: Vec<ServiceSpec> = live_specs(table)
        .into_iter()
        .map(|(spec, _)| spec)
        .filter(|s| !incoming.contains(s.name.as_str()))
        .collect();
    check_dependency_cycles(existing.iter().chain(specs.iter()))?;

    let mut writes = Vec::new();
    let mut outcomes = Vec::with_capacity(specs.len());
    for spec in specs {
        let name = spec.name.clone();
        let (kind, version) = match table.live_service(&name) {
            Some((current, version))
                if *current == spec && !has_failures(table, &name, version) =>
            {
                (DeployKind::Unchanged, version)
            }
            Some(_) => (DeployKind::Updated, version_of(table, &name) + 1),
            None => (DeployKind::Created, version_of(table, &name) + 1),
        };
        if kind != DeployKind::Unchanged {
            writes.push((
                Key::Service(name.as_str().into()),
                Value::Service(ServiceRecord {
                    version,
                    spec: Some(spec),
                }),
            ));
        }
        outcomes.push(Deployed {
            name,
            version,
            kind,
        });
    }
    Ok((outcomes, writes))
}

/// Plans the removal of a live service (a spec-less record).
pub fn remove(table: &Table, name: &str) -> Result<(u64, Write), OpError> {
    if table.live_service(name).is_none() {
        return Err(OpError::Unknown(name.to_owned()));
    }
    let version = version_of(table, name) + 1;
    let value = Value::Service(ServiceRecord {
        version,
        spec: None,
    });
    Ok((version, (Key::Service(name.into()), value)))
}

/// Plans setting the replicas of a live service.
pub fn scale(table: &Table, name: &str, replicas: u32) -> Result<(u64, Write), OpError> {
    let Some((spec, _)) = table.live_service(name) else {
        return Err(OpError::Unknown(name.to_owned()));
    };
    if spec.every_node {
        return Err(SpecError {
            service: name.to_owned(),
            field: "replicas".into(),
            message: "runs on every eligible node; it has no replica count to scale".into(),
        }
        .into());
    }
    if replicas > MAX_REPLICAS {
        return Err(SpecError {
            service: name.to_owned(),
            field: "replicas".into(),
            message: format!("{replicas} is out of range 0..={MAX_REPLICAS}"),
        }
        .into());
    }
    let mut spec = spec.clone();
    spec.replicas = replicas;
    let version = version_of(table, name) + 1;
    let value = Value::Service(ServiceRecord {
        version,
        spec: Some(spec),
    });
    Ok((version, (Key::Service(name.into()), value)))
}
