//! Property tests of the table: the CRDT laws, digest sync, spec files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::time::Duration;

use mob_scheduler::record::{Claim, ServiceRecord, Value};
use mob_scheduler::spec::{Constraints, Params, Partition, RestartPolicy};
use mob_scheduler::spec_file::{parse_specs, to_json, to_toml};
use mob_scheduler::{Key, Record, ServiceSpec, Table, Timestamp};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,8}"
}

fn spec() -> impl Strategy<Value = ServiceSpec> {
    let params = prop_oneof![
        (
            prop::collection::vec("[a-z/]{1,6}", 1..4),
            prop::option::of("/[a-z]{1,5}")
        )
            .prop_map(|(command, cwd)| Params::Exec {
                command,
                cwd,
                user: None
            }),
        "[a-z ]{1,20}[a-z]".prop_map(|command| Params::Shell {
            command,
            cwd: None,
            user: Some("nobody".into())
        }),
        (
            "[a-z/:]{1,10}",
            prop::collection::vec("[a-z0-9-]{1,5}", 0..3),
            prop::collection::vec("[0-9]{2,4}:[0-9]{2}", 0..2)
        )
            .prop_map(|(image, args, ports)| Params::Docker {
                image,
                args,
                ports,
                volumes: vec![]
            }),
    ];
    (
        name(),
        params,
        0u32..=1000,
        prop_oneof![
            Just(RestartPolicy::Always),
            Just(RestartPolicy::OnFailure),
            Just(RestartPolicy::Never)
        ],
        (0u32..20, 1u64..600_000, 1u64..60_000, 1u64..60_000),
        prop::collection::vec(name(), 0..3),
        prop::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{0,4}", 0..3),
        // (No `$`: a `${` must name a variable the spec has.)
        prop::collection::btree_map("[A-Z_]{1,6}", "[ -#%-~]{0,8}", 0..3),
    )
        .prop_map(
            |(
                name,
                params,
                replicas,
                restart,
                (max_restarts, window, stable, stop),
                depends_on,
                tags,
                env,
            )| ServiceSpec {
                name,
                params,
                replicas,
                every_node: false,
                partition: if stop % 2 == 0 {
                    Partition::Available
                } else {
                    Partition::AtMostOnce
                },
                restart,
                max_restarts,
                restart_window: Duration::from_millis(window),
                stable_after: Duration::from_millis(stable),
                stop_timeout: Duration::from_millis(stop),
                depends_on,
                constraints: Constraints { tags },
                rebalance: env.len() % 2 == 0,
                inherit_env: max_restarts % 2 == 0,
                check: None,
                update: Default::default(),
                stopped: false,
                generation: 0,
                slot_generations: Default::default(),
                ports: Default::default(),
                env,
            },
        )
}

/// Records drawn from few keys and few timestamps, so keys collide and
/// equal timestamps with different values occur.
fn record() -> impl Strategy<Value = (Key, Record)> {
    let key = prop_oneof![
        Just("svc/a"),
        Just("svc/b"),
        Just("claim/a/0"),
        Just("node/x"),
        Just("status/x/a/0")
    ];
    let ts = (0u64..4, 0u32..3, prop_oneof![Just("n1"), Just("n2")]).prop_map(
        |(wall_ms, counter, node)| Timestamp {
            wall_ms,
            counter,
            node: node.into(),
        },
    );
    let value = prop_oneof![
        Just(Value::Tombstone),
        (0u64..3).prop_map(|version| Value::Service(ServiceRecord {
            version,
            instance_since: version,
            spec: None
        })),
        (0u64..3, spec()).prop_map(|(version, s)| Value::Service(ServiceRecord {
            version,
            instance_since: version,
            spec: Some(s)
        })),
        prop::option::of(prop_oneof![Just("n1".to_string()), Just("n2".to_string())]).prop_map(
            |owner| Value::Claim(Claim {
                owner,
                failed_on: vec![],
                version: 0,
            })
        ),
    ];
    (key, ts, value).prop_map(|(k, ts, value)| (k.parse::<Key>().unwrap(), Record { ts, value }))
}

fn table() -> impl Strategy<Value = Table> {
    prop::collection::vec(record(), 0..12).prop_map(Table::from_records)
}

fn merged(a: &Table, b: &Table) -> Table {
    let mut m = a.clone();
    m.merge(b);
    m
}

/// One anti-entropy round as the agent runs it: `a` sends its digest, `b`
/// answers with its records of the differing buckets, `a` merges and sends
/// back its records of those buckets.
/// A round as the agent runs it: `b` sends its records of the buckets that
/// differ; `a` merges them and sends back its own, less what `b` sent.
fn sync_round(a: &mut Table, b: &mut Table) {
    let buckets = b.differing_buckets(&a.digest());
    let sent = b.records_in(&buckets);
    for (k, r) in sent.clone() {
        a.apply(k, r);
    }
    for (k, r) in a.records_in_except(&buckets, &sent) {
        b.apply(k, r);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merge_is_commutative(a in table(), b in table()) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn merge_is_associative(a in table(), b in table(), c in table()) {
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    #[test]
    fn merge_is_idempotent(a in table(), b in table()) {
        prop_assert_eq!(merged(&a, &a), a.clone());
        let ab = merged(&a, &b);
        prop_assert_eq!(merged(&ab, &b), ab);
    }

    #[test]
    fn digest_tracks_content(a in table(), b in table()) {
        // Incrementally kept digests equal recomputed ones, and equal
        // tables have equal digests.
        let mut fresh = a.clone();
        fresh.rebuild_digest();
        prop_assert_eq!(fresh.digest(), a.digest());
        let (ab, ba) = (merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(ab.digest(), ba.digest());
    }

    #[test]
    fn forgetting_keeps_the_digest_exact(a in table(), keep in any::<u64>()) {
        // Forget about half the records (chosen by `keep`'s bits).
        let mut forgot = a.clone();
        let keys: Vec<Key> = a.iter().map(|(k, _)| k.clone()).collect();
        for (i, key) in keys.iter().enumerate() {
            if keep >> (i % 64) & 1 == 0 {
                prop_assert!(forgot.forget(key));
            }
        }
        prop_assert!(!forgot.forget(&Key::Service("never-there".into())));
        let mut fresh = forgot.clone();
        fresh.rebuild_digest();
        prop_assert_eq!(fresh.digest(), forgot.digest());
        let rebuilt = Table::from_records(forgot.iter().map(|(k, r)| (k.clone(), r.clone())));
        prop_assert_eq!(rebuilt.digest(), forgot.digest());
    }

    #[test]
    fn one_sync_round_converges_to_the_merge(mut a in table(), mut b in table()) {
        let expected = merged(&a, &b);
        sync_round(&mut a, &mut b);
        prop_assert_eq!(&a, &expected);
        prop_assert_eq!(&b, &expected);
        prop_assert!(a.differing_buckets(&b.digest()).is_empty());
    }

    #[test]
    fn spec_toml_roundtrip(specs in prop::collection::vec(spec(), 1..4)) {
        let mut seen = std::collections::HashSet::new();
        let specs: Vec<ServiceSpec> = specs.into_iter().filter(|s| seen.insert(s.name.clone())).collect();
        let text = to_toml(&specs).unwrap();
        prop_assert_eq!(parse_specs(&text).unwrap(), specs.clone(), "{}", text);
        let json = to_json(&specs);
        prop_assert_eq!(parse_specs(&json).unwrap(), specs, "{}", json);
    }
}

#[test]
fn a_stale_write_never_wins() {
    let ts = |wall_ms| Timestamp {
        wall_ms,
        counter: 0,
        node: "n".into(),
    };
    let mut t = Table::new();
    let live = Value::Service(ServiceRecord {
        version: 2,
        instance_since: 2,
        spec: None,
    });
    assert!(t.apply(
        Key::Service("a".into()),
        Record {
            ts: ts(5),
            value: live.clone()
        }
    ));
    assert!(!t.apply(
        Key::Service("a".into()),
        Record {
            ts: ts(4),
            value: Value::Tombstone
        }
    ));
    assert_eq!(t.get(&Key::Service("a".into())).unwrap().value, live);
    assert!(t.apply(
        Key::Service("a".into()),
        Record {
            ts: ts(6),
            value: Value::Tombstone
        }
    ));
    assert_eq!(
        t.get(&Key::Service("a".into())).unwrap().value,
        Value::Tombstone
    );
}
