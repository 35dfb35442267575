//! Garbage collection: which records the table can forget.
//!
//! Deletions are writes (tombstones, removed services, released claims) and
//! the status and node records of a node stay after it is gone, so without
//! collection the table only grows. A record is garbage when it is older
//! than the horizon (`now - max_age`, by its timestamp's wall clock) and it
//! can no longer matter:
//!
//! - a tombstone, or the record (or the history) of a removed service;
//! - a claim or a status of a slot that no live service has;
//! - the status and node records of a node gone for good (not live for
//!   longer than `max_age`, as the caller observed it).
//!
//! Forgetting is local and outside the merge laws: each node collects on
//! its own, and forgets again at once what a peer that has not collected
//! yet sends back ([`is_garbage`] on the records a merge added), so they
//! don't bounce.
//!
//! The cost of forgetting a deletion: an agent that was away for longer than
//! `max_age` and comes back with an older copy of a record brings it back
//! (like Cassandra's `gc_grace_seconds`). `max_age` (default 24 h) is the
//! longest absence the cluster tolerates without that.

use crate::key::Key;
use crate::record::{Record, Value};
use crate::table::Table;

/// What collection may remove at one moment.
pub struct Horizon<'a> {
    /// Records written before this unix time (ms) are old enough.
    pub before_ms: u64,
    /// Whether a node is gone for good.
    pub gone: &'a dyn Fn(&str) -> bool,
}

/// Whether `table` may forget (or refuse) `record` under `key`.
pub fn is_garbage(table: &Table, key: &Key, record: &Record, horizon: &Horizon<'_>) -> bool {
    is_garbage_in(key, record, horizon, &|service, slot| {
        slot_is_live(table, service, slot)
    })
}

/// [`is_garbage`], with `live(service, slot)` saying whether a slot exists.
fn is_garbage_in(
    key: &Key,
    record: &Record,
    horizon: &Horizon<'_>,
    live: &dyn Fn(&str, u32) -> bool,
) -> bool {
    if record.ts.wall_ms >= horizon.before_ms {
        return false;
    }
    match (&record.value, key) {
        (Value::Tombstone, _) => true,
        (Value::Service(s), _) => s.spec.is_none(),
        (Value::Claim(_), Key::Claim(service, slot)) => !live(service, *slot),
        (Value::Status(_), Key::Status(node, service, slot)) => {
            (horizon.gone)(node) || !live(service, *slot)
        }
        (Value::Node(_), Key::Node(node)) => (horizon.gone)(node),
        // A key is kept until it is removed.
        (Value::ClusterKey(_), _) => false,
        // Kept while the service is, and for `max_age` after its removal.
        (Value::History(h), _) => h.versions.last().is_none_or(|v| v.spec.is_none()),
        // A value under another kind's key is never admitted; if one is
        // there, nothing reads it.
        _ => true,
    }
}

/// Every key of `table` that is garbage, in key order.
pub fn garbage(table: &Table, horizon: &Horizon<'_>) -> Vec<Key> {
    // Every record is judged, in key order: the records of one service or
    // one node are neighbours, so remember the last answer.
    // Names are never empty: "" means nothing remembered yet.
    let last_service = std::cell::RefCell::new((String::new(), None));
    let live = |service: &str, slot: u32| {
        let mut last = last_service.borrow_mut();
        if last.0 != service {
            let spec = table.live_service(service).map(|(spec, _)| spec);
            *last = (service.to_owned(), spec);
        }
        last.1.is_some_and(|s| s.has_slot(slot))
    };
    let last_node = std::cell::RefCell::new((String::new(), false));
    let gone = |node: &str| {
        let mut last = last_node.borrow_mut();
        if last.0 != node {
            *last = (node.to_owned(), (horizon.gone)(node));
        }
        last.1
    };
    let memo = Horizon {
        before_ms: horizon.before_ms,
        gone: &gone,
    };
    table
        .iter()
        .filter(|(key, record)| is_garbage_in(key, record, &memo, &live))
        .map(|(key, _)| key.clone())
        .collect()
}

fn slot_is_live(table: &Table, service: &str, slot: u32) -> bool {
    table
        .live_service(service)
        .is_some_and(|(spec, _)| spec.has_slot(slot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;
    use crate::record::{Claim, ServiceRecord};
    use crate::spec_file::parse_specs;

    const DAY: u64 = 86_400_000;

    fn at(wall_ms: u64, value: Value) -> Record {
        Record {
            ts: Timestamp {
                wall_ms,
                counter: 0,
                node: "n1".into(),
            },
            value,
        }
    }

    fn node_record() -> Value {
        Value::Node(crate::record::NodeRecord {
            addr: "127.0.0.1:7946".into(),
            providers: Vec::new(),
            tags: Default::default(),
            draining: false,
            drain_started_ms: 0,
            leaving: false,
            version: "test".into(),
            started_at_ms: 0,
            keys: Vec::new(),
        })
    }

    fn status() -> Value {
        Value::Status(crate::record::Status {
            state: crate::record::InstanceState::Running,
            pid: Some(1),
            restarts: 0,
            since_ms: 0,
            last_exit: None,
            last_signal: None,
            last_error: None,
            version: 1,
            started_ms: 0,
            proven: false,
            ip: None,
            ports: Default::default(),
        })
    }

    fn claim(owner: &str) -> Value {
        Value::Claim(Claim {
            owner: Some(owner.into()),
            failed_on: Vec::new(),
            version: 1,
        })
    }

    /// A table written ten days ago: `web` (2 replicas) live, `old` removed.
    fn table() -> Table {
        let spec = parse_specs(
            r#"{"name": "web", "provider": "exec", "replicas": 2, "params": {"command": "x"}}"#,
        )
        .unwrap()
        .remove(0);
        let t = 10 * DAY;
        let records = [
            (
                Key::Service("web".into()),
                Value::Service(ServiceRecord {
                    version: 1,
                    instance_since: 1,
                    spec: Some(spec),
                }),
            ),
            (
                Key::Service("old".into()),
                Value::Service(ServiceRecord {
                    version: 2,
                    instance_since: 2,
                    spec: None,
                }),
            ),
            (Key::Claim("web".into(), 0), claim("alive")),
            (Key::Claim("web".into(), 1), claim("gone")),
            (Key::Claim("web".into(), 2), claim("alive")),
            (Key::Claim("old".into(), 0), claim("alive")),
            (Key::Status("alive".into(), "web".into(), 0), status()),
            (Key::Status("gone".into(), "web".into(), 1), status()),
            (Key::Status("alive".into(), "old".into(), 0), status()),
            (Key::Node("alive".into()), node_record()),
            (Key::Node("gone".into()), node_record()),
            (
                Key::Status("alive".into(), "web".into(), 9),
                Value::Tombstone,
            ),
        ];
        Table::from_records(records.into_iter().map(|(k, v)| (k, at(t, v))))
    }

    #[test]
    fn collects_only_what_can_no_longer_matter() {
        let table = table();
        let gone = |node: &str| node == "gone";
        let horizon = Horizon {
            before_ms: 11 * DAY,
            gone: &gone,
        };
        assert_eq!(
            garbage(&table, &horizon),
            vec![
                Key::Service("old".into()),
                Key::Claim("old".into(), 0),
                Key::Claim("web".into(), 2),
                Key::Status("alive".into(), "old".into(), 0),
                Key::Status("alive".into(), "web".into(), 9),
                Key::Status("gone".into(), "web".into(), 1),
                Key::Node("gone".into()),
            ]
        );
    }

    #[test]
    fn nothing_younger_than_the_horizon_is_garbage() {
        let table = table();
        let everyone_gone = |_: &str| true;
        let horizon = Horizon {
            before_ms: 10 * DAY,
            gone: &everyone_gone,
        };
        assert!(garbage(&table, &horizon).is_empty());
    }

    #[test]
    fn live_nodes_keep_their_records_however_old() {
        let table = table();
        let nobody_gone = |_: &str| false;
        let horizon = Horizon {
            before_ms: 100 * DAY,
            gone: &nobody_gone,
        };
        let garbage = garbage(&table, &horizon);
        assert!(!garbage.contains(&Key::Node("gone".into())));
        assert!(!garbage.contains(&Key::Status("gone".into(), "web".into(), 1)));
        assert!(garbage.contains(&Key::Service("old".into())));
    }
}
