//! The operator's writes: what `deploy`, `remove`, `scale`, `stop`,
//! `start`, `restart` and `rollback` write (the service record and its
//! [history] beside it), and why one writes nothing. Pure
//! planning over the table; the [`Node`](super::Node) stamps and applies
//! what is planned.

use serde::{Deserialize, Serialize};

use crate::history::{self, Cause};
use crate::key::{Key, KeyRef};
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
    /// The verb doesn't apply to the service as it is (`stop` of a
    /// stopped service, `rollback` to a version not kept).
    #[error("service {service}: {message}")]
    NotApplicable {
        /// The service.
        service: String,
        /// Why.
        message: String,
    },
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
    /// `drain --node` or `force-leave` of a node the table has no
    /// record of and membership never told of.
    #[error("no node named {0:?} is known to this agent")]
    UnknownNode(String),
    /// `force-leave` of a live node (or of this one).
    #[error(
        "node {0} is alive: force-leave only removes a down or left node (stop it first, or drain it)"
    )]
    NodeAlive(String),
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

/// Who writes, and when: stamped into the history.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// This node's name.
    pub origin: &'a str,
    /// Now (unix ms).
    pub now: u64,
}

/// Whether some slot of the service failed somewhere at `version`: then
/// deploying the same spec again writes a new version, which clears the
/// failures and retries.
fn has_failures(table: &Table, name: &str, version: u64) -> bool {
    table
        .claims_of(name)
        .any(|(_, c)| c.version == version && !c.failed_on.is_empty())
}

/// A record to write.
pub type Write = (Key, Value);

/// The first version whose instance spec `spec` (written as `version`)
/// has: the current one's when only what doesn't reach the process
/// changed.
fn instance_since(table: &Table, name: &str, spec: Option<&ServiceSpec>, version: u64) -> u64 {
    match (table.service(name), spec) {
        (Some(current), Some(new)) => match &current.spec {
            Some(old) if old.same_instance(new) => current.instance_since,
            _ => version,
        },
        _ => version,
    }
}

/// The service record of a new version of `name`, and its history.
pub fn service_writes(
    table: &Table,
    name: &str,
    spec: Option<ServiceSpec>,
    cause: Cause,
    writer: Writer<'_>,
) -> (u64, Vec<Write>) {
    let version = version_of(table, name) + 1;
    let record = ServiceRecord {
        version,
        instance_since: instance_since(table, name, spec.as_ref(), version),
        spec,
    };
    let history = history::append(table, name, &record, cause, writer.origin, writer.now);
    let writes = vec![
        (Key::Service(name.into()), Value::Service(record)),
        (Key::History(name.into()), Value::History(history)),
    ];
    (version, writes)
}

/// Plans a deploy. All or nothing: one invalid spec, a dependency cycle
/// with what is deployed, or an oversized spec, and nothing is written.
pub fn deploy(
    table: &Table,
    specs: Vec<ServiceSpec>,
    writer: Writer<'_>,
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
    for mut spec in specs {
        let name = spec.name.clone();
        let current = table.live_service(&name);
        // A deploy keeps what the verbs set: a stopped service stays
        // stopped, a restart's generation stays.
        if let Some((current, _)) = current {
            spec.stopped = current.stopped;
            spec.generation = current.generation;
            spec.slot_generations = current.slot_generations.clone();
        }
        let (kind, version) = match current {
            Some((current, version))
                if *current == spec && !has_failures(table, &name, version) =>
            {
                (DeployKind::Unchanged, version)
            }
            Some(_) => (DeployKind::Updated, version_of(table, &name) + 1),
            None => (DeployKind::Created, version_of(table, &name) + 1),
        };
        if kind != DeployKind::Unchanged {
            let (_, service) = service_writes(table, &name, Some(spec), Cause::Deploy, writer);
            writes.extend(service);
        }
        outcomes.push(Deployed {
            name,
            version,
            kind,
        });
    }
    Ok((outcomes, writes))
}

fn live<'t>(table: &'t Table, name: &str) -> Result<&'t ServiceSpec, OpError> {
    table
        .live_service(name)
        .map(|(spec, _)| spec)
        .ok_or_else(|| OpError::Unknown(name.to_owned()))
}

fn not_applicable(name: &str, message: impl Into<String>) -> OpError {
    OpError::NotApplicable {
        service: name.to_owned(),
        message: message.into(),
    }
}

/// Plans the removal of a live service (a spec-less record).
pub fn remove(table: &Table, name: &str, writer: Writer<'_>) -> Result<(u64, Vec<Write>), OpError> {
    live(table, name)?;
    Ok(service_writes(table, name, None, Cause::Remove, writer))
}

/// Plans setting the replicas of a live service.
pub fn scale(
    table: &Table,
    name: &str,
    replicas: u32,
    writer: Writer<'_>,
) -> Result<(u64, Vec<Write>), OpError> {
    let spec = live(table, name)?;
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
    Ok(service_writes(
        table,
        name,
        Some(spec),
        Cause::Scale,
        writer,
    ))
}

/// Plans `stop` (`run = false`) or `start` (`run = true`) of a live
/// service: the spec stays, its instances stop or run again.
pub fn set_running(
    table: &Table,
    name: &str,
    run: bool,
    writer: Writer<'_>,
) -> Result<(u64, Vec<Write>), OpError> {
    let spec = live(table, name)?;
    if spec.stopped != run {
        return Err(not_applicable(
            name,
            if run {
                "is running already"
            } else {
                "is stopped already"
            },
        ));
    }
    let mut spec = spec.clone();
    spec.stopped = !run;
    let cause = if run { Cause::Start } else { Cause::Stop };
    Ok(service_writes(table, name, Some(spec), cause, writer))
}

/// Plans `restart`: a new instance generation, which the slots take by
/// the update policy, one after another; or, with `slot`, a new one for
/// that slot alone (it restarts at once).
pub fn restart(
    table: &Table,
    name: &str,
    slot: Option<u32>,
    writer: Writer<'_>,
) -> Result<(u64, Vec<Write>), OpError> {
    let spec = live(table, name)?;
    if spec.stopped {
        return Err(not_applicable(name, "is stopped; `start` it instead"));
    }
    let mut spec = spec.clone();
    match slot {
        None => spec.generation += 1,
        Some(_) if spec.every_node => {
            return Err(not_applicable(
                name,
                "runs on every node; restart it whole (no --slot)",
            ));
        }
        Some(k) if k >= spec.replicas => {
            return Err(not_applicable(
                name,
                format!("has no slot {k} (slots 0..{})", spec.replicas),
            ));
        }
        Some(k) => *spec.slot_generations.entry(k).or_default() += 1,
    }
    Ok(service_writes(
        table,
        name,
        Some(spec),
        Cause::Restart(slot),
        writer,
    ))
}

/// Plans `rollback`: version `to` (by default the one before the
/// current) written again as a new version.
pub fn rollback(
    table: &Table,
    name: &str,
    to: Option<u64>,
    writer: Writer<'_>,
) -> Result<(u64, Vec<Write>), OpError> {
    let current = table
        .service(name)
        .ok_or_else(|| OpError::Unknown(name.to_owned()))?;
    let history = table.history(name);
    let kept = |v: u64| history.and_then(|h| h.get(v)).and_then(|e| e.spec.clone());
    let target = match to {
        Some(v) => v,
        None => history
            .and_then(|h| {
                h.versions
                    .iter()
                    .rev()
                    .find(|e| e.version < current.version && e.spec.is_some())
            })
            .map(|e| e.version)
            .ok_or_else(|| not_applicable(name, "has no earlier version kept"))?,
    };
    if target == current.version {
        return Err(not_applicable(
            name,
            format!("version {target} is the current one"),
        ));
    }
    let spec = kept(target).ok_or_else(|| {
        let versions: Vec<String> = history
            .map(|h| {
                h.versions
                    .iter()
                    .filter(|e| e.spec.is_some())
                    .map(|e| e.version.to_string())
                    .collect()
            })
            .unwrap_or_default();
        not_applicable(
            name,
            format!(
                "version {target} is not kept (kept: {})",
                if versions.is_empty() {
                    "none".into()
                } else {
                    versions.join(", ")
                }
            ),
        )
    })?;
    Ok(service_writes(
        table,
        name,
        Some(spec),
        Cause::Rollback(target),
        writer,
    ))
}

/// Plans an automatic revert of `name`, whose update to instance version
/// `failed` failed: the newest healthy version before it (`to`), written
/// again as a new version.
/// `None` when no healthy version is kept, or the update is no longer
/// the current one.
pub fn revert(
    table: &Table,
    name: &str,
    failed: u64,
    writer: Writer<'_>,
) -> Option<(u64, u64, Vec<Write>)> {
    let current = table.service(name)?;
    if current.instance_since != failed || current.spec.is_none() {
        return None;
    }
    let target = table.history(name)?.last_healthy(failed)?;
    let (to, spec) = (target.version, target.spec.clone()?);
    let (version, writes) = service_writes(
        table,
        name,
        Some(spec),
        Cause::Revert {
            failed: current.version,
            to,
        },
        writer,
    );
    Some((version, to, writes))
}

/// What `drain --node NODE` writes: `node`'s record as the table has it,
/// draining (`on`) or not. That node writes its record again when it
/// takes the request up.
pub fn drain_node(table: &Table, node: &str, on: bool, now: u64) -> Result<Vec<Write>, OpError> {
    let mut record = table
        .node(node)
        .cloned()
        .ok_or_else(|| OpError::UnknownNode(node.to_owned()))?;
    record.draining = on;
    record.drain_started_ms = if on || record.leaving { now } else { 0 };
    Ok(vec![(Key::Node(node.into()), Value::Node(record))])
}

/// What `force-leave NODE` writes: tombstones over `node`'s record and its
/// status records. Refused for this node (`me`) and for a live member.
pub fn force_leave(
    table: &Table,
    members: &crate::placement::Members,
    me: &str,
    node: &str,
) -> Result<Vec<Write>, OpError> {
    if node == me || members.is_live(node) {
        return Err(OpError::NodeAlive(node.to_owned()));
    }
    let recorded = table.get_ref(KeyRef::Node(node)).is_some();
    if !recorded && !members.heard_of(node) {
        return Err(OpError::UnknownNode(node.to_owned()));
    }
    let statuses = table
        .statuses_of(node)
        .map(|(key, ..)| (key.clone(), Value::Tombstone));
    Ok(std::iter::once((Key::Node(node.into()), Value::Tombstone))
        .chain(statuses)
        .collect())
}
