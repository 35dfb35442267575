//! The table with its clock, and the operator's operations on it. Pure:
//! the caller passes `now_ms` and ships the returned records.

use mob_scheduler::record::{ServiceRecord, Value, service_key};
use mob_scheduler::spec::{MAX_REPLICAS, check_dependency_cycles};
use mob_scheduler::{Clock, Record, ServiceSpec, SpecError, Table};

/// Largest encoded spec accepted, so every record stays shippable.
pub(crate) const MAX_SPEC_BYTES: usize = 64 * 1024;

/// Why an operation wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpError {
    /// No live service has that name.
    #[error("no service named {0:?}")]
    Unknown(String),
    /// The spec is invalid.
    #[error(transparent)]
    Invalid(#[from] SpecError),
}

/// What a deploy did to one service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum DeployKind {
    /// New (or redeployed after removal).
    Created,
    /// Spec changed.
    Updated,
    /// Same spec as already stored; nothing written.
    Unchanged,
}

/// One service's deploy outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Deployed {
    pub(crate) name: String,
    pub(crate) version: u64,
    pub(crate) kind: DeployKind,
}

/// What happened to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Deployed,
    Updated,
    Removed,
}

/// A change of a service as an operator sees it, for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceChange {
    pub(crate) kind: ChangeKind,
    pub(crate) name: String,
    pub(crate) version: u64,
    pub(crate) origin: String,
}

/// Records written by an operation, to be broadcast, and their changes.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub(crate) records: Vec<(String, Record)>,
    pub(crate) changes: Vec<ServiceChange>,
}

/// How far ahead of this node's clock a peer's write may be. Further means
/// a broken clock, and taking it would drag every later write along (the
/// clock never goes back).
pub(crate) const MAX_CLOCK_AHEAD_MS: u64 = 3_600_000;

/// Whether a record from a peer is one this version writes: the value
/// fits its key's kind, a service's spec is valid and named as its key,
/// and it was not written more than [`MAX_CLOCK_AHEAD_MS`] in our future.
/// Peers hold the cluster key, but a buggy or newer one must not plant
/// a spec the CLI would refuse (one with a million replicas, say).
pub(crate) fn is_well_formed(key: &str, record: &Record, now_ms: u64) -> bool {
    use mob_scheduler::record::{CLAIM_PREFIX, NODE_PREFIX, SERVICE_PREFIX, STATUS_PREFIX};
    if record.ts.wall_ms > now_ms.saturating_add(MAX_CLOCK_AHEAD_MS) {
        return false;
    }
    match &record.value {
        Value::Service(s) => key.strip_prefix(SERVICE_PREFIX).is_some_and(|name| {
            s.spec
                .as_ref()
                .is_none_or(|spec| spec.name == name && spec.validate().is_ok())
        }),
        Value::Claim(_) => key.starts_with(CLAIM_PREFIX),
        Value::Status(_) => key.starts_with(STATUS_PREFIX),
        Value::Node(_) => key.starts_with(NODE_PREFIX),
        Value::Tombstone => [CLAIM_PREFIX, STATUS_PREFIX, NODE_PREFIX]
            .iter()
            .any(|prefix| key.starts_with(prefix)),
    }
}

/// The node's table and clock.
pub(crate) struct Replica {
    table: Table,
    clock: Clock,
}

impl Replica {
    /// Wraps a loaded table; the clock starts after everything in it.
    pub(crate) fn new(node: &str, table: Table) -> Self {
        let mut clock = Clock::new(node);
        for (_, record) in table.iter() {
            clock.observe(&record.ts);
        }
        Self { table, clock }
    }

    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    fn live_spec(&self, name: &str) -> Option<(u64, &ServiceSpec)> {
        match self.table.get(&service_key(name)).map(|r| &r.value) {
            Some(Value::Service(ServiceRecord {
                version,
                spec: Some(spec),
            })) => Some((*version, spec)),
            _ => None,
        }
    }

    fn version_of(&self, name: &str) -> u64 {
        match self.table.get(&service_key(name)).map(|r| &r.value) {
            Some(Value::Service(s)) => s.version,
            _ => 0,
        }
    }

    /// Whether some slot of the service failed somewhere at `version`:
    /// then deploying the same spec again writes a new version, which
    /// clears the failures and retries.
    fn has_failures(&self, name: &str, version: u64) -> bool {
        let prefix = format!("{}{name}/", mob_scheduler::record::CLAIM_PREFIX);
        self.table.with_prefix(&prefix).any(|(_, r)| {
            matches!(&r.value, Value::Claim(c) if c.version == version && !c.failed_on.is_empty())
        })
    }

    fn write(&mut self, key: String, value: Value, now_ms: u64, out: &mut Written) {
        let record = Record {
            ts: self.clock.tick(now_ms),
            value,
        };
        out.changes
            .extend(self.apply(key.clone(), record.clone()).1);
        out.records.push((key, record));
    }

    /// Writes one record of this node's own (claim, status, node record).
    pub(crate) fn write_record(&mut self, key: String, value: Value, now_ms: u64) -> Written {
        let mut written = Written::default();
        self.write(key, value, now_ms, &mut written);
        written
    }

    /// Adds or updates services. All or nothing: one invalid spec, a
    /// dependency cycle with what is deployed, or an oversized spec, and
    /// nothing is written.
    pub(crate) fn deploy(
        &mut self,
        specs: Vec<ServiceSpec>,
        now_ms: u64,
    ) -> Result<(Vec<Deployed>, Written), OpError> {
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
        let incoming: std::collections::HashSet<&str> =
            specs.iter().map(|s| s.name.as_str()).collect();
        let existing: Vec<ServiceSpec> = mob_scheduler::services_view::live_specs(&self.table)
            .into_iter()
            .map(|(spec, _)| spec)
            .filter(|s| !incoming.contains(s.name.as_str()))
            .collect();
        check_dependency_cycles(existing.iter().chain(specs.iter()))?;

        let mut written = Written::default();
        let mut outcomes = Vec::with_capacity(specs.len());
        for spec in specs {
            let name = spec.name.clone();
            let (kind, version) = match self.live_spec(&name) {
                Some((version, current))
                    if *current == spec && !self.has_failures(&name, version) =>
                {
                    (DeployKind::Unchanged, version)
                }
                Some(_) => (DeployKind::Updated, self.version_of(&name) + 1),
                None => (DeployKind::Created, self.version_of(&name) + 1),
            };
            if kind != DeployKind::Unchanged {
                let value = Value::Service(ServiceRecord {
                    version,
                    spec: Some(spec),
                });
                self.write(service_key(&name), value, now_ms, &mut written);
            }
            outcomes.push(Deployed {
                name,
                version,
                kind,
            });
        }
        Ok((outcomes, written))
    }

    /// Removes a live service (writes its tombstone).
    pub(crate) fn remove(&mut self, name: &str, now_ms: u64) -> Result<(u64, Written), OpError> {
        if self.live_spec(name).is_none() {
            return Err(OpError::Unknown(name.to_owned()));
        }
        let version = self.version_of(name) + 1;
        let mut written = Written::default();
        self.write(
            service_key(name),
            Value::Service(ServiceRecord {
                version,
                spec: None,
            }),
            now_ms,
            &mut written,
        );
        Ok((version, written))
    }

    /// Sets the replicas of a live service.
    pub(crate) fn scale(
        &mut self,
        name: &str,
        replicas: u32,
        now_ms: u64,
    ) -> Result<(u64, Written), OpError> {
        let Some((_, spec)) = self.live_spec(name) else {
            return Err(OpError::Unknown(name.to_owned()));
        };
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
        let version = self.version_of(name) + 1;
        let mut written = Written::default();
        self.write(
            service_key(name),
            Value::Service(ServiceRecord {
                version,
                spec: Some(spec),
            }),
            now_ms,
            &mut written,
        );
        Ok((version, written))
    }

    /// Forgets a record (garbage collection).
    pub(crate) fn forget(&mut self, key: &str) -> bool {
        self.table.forget(key)
    }

    /// Merges records from a peer: whether the table changed, and the
    /// service changes to log.
    pub(crate) fn merge(&mut self, records: Vec<(String, Record)>) -> (bool, Vec<ServiceChange>) {
        let mut changed = false;
        let mut changes = Vec::new();
        for (key, record) in records {
            let (c, change) = self.apply(key, record);
            changed |= c;
            changes.extend(change);
        }
        (changed, changes)
    }

    /// Merges one record: whether it changed the table, and the service
    /// change it made.
    fn apply(&mut self, key: String, record: Record) -> (bool, Option<ServiceChange>) {
        self.clock.observe(&record.ts);
        let before = match self.table.get(&key).map(|r| &r.value) {
            Some(Value::Service(s)) => Some(s.spec.is_some()),
            _ => None,
        };
        let origin = record.ts.node.clone();
        let after = match &record.value {
            Value::Service(s) => Some((s.spec.is_some(), s.version)),
            _ => None,
        };
        if !self.table.apply(key.clone(), record) {
            return (false, None);
        }
        let Some((live_after, version)) = after else {
            return (true, None);
        };
        let kind = match (before.unwrap_or(false), live_after) {
            (false, true) => ChangeKind::Deployed,
            (true, true) => ChangeKind::Updated,
            (true, false) => ChangeKind::Removed,
            (false, false) => return (true, None),
        };
        let name = key
            .strip_prefix(mob_scheduler::record::SERVICE_PREFIX)
            .unwrap_or(&key)
            .to_owned();
        (
            true,
            Some(ServiceChange {
                kind,
                name,
                version,
                origin,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mob_scheduler::spec_file::parse_specs;

    fn spec(text: &str) -> Vec<ServiceSpec> {
        parse_specs(text).unwrap()
    }

    const WEB: &str = r#"{"name":"web","provider":"shell","params":{"command":"sleep 100"}}"#;

    #[test]
    fn records_a_peer_may_send() {
        let mut r = Replica::new("n1", Table::new());
        let (_, w) = r.deploy(spec(WEB), 1).unwrap();
        let (key, good) = w.records[0].clone();
        let now = good.ts.wall_ms;
        assert!(is_well_formed(&key, &good, now));
        let mut ahead = good.clone();
        ahead.ts.wall_ms = now + MAX_CLOCK_AHEAD_MS;
        assert!(is_well_formed(&key, &ahead, now), "an hour ahead is fine");
        ahead.ts.wall_ms += 1;
        assert!(!is_well_formed(&key, &ahead, now), "from the far future");
        assert!(
            !is_well_formed("svc/other", &good, now),
            "named unlike its key"
        );
        assert!(
            !is_well_formed("node/web", &good, now),
            "a service under node/"
        );
        let mut huge = good.clone();
        if let Value::Service(ServiceRecord {
            spec: Some(spec), ..
        }) = &mut huge.value
        {
            spec.replicas = 1_000_000;
        }
        assert!(!is_well_formed(&key, &huge, now));
        let tombstone = Record {
            value: Value::Tombstone,
            ..good
        };
        assert!(is_well_formed("status/n1/web/0", &tombstone, now));
        assert!(
            !is_well_formed(&key, &tombstone, now),
            "services are removed, not tombstoned"
        );
        assert!(!is_well_formed("other/x", &tombstone, now));
    }

    #[test]
    fn deploy_update_unchanged_scale_remove() {
        let mut r = Replica::new("n1", Table::new());
        let (out, w) = r.deploy(spec(WEB), 1).unwrap();
        assert_eq!(
            out[0],
            Deployed {
                name: "web".into(),
                version: 1,
                kind: DeployKind::Created
            }
        );
        assert_eq!(w.records.len(), 1);
        assert_eq!(w.changes[0].kind, ChangeKind::Deployed);
        let (out, w) = r.deploy(spec(WEB), 2).unwrap();
        assert_eq!(out[0].kind, DeployKind::Unchanged);
        assert!(w.records.is_empty());
        let (v, w) = r.scale("web", 3, 3).unwrap();
        assert_eq!(v, 2);
        assert_eq!(w.changes[0].kind, ChangeKind::Updated);
        let (v, w) = r.remove("web", 4).unwrap();
        assert_eq!(v, 3);
        assert_eq!(w.changes[0].kind, ChangeKind::Removed);
        assert!(matches!(r.remove("web", 5), Err(OpError::Unknown(_))));
        // Redeploy after removal continues the version sequence.
        let (out, _) = r.deploy(spec(WEB), 6).unwrap();
        assert_eq!(
            (out[0].version, out[0].kind.clone()),
            (4, DeployKind::Created)
        );
    }

    #[test]
    fn redeploying_a_failed_service_retries_it() {
        let mut r = Replica::new("n1", Table::new());
        r.deploy(spec(WEB), 1).unwrap();
        let claim = mob_scheduler::record::Claim {
            owner: None,
            failed_on: vec!["n1".into()],
            version: 1,
        };
        r.write_record("claim/web/0".into(), Value::Claim(claim), 2);
        let (out, w) = r.deploy(spec(WEB), 3).unwrap();
        assert_eq!(
            (out[0].version, out[0].kind.clone()),
            (2, DeployKind::Updated)
        );
        assert_eq!(w.records.len(), 1);
    }

    #[test]
    fn bad_input_writes_nothing() {
        let mut r = Replica::new("n1", Table::new());
        r.deploy(
            spec(r#"{"name":"a","provider":"shell","depends_on":["b"],"params":{"command":"x"}}"#),
            1,
        )
        .unwrap();
        let before = r.table().clone();
        let cyc = spec(
            r#"[{"name":"b","provider":"shell","depends_on":["a"],"params":{"command":"x"}},{"name":"c","provider":"shell","params":{"command":"x"}}]"#,
        );
        let err = r.deploy(cyc, 2).unwrap_err();
        assert!(err.to_string().contains("cycle"), "{err}");
        assert!(
            r.scale("a", 1001, 3)
                .unwrap_err()
                .to_string()
                .contains("replicas")
        );
        assert!(matches!(r.scale("zzz", 1, 3), Err(OpError::Unknown(_))));
        let mut huge = spec(WEB);
        huge[0].env.insert("BIG".into(), "x".repeat(MAX_SPEC_BYTES));
        assert!(r.deploy(huge, 4).unwrap_err().to_string().contains("bytes"));
        assert_eq!(r.table(), &before);
    }

    #[test]
    fn remote_changes_are_reported_once() {
        let mut a = Replica::new("a", Table::new());
        let mut b = Replica::new("b", Table::new());
        let (_, w) = a.deploy(spec(WEB), 10).unwrap();
        let (k, rec) = w.records[0].clone();
        let (changed, changes) = b.merge(vec![(k.clone(), rec.clone())]);
        assert!(changed);
        let change = &changes[0];
        assert_eq!(
            (change.kind, change.origin.as_str(), change.version),
            (ChangeKind::Deployed, "a", 1)
        );
        assert_eq!(b.merge(vec![(k, rec)]), (false, vec![]));
        // b's next write orders after a's, even with b's clock behind.
        let (_, w) = b.scale("web", 2, 1).unwrap();
        assert!(w.records[0].1.ts > a.table().get("svc/web").unwrap().ts);
    }
}
