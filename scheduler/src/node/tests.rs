//! One test per rule of the node core, with a fixed clock and no sockets.

use std::net::SocketAddr;

use super::*;
use crate::history::{Cause, Outcome};
use crate::record::{InstanceState, ServiceRecord, Status};
use crate::spec_file::parse_specs;

const T0: u64 = 1_000_000;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7946))
}

fn config(name: &str, i: u8, has_seeds: bool) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        addr: addr(i),
        providers: vec![ProviderKind::Exec, ProviderKind::Shell],
        tags: BTreeMap::new(),
        version: "test".into(),
        has_seeds,
        broadcast_deltas: true,
        anti_entropy_period_ms: 2_000,
        gc_after_ms: 86_400_000,
        seed: 1,
        rebalance_interval_ms: 2_000,
        detection: DETECTION,
        keyring: Default::default(),
    }
}

/// Membership's timings, as the agent's defaults.
const DETECTION: Detection = Detection {
    probe_period_ms: 500,
    probe_rtt_ms: 150,
    suspect_to_down_ms: 1_500,
};

fn peer(name: &str, i: u8) -> Peer {
    Peer {
        name: name.into(),
        addr: addr(i),
        incarnation: 1,
        state: PeerState::Alive,
    }
}

/// A peer membership lists as down.
fn gone(name: &str, i: u8) -> Peer {
    Peer {
        state: PeerState::Gone,
        ..peer(name, i)
    }
}

fn specs(text: &str) -> Vec<crate::ServiceSpec> {
    parse_specs(text).unwrap()
}

const WEB: &str = r#"{"name":"web","provider":"shell","params":{"command":"sleep 100"}}"#;

/// A running instance's status.
fn running(pid: u32, since_ms: u64, version: u64) -> Status {
    Status {
        state: InstanceState::Running,
        pid: Some(pid),
        restarts: 0,
        since_ms,
        last_exit: None,
        last_signal: None,
        last_error: None,
        version,
        started_ms: since_ms,
        proven: false,
        ip: None,
        ports: Default::default(),
    }
}

/// Everything a node wrote, by key, from its broadcasts.
fn written(effects: &[Effect]) -> Vec<Key> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast(records) => Some(records.iter().map(|(k, _)| k.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

fn starts(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Start { .. }))
        .count()
}

fn reply(effects: &[Effect], id: RequestId) -> Option<&Reply> {
    effects.iter().find_map(|e| match e {
        Effect::Reply(i, r) if *i == id => Some(r),
        _ => None,
    })
}

fn save(effects: &[Effect]) -> Option<u64> {
    effects.iter().find_map(|e| match e {
        Effect::Save { seq } => Some(*seq),
        _ => None,
    })
}

/// Save `seq` failed with `error`.
fn failed(seq: u64, error: &str) -> Input {
    Input::Saved {
        seq,
        result: Err(error.to_owned()),
    }
}

/// Handles `request` at `at`, then its save's completion: every effect.
fn answered(node: &mut Node, id: RequestId, request: Request, at: u64) -> Vec<Effect> {
    let mut out = node.handle(Input::Request(id, request), at);
    if let Some(seq) = save(&out) {
        out.extend(node.handle(
            Input::Saved {
                seq,
                result: Ok(()),
            },
            at,
        ));
    }
    out
}

/// A lone node without seeds, with `web` deployed and saved; and every
/// effect it had.
fn lone_with_web() -> (Node, Vec<Effect>) {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    let mut all = node.handle(Input::Tick, T0);
    let out = node.handle(Input::Request(1, Request::Deploy(specs(WEB))), T0 + 10);
    let seq = save(&out).unwrap();
    all.extend(out);
    all.extend(node.handle(
        Input::Saved {
            seq,
            result: Ok(()),
        },
        T0 + 11,
    ));
    all.extend(node.handle(Input::Tick, T0 + 20));
    (node, all)
}

#[test]
fn an_operator_write_is_answered_only_once_saved() {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    node.handle(Input::Tick, T0);
    let out = node.handle(Input::Request(7, Request::Deploy(specs(WEB))), T0 + 1);
    assert!(reply(&out, 7).is_none(), "answered before the save");
    let seq = save(&out).expect("saved at once");
    assert!(written(&out).is_empty(), "sent before the save");
    assert!(node.table().live_service("web").is_none(), "applied before");
    // The save holds it, beside the table.
    assert!(node.to_save().to_table().live_service("web").is_some());
    let out = node.handle(
        Input::Saved {
            seq,
            result: Ok(()),
        },
        T0 + 2,
    );
    assert!(
        matches!(reply(&out, 7), Some(Reply::Deployed(Ok(d))) if d[0].kind == DeployKind::Created)
    );
    assert!(written(&out).contains(&Key::Service("web".into())));
    assert!(node.table().live_service("web").is_some());
}

#[test]
fn a_write_whose_save_fails_is_refused_and_dropped() {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    node.handle(Input::Tick, T0);
    let out = node.handle(Input::Request(7, Request::Deploy(specs(WEB))), T0 + 1);
    let seq = save(&out).unwrap();
    // Another write waits behind it; it is planned once the first is done.
    let out = node.handle(Input::Request(8, Request::Remove("web".into())), T0 + 2);
    assert!(reply(&out, 8).is_none() && save(&out).is_none());
    let full = "No space left on device (os error 28)".to_owned();
    let out = node.handle(failed(seq, &full), T0 + 3);
    assert_eq!(
        reply(&out, 7),
        Some(&Reply::Deployed(Err(OpError::NotSaved(full.clone()))))
    );
    let logged = out
        .iter()
        .any(|e| matches!(e, Effect::Log(Event::SaveFailed { error, .. }) if *error == full));
    assert!(logged);
    assert!(written(&out).is_empty());
    assert!(node.table().live_service("web").is_none());
    assert!(node.to_save().to_table().live_service("web").is_none());
    // The remove, planned now, finds nothing to remove.
    assert!(matches!(
        reply(&out, 8),
        Some(Reply::Written(Err(OpError::Unknown(_))))
    ));
    assert_eq!(node.stats().save_failures, 1);
    // Saves are tried again later, not at every change; failures are logged
    // once a minute.
    let out = node.handle(Input::Request(9, Request::Deploy(specs(WEB))), T0 + 4);
    let seq = save(&out).unwrap();
    let out = node.handle(failed(seq, &full), T0 + 5);
    assert!(
        !out.iter()
            .any(|e| matches!(e, Effect::Log(Event::SaveFailed { .. })))
    );
    let out = answered(&mut node, 10, Request::Deploy(specs(WEB)), T0 + 6);
    assert!(matches!(reply(&out, 10), Some(Reply::Deployed(Ok(_)))));
    assert!(out.contains(&Effect::Log(Event::SaveRecovered { failures: 2 })));
}

#[test]
fn a_node_whose_clock_is_far_off_refuses_operator_writes() {
    let (mut node, _) = lone_with_web();
    node.handle(Input::ClockSkew(Some(7_200_000)), T0 + 100);
    let out = node.handle(Input::Request(3, Request::Remove("web".into())), T0 + 101);
    assert_eq!(
        reply(&out, 3),
        Some(&Reply::Written(Err(OpError::ClockSkew(7_200_000))))
    );
    let message = OpError::ClockSkew(7_200_000).to_string();
    assert!(message.contains("7200 s ahead of its peers'"), "{message}");
    assert!(save(&out).is_none() && written(&out).is_empty());
    // Fixed: writes go through again.
    node.handle(Input::ClockSkew(None), T0 + 200);
    let out = answered(&mut node, 4, Request::Remove("web".into()), T0 + 201);
    assert!(matches!(reply(&out, 4), Some(Reply::Written(Ok(_)))));
}

#[test]
fn writes_queue_behind_a_held_one_up_to_a_bound() {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    node.handle(Input::Tick, T0);
    let out = node.handle(Input::Request(0, Request::Deploy(specs(WEB))), T0);
    let seq = save(&out).unwrap();
    for id in 1..=MAX_QUEUED as u64 {
        let out = node.handle(Input::Request(id, Request::Scale("web".into(), 2)), T0);
        assert!(reply(&out, id).is_none());
    }
    let out = node.handle(Input::Request(999, Request::Drain(true)), T0);
    assert_eq!(
        reply(&out, 999),
        Some(&Reply::Done(Err(OpError::Busy(MAX_QUEUED))))
    );
    // The held one is saved: it is answered and the next begins.
    let out = node.handle(
        Input::Saved {
            seq,
            result: Ok(()),
        },
        T0 + 1,
    );
    assert!(matches!(reply(&out, 0), Some(Reply::Deployed(Ok(_)))));
    assert!(save(&out).is_some(), "the first queued write is saved next");
}

#[test]
fn a_hung_disk_refuses_the_write_after_the_wait() {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    let out = node.handle(Input::Request(7, Request::Remove("nope".into())), T0);
    assert!(matches!(
        reply(&out, 7),
        Some(Reply::Written(Err(OpError::Unknown(_))))
    ));
    let out = node.handle(Input::Request(8, Request::Drain(true)), T0);
    assert!(reply(&out, 8).is_none());
    assert!(node.next_deadline() <= T0 + saves::WAIT_MS);
    let out = node.handle(Input::Tick, T0 + saves::WAIT_MS);
    assert!(matches!(
        reply(&out, 8),
        Some(Reply::Done(Err(OpError::NotSaved(_))))
    ));
    assert!(out.contains(&Effect::Log(Event::SaveSlow)));
    assert!(!node.table().node("a").is_some_and(|n| n.draining));
}

#[test]
fn operator_write_errors_write_nothing() {
    let (mut node, _) = lone_with_web();
    let before = node.table().clone();
    let cycle = specs(
        r#"[{"name":"b","provider":"shell","depends_on":["c"],"params":{"command":"x"}},{"name":"c","provider":"shell","depends_on":["b"],"params":{"command":"x"}}]"#,
    );
    let out = node.handle(Input::Request(2, Request::Deploy(cycle)), T0 + 100);
    assert!(
        matches!(reply(&out, 2), Some(Reply::Deployed(Err(e))) if e.to_string().contains("cycle"))
    );
    let out = node.handle(
        Input::Request(3, Request::Scale("web".into(), 1001)),
        T0 + 101,
    );
    assert!(
        matches!(reply(&out, 3), Some(Reply::Written(Err(e))) if e.to_string().contains("replicas"))
    );
    let out = node.handle(Input::Request(4, Request::Scale("zzz".into(), 1)), T0 + 102);
    assert!(matches!(
        reply(&out, 4),
        Some(Reply::Written(Err(OpError::Unknown(_))))
    ));
    let mut huge = specs(WEB);
    huge[0]
        .env
        .insert("BIG".into(), "x".repeat(ops::MAX_SPEC_BYTES));
    let out = node.handle(Input::Request(5, Request::Deploy(huge)), T0 + 103);
    assert!(
        matches!(reply(&out, 5), Some(Reply::Deployed(Err(e))) if e.to_string().contains("bytes"))
    );
    assert_eq!(node.table(), &before);
}

#[test]
fn deploy_update_unchanged_scale_remove_and_redeploy_continue_the_version() {
    let (mut node, _) = lone_with_web();
    let deploy = |node: &mut Node, id, at| {
        let out = answered(node, id, Request::Deploy(specs(WEB)), at);
        match reply(&out, id) {
            Some(Reply::Deployed(Ok(d))) => (d[0].version, d[0].kind.clone()),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(deploy(&mut node, 2, T0 + 100), (1, DeployKind::Unchanged));
    let out = answered(&mut node, 3, Request::Scale("web".into(), 3), T0 + 200);
    assert_eq!(reply(&out, 3), Some(&Reply::Written(Ok(2))));
    let out = answered(&mut node, 4, Request::Remove("web".into()), T0 + 300);
    assert_eq!(reply(&out, 4), Some(&Reply::Written(Ok(3))));
    assert_eq!(deploy(&mut node, 5, T0 + 400), (4, DeployKind::Created));
}

#[test]
fn redeploying_a_failed_service_retries_it() {
    let (mut node, _) = lone_with_web();
    let claim = Claim {
        owner: None,
        failed_on: vec!["a".into()],
        version: 1,
    };
    let record = Record {
        ts: crate::Timestamp {
            wall_ms: T0 + 50,
            counter: 0,
            node: "b".into(),
        },
        value: Value::Claim(claim),
    };
    node.handle(
        Input::Records(
            Source::Delta,
            vec![(Key::Claim("web".into(), 0), Arc::new(record))],
        ),
        T0 + 60,
    );
    let out = answered(&mut node, 2, Request::Deploy(specs(WEB)), T0 + 100);
    assert!(
        matches!(reply(&out, 2), Some(Reply::Deployed(Ok(d))) if d[0].kind == DeployKind::Updated && d[0].version == 2)
    );
}

#[test]
fn a_lone_node_without_seeds_claims_and_starts_at_once() {
    let (node, out) = lone_with_web();
    assert!(node.converged());
    assert!(written(&out).contains(&Key::Claim("web".into(), 0)));
    assert_eq!(starts(&out), 1);
}

#[test]
fn a_slot_claimed_here_starts_in_the_same_call_without_the_reconcile_gap() {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    node.handle(Input::Tick, T0);
    let out = node.handle(Input::Request(1, Request::Deploy(specs(WEB))), T0 + 10);
    let seq = save(&out).unwrap();
    // The deploy is saved: claim and start come out of this one call.
    let out = node.handle(
        Input::Saved {
            seq,
            result: Ok(()),
        },
        T0 + 11,
    );
    assert!(
        written(&out).contains(&Key::Claim("web".into(), 0)),
        "{out:?}"
    );
    assert_eq!(starts(&out), 1, "{out:?}");
}

#[test]
fn a_node_with_seeds_claims_nothing_until_it_caught_up_with_a_peer() {
    let (lone, _) = lone_with_web();
    let mut node = Node::new(config("b", 2, true), lone.table().clone(), T0);
    node.handle(
        Input::Members(vec![gone("a", 1), peer("b", 2), peer("c", 3)]),
        T0,
    );
    // "a" is down: its slot is unowned and placed on "b" (the only
    // candidate), but the table may be stale.
    for t in [T0 + 10, T0 + 1_000, T0 + 10_000] {
        let out = node.handle(Input::Tick, t);
        assert!(
            !written(&out).contains(&Key::Claim("web".into(), 0)),
            "claimed at {t}"
        );
        assert_eq!(starts(&out), 0);
    }
    // A round from an address that is no member (a connection's port)
    // opens nothing.
    let out = node.handle(Input::Synced(addr(9)), T0 + 10_000);
    assert!(!out.contains(&Effect::Log(Event::CaughtUp)));
    assert!(!node.converged());
    let out = node.handle(Input::Synced(addr(3)), T0 + 10_001);
    assert!(out.contains(&Effect::Log(Event::CaughtUp)));
    // Within the reconcile gap.
    let out = node.handle(Input::Tick, T0 + 10_001 + RECONCILE_GAP_MS);
    assert!(written(&out).contains(&Key::Claim("web".into(), 0)));
}

#[test]
fn a_joining_node_waits_to_hear_of_every_node_its_table_lists() {
    // "a" runs web; "b" joins and has heard of "c" only so far.
    let (lone, _) = lone_with_web();
    let mut node = Node::new(config("b", 2, true), lone.table().clone(), T0);
    node.handle(Input::Members(vec![peer("b", 2), peer("c", 3)]), T0);
    node.handle(Input::Synced(addr(3)), T0 + 10);
    let out = node.handle(Input::Tick, T0 + 20);
    assert!(!node.converged(), "opened before hearing of a");
    assert!(!written(&out).contains(&Key::Claim("web".into(), 0)));
    // It hears of "a": the gate opens, and a's slot stays a's.
    let out = node.handle(
        Input::Members(vec![peer("a", 1), peer("b", 2), peer("c", 3)]),
        T0 + 30,
    );
    assert!(node.converged() && out.contains(&Effect::Log(Event::CaughtUp)));
    assert!(!written(&out).contains(&Key::Claim("web".into(), 0)));
    // A node never heard of (gone for good) holds the gate up to SETTLE_MS.
    let mut node = Node::new(config("b", 2, true), lone.table().clone(), T0);
    node.handle(Input::Members(vec![peer("b", 2), peer("c", 3)]), T0);
    node.handle(Input::Synced(addr(3)), T0 + 10);
    assert!(node.next_deadline() <= T0 + SETTLE_MS);
    node.handle(Input::Tick, T0 + SETTLE_MS - 1);
    assert!(!node.converged());
    let out = node.handle(Input::Tick, T0 + SETTLE_MS);
    assert!(node.converged() && out.contains(&Effect::Log(Event::CaughtUp)));
}

#[test]
fn records_stamped_far_ahead_are_dropped_at_start_and_the_clock_follows_the_wall() {
    // The node wrote while its clock ran two hours ahead, then restarts
    // with the clock fixed.
    let skewed = T0 + 2 * 3_600_000;
    let (mut ahead, _) = lone_with_web();
    answered(
        &mut ahead,
        5,
        Request::Deploy(specs(WEB.replace("100", "200").as_str())),
        skewed,
    );
    let table = ahead.table().clone();
    assert!(table.iter().any(|(_, r)| r.ts.wall_ms >= skewed));
    let mut node = Node::new(config("a", 1, false), table, T0 + 1_000);
    let out = node.handle(Input::Tick, T0 + 1_000);
    assert!(
        out.iter().any(
            |e| matches!(e, Effect::Log(Event::FutureRecordsDropped { count }) if *count >= 1)
        )
    );
    assert!(node.table().iter().all(|(_, r)| r.ts.wall_ms < skewed));
    // (Peers, which refused the dropped record, send back what they hold.)
    // Its next write is stamped by the wall clock, so peers take it.
    let out = answered(&mut node, 6, Request::Deploy(specs(WEB)), T0 + 2_000);
    assert!(matches!(reply(&out, 6), Some(Reply::Deployed(Ok(_)))));
    let (_, record) = node
        .table()
        .iter()
        .find(|(k, _)| **k == Key::Service("web".into()))
        .unwrap();
    assert!(record.ts.wall_ms < T0 + 3_000);
}

#[test]
fn a_node_alone_for_the_grace_claims_without_a_peer() {
    let (lone, _) = lone_with_web();
    let mut node = Node::new(config("b", 2, true), lone.table().clone(), T0);
    // `a`, whose claim the table holds, is down.
    node.handle(Input::Members(vec![gone("a", 1)]), T0);
    let out = node.handle(Input::Tick, T0 + ALONE_GRACE_MS - 1);
    assert!(!node.converged());
    assert!(!written(&out).contains(&Key::Claim("web".into(), 0)));
    assert!(node.next_deadline() <= T0 + ALONE_GRACE_MS);
    let mut out = node.handle(Input::Tick, T0 + ALONE_GRACE_MS);
    assert!(node.converged());
    out.extend(node.handle(Input::Tick, T0 + ALONE_GRACE_MS + RECONCILE_GAP_MS));
    assert!(written(&out).contains(&Key::Claim("web".into(), 0)));
}

#[test]
fn a_name_clash_claims_nothing() {
    let (lone, _) = lone_with_web();
    let mut node = Node::new(config("b", 2, false), lone.table().clone(), T0);
    let twin = Peer {
        addr: addr(9),
        ..peer("b", 9)
    };
    node.handle(Input::Members(vec![peer("b", 2), twin, gone("a", 1)]), T0);
    let out = node.handle(Input::Tick, T0 + 10);
    assert!(!written(&out).contains(&Key::Claim("web".into(), 0)));
    // The twin goes away: claims again.
    let out = node.handle(Input::Members(vec![peer("b", 2), gone("a", 1)]), T0 + 20);
    assert!(written(&out).contains(&Key::Claim("web".into(), 0)));
}

#[test]
fn a_stop_is_sent_once_until_the_instance_reports_it_stopped() {
    let (mut node, _) = lone_with_web();
    node.handle(Input::Tick, T0 + 40);
    let remove = answered(&mut node, 2, Request::Remove("web".into()), T0 + 100);
    let stop = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Stop { .. }))
            .count()
    };
    let mut stops = stop(&remove);
    let running = running(9, T0, 1);
    // The instance still reports running (an old report): no second stop.
    let report = InstanceReport {
        service: "web".into(),
        slot: 0,
        status: running.clone(),
    };
    stops += stop(&node.handle(Input::Instance(report.clone()), T0 + 200));
    stops += stop(&node.handle(Input::Tick, T0 + 10_000));
    assert_eq!(stops, 1);
    // Stopped, then running again (a start raced it): stopped again.
    let stopped = InstanceReport {
        status: Status {
            state: InstanceState::Stopped,
            ..running
        },
        ..report.clone()
    };
    node.handle(Input::Instance(stopped), T0 + 10_100);
    let out = node.handle(Input::Instance(report), T0 + 10_200);
    let out2 = node.handle(Input::Tick, T0 + 10_300);
    assert_eq!(stop(&out) + stop(&out2), 1);
}

#[test]
fn few_records_go_as_deltas_many_are_pushed_to_every_peer() {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    node.handle(
        Input::Members(vec![
            peer("a", 1),
            peer("b", 2),
            peer("c", 3),
            peer("d", 4),
            peer("e", 5),
        ]),
        T0,
    );
    node.handle(Input::Tick, T0 + 1);
    let out = answered(&mut node, 1, Request::Deploy(specs(WEB)), T0 + 10);
    let deltas = written(&out);
    assert!(deltas.contains(&Key::Service("web".into())) && deltas.len() <= MAX_DELTAS);
    assert!(!out.iter().any(|e| matches!(e, Effect::Sync(_))));
    let many: String = (0..=MAX_DELTAS)
        .map(|i| format!(r#"{{"name":"s{i}","provider":"shell","params":{{"command":"x"}}}}"#))
        .collect::<Vec<_>>()
        .join(",");
    let out = answered(
        &mut node,
        2,
        Request::Deploy(specs(&format!("[{many}]"))),
        T0 + 20,
    );
    assert!(written(&out).is_empty(), "a bulk write floods no deltas");
    let pushed: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            // (It reached every member: nobody pushes it on.)
            Effect::Push {
                records,
                forward: false,
                ..
            } => Some(records),
            _ => None,
        })
        .collect();
    // To every member (of a cluster this small), the write itself: one
    // hop, and no round's digest exchange.
    assert_eq!(pushed.len(), 4);
    assert!(pushed.iter().all(|records| records.len() > MAX_DELTAS));
    assert!(!out.iter().any(|e| matches!(e, Effect::Sync(_))));
}

#[test]
fn newcomers_get_a_few_rounds_at_a_time() {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    let syncs = |out: &[Effect]| -> Vec<SocketAddr> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Sync(peer) => Some(*peer),
                _ => None,
            })
            .collect()
    };
    let members: Vec<Peer> = (1..=8).map(|i| peer(&format!("n{i}"), i)).collect();
    let first = syncs(&node.handle(Input::Members(members), T0));
    assert_eq!(first.len(), NEWCOMER_ROUNDS, "a few at once, not one each");
    // One ends: the next begins, with a newcomer not synced yet.
    let next = syncs(&node.handle(Input::Synced(first[0]), T0 + 1));
    assert_eq!(next.len(), 1);
    assert!(!first.contains(&next[0]));
    // A newcomer that synced with us (its round) needs none of ours.
    let theirs = (2..=8)
        .map(addr)
        .find(|a| !first.contains(a) && *a != next[0]);
    let theirs = theirs.unwrap();
    assert_eq!(syncs(&node.handle(Input::Synced(theirs), T0 + 2)), vec![]);
    // A failed round frees its place for another, not for itself.
    let after = syncs(&node.handle(Input::SyncFailed(first[1]), T0 + 3));
    assert_eq!(after.len(), 1);
    assert_ne!(after[0], first[1]);
}

#[test]
fn anti_entropy_slows_down_while_nothing_changes_and_speeds_up_on_a_change() {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    node.handle(Input::Members(vec![peer("a", 1), peer("b", 2)]), T0);
    node.handle(Input::Synced(addr(2)), T0 + 10);
    // Ticks every 100 ms for two minutes: the gaps between periodic
    // rounds, with nothing changing.
    let rounds = |node: &mut Node, from: u64, to: u64| -> Vec<u64> {
        (from / 100..to / 100)
            .map(|t| t * 100)
            .filter(|at| {
                node.handle(Input::Tick, *at)
                    .iter()
                    .any(|e| matches!(e, Effect::Sync(_)))
            })
            .collect()
    };
    let quiet = rounds(&mut node, T0 + 100, T0 + 120_000);
    let gaps: Vec<u64> = quiet.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] <= 2_400, "the base period first: {gaps:?}");
    // (Each gap is jittered by ±20 %.)
    assert!(
        gaps.windows(2).all(|w| w[1] * 3 >= w[0] * 2),
        "never faster while quiet: {gaps:?}"
    );
    let last = *gaps.last().unwrap();
    assert!(
        (QUIET_SYNC_MS * 8 / 10..=QUIET_SYNC_MS * 12 / 10).contains(&last),
        "up to the quiet period: {gaps:?}"
    );
    // A record from a peer: a round within the base period again.
    let end = *quiet.last().unwrap();
    let b = Node::new(config("b", 2, false), Table::new(), T0);
    node.handle(Input::Records(Source::Delta, everything(&b)), end + 50);
    let after = rounds(&mut node, end + 100, end + 10_000);
    assert!(
        after.first().is_some_and(|at| *at <= end + 50 + 2_400),
        "a change brings the base period back: {after:?}"
    );
}

#[test]
fn a_newcomer_gets_a_round_at_once() {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    let out = node.handle(Input::Members(vec![peer("a", 1), peer("b", 2)]), T0);
    assert_eq!(
        out.iter().filter(|e| **e == Effect::Sync(addr(2))).count(),
        1
    );
    let out = node.handle(Input::Members(vec![peer("a", 1), peer("b", 2)]), T0 + 1);
    assert!(
        !out.contains(&Effect::Sync(addr(2))),
        "not again for the same incarnation"
    );
}

#[test]
fn records_from_peers_are_admitted_only_when_this_version_would_write_them() {
    let (lone, _) = lone_with_web();
    let good = lone
        .table()
        .get(&Key::Service("web".into()))
        .unwrap()
        .clone();
    let now = good.ts.wall_ms;
    let key = Key::Service("web".into());
    assert!(admission::admits(&key, &good, now));
    let mut ahead = good.clone();
    ahead.ts.wall_ms = now + admission::MAX_CLOCK_AHEAD_MS;
    assert!(
        admission::admits(&key, &ahead, now),
        "an hour ahead is fine"
    );
    ahead.ts.wall_ms += 1;
    assert!(!admission::admits(&key, &ahead, now), "from the far future");
    assert!(
        !admission::admits(&Key::Service("other".into()), &good, now),
        "named unlike its key"
    );
    assert!(
        !admission::admits(&Key::Node("web".into()), &good, now),
        "a service under node/"
    );
    let mut huge = good.clone();
    if let Value::Service(ServiceRecord {
        spec: Some(spec), ..
    }) = &mut huge.value
    {
        spec.replicas = 1_000_000;
    }
    assert!(!admission::admits(&key, &huge, now));
    // The history: kept specs are checked too, and at most ten are kept.
    let hist_key = Key::History("web".into());
    let history = lone.table().get(&hist_key).unwrap().clone();
    assert!(admission::admits(&hist_key, &history, now));
    let mut bad = history.clone();
    if let Value::History(h) = &mut bad.value
        && let Some(spec) = h.versions[0].spec.as_mut()
    {
        spec.replicas = 1_000_000;
    }
    assert!(
        !admission::admits(&hist_key, &bad, now),
        "an invalid kept spec"
    );
    let mut long = history.clone();
    if let Value::History(h) = &mut long.value {
        let first = h.versions[0].clone();
        h.versions = vec![first; crate::history::MAX_VERSIONS + 1];
    }
    assert!(!admission::admits(&hist_key, &long, now), "eleven versions");
    let tombstone = Record {
        value: Value::Tombstone,
        ..good
    };
    assert!(admission::admits(
        &Key::Status("a".into(), "web".into(), 0),
        &tombstone,
        now
    ));
    assert!(
        !admission::admits(&key, &tombstone, now),
        "services are removed, not tombstoned"
    );
    // Through the node: dropped and counted.
    let mut node = Node::new(config("b", 2, false), Table::new(), T0);
    let out = node.handle(
        Input::Records(Source::Delta, vec![(key.clone(), Arc::new(huge))]),
        now,
    );
    assert!(out.contains(&Effect::Log(Event::RecordsRejected { count: 1 })));
    assert!(node.table().get(&key).is_none());
    assert_eq!(node.stats().records_rejected, 1);
}

#[test]
fn a_collected_record_a_peer_sends_back_is_refused() {
    let day = 86_400_000;
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    // Removed eleven days before `now`, a day past the GC age.
    let old = Record {
        ts: crate::Timestamp {
            wall_ms: T0,
            counter: 0,
            node: "b".into(),
        },
        value: Value::Service(ServiceRecord {
            version: 2,
            instance_since: 2,
            spec: None,
        }),
    };
    let now = T0 + 2 * day;
    let key = Key::Service("gone".into());
    node.handle(
        Input::Records(
            Source::AntiEntropy,
            vec![(key.clone(), Arc::new(old.clone()))],
        ),
        now,
    );
    assert!(node.table().get(&key).is_none(), "garbage taken in");
    assert_eq!(node.stats().refused, 1);
    // A live service's claim of the same age comes with its service: kept.
    let (lone, _) = lone_with_web();
    let records: Records = lone
        .table()
        .iter()
        .map(|(k, r)| (k.clone(), Arc::new(r.clone())))
        .collect();
    node.handle(Input::Records(Source::AntiEntropy, records), now);
    assert!(node.table().claim("web", 0).is_some());
}

#[test]
fn drain_hands_slots_over_and_leave_is_not_remembered() {
    let (mut node, _) = lone_with_web();
    let out = answered(&mut node, 2, Request::Drain(true), T0 + 100);
    assert!(out.contains(&Effect::Log(Event::Draining)));
    assert!(node.table().node("a").is_some_and(|n| n.draining));
    // A restart keeps an operator's drain...
    let restarted = Node::new(config("a", 1, false), node.table().clone(), T0 + 200);
    assert!(restarted.table().node("a").is_some_and(|n| n.draining));
    // ...but not a leave.
    let out = answered(&mut node, 3, Request::Drain(false), T0 + 300);
    assert!(out.contains(&Effect::Log(Event::DrainUndone)));
    answered(&mut node, 4, Request::Leave, T0 + 400);
    assert!(
        node.table()
            .node("a")
            .is_some_and(|n| n.leaving && !n.draining)
    );
    let restarted = Node::new(config("a", 1, false), node.table().clone(), T0 + 500);
    assert!(
        restarted
            .table()
            .node("a")
            .is_some_and(|n| !n.leaving && !n.draining)
    );
}

/// Every record `from` holds, as an anti-entropy round brings them.
fn everything(from: &Node) -> Records {
    from.table()
        .iter()
        .map(|(k, r)| (k.clone(), Arc::new(r.clone())))
        .collect()
}

fn forgotten(effects: &[Effect]) -> Option<Vec<&str>> {
    effects.iter().rev().find_map(|e| match e {
        Effect::Forgotten(names) => Some(names.iter().map(String::as_str).collect()),
        _ => None,
    })
}

#[test]
fn drain_of_another_node_is_taken_up_by_that_node() {
    let mut a = Node::new(config("a", 1, false), Table::new(), T0);
    let mut b = Node::new(config("b", 2, false), Table::new(), T0);
    a.handle(Input::Records(Source::AntiEntropy, everything(&b)), T0 + 10);
    // Unknown nodes are refused, naming them.
    let out = answered(&mut a, 1, Request::DrainNode("zed".into(), true), T0 + 20);
    assert!(
        matches!(reply(&out, 1), Some(Reply::Done(Err(OpError::UnknownNode(n)))) if n == "zed")
    );
    let out = answered(&mut a, 2, Request::DrainNode("b".into(), true), T0 + 30);
    assert_eq!(reply(&out, 2), Some(&Reply::Done(Ok(()))));
    assert!(out.contains(&Effect::Log(Event::DrainRequested {
        node: "b".into(),
        on: true
    })));
    // b takes it up: it logs its drain and writes its record itself.
    let out = b.handle(Input::Records(Source::Delta, everything(&a)), T0 + 40);
    assert!(out.contains(&Effect::Log(Event::Draining)));
    let mine = b.table().get(&Key::Node("b".into())).unwrap();
    assert_eq!(mine.ts.node, "b");
    assert!(matches!(&mine.value, Value::Node(n) if n.draining && n.version == "test"));
    // Undone the same way; asked of itself, it is an ordinary drain.
    answered(&mut a, 3, Request::DrainNode("b".into(), false), T0 + 50);
    let out = b.handle(Input::Records(Source::Delta, everything(&a)), T0 + 60);
    assert!(out.contains(&Effect::Log(Event::DrainUndone)));
    assert!(b.table().node("b").is_some_and(|n| !n.draining));
    let out = answered(&mut a, 4, Request::DrainNode("a".into(), true), T0 + 70);
    assert!(out.contains(&Effect::Log(Event::Draining)));
}

#[test]
fn force_leave_forgets_a_gone_node_until_it_starts_again() {
    let mut a = Node::new(config("a", 1, false), Table::new(), T0);
    let mut c = Node::new(config("c", 3, false), Table::new(), T0);
    let status = InstanceReport {
        service: "web".into(),
        slot: 0,
        status: running(42, T0, 1),
    };
    c.handle(Input::Instance(status), T0 + 5);
    a.handle(Input::Records(Source::AntiEntropy, everything(&c)), T0 + 10);
    assert!(a.table().statuses_of("c").next().is_some());
    // A live member, or this node, is refused.
    a.handle(Input::Members(vec![peer("c", 3)]), T0 + 20);
    for (id, name) in [(1, "c"), (2, "a")] {
        let out = answered(&mut a, id, Request::ForceLeave(name.into()), T0 + 30);
        assert!(
            matches!(reply(&out, id), Some(Reply::Done(Err(OpError::NodeAlive(n)))) if n == name)
        );
    }
    let out = answered(&mut a, 3, Request::ForceLeave("nobody".into()), T0 + 30);
    assert!(matches!(
        reply(&out, 3),
        Some(Reply::Done(Err(OpError::UnknownNode(_))))
    ));
    // Once down: its records go, and the agent is told to forget it.
    a.handle(Input::Members(vec![gone("c", 3)]), T0 + 40);
    let out = answered(&mut a, 4, Request::ForceLeave("c".into()), T0 + 50);
    assert_eq!(reply(&out, 4), Some(&Reply::Done(Ok(()))));
    assert!(out.contains(&Effect::Log(Event::NodeForgotten { node: "c".into() })));
    assert_eq!(forgotten(&out), Some(vec!["c"]));
    assert!(a.table().node("c").is_none());
    assert!(a.table().statuses_of("c").next().is_none());
    // Another agent learns it by merge.
    let mut b = Node::new(config("b", 2, false), Table::new(), T0);
    let out = b.handle(Input::Records(Source::AntiEntropy, everything(&a)), T0 + 60);
    assert_eq!(forgotten(&out), Some(vec!["c"]));
    // c starts again on its saved table: its new record clears it.
    let mut c = Node::new(config("c", 3, false), c.table().clone(), T0 + 70);
    c.handle(Input::Records(Source::AntiEntropy, everything(&a)), T0 + 80);
    assert!(c.table().node("c").is_some());
    let out = a.handle(Input::Records(Source::AntiEntropy, everything(&c)), T0 + 90);
    assert_eq!(forgotten(&out), Some(vec![]));
    assert!(a.table().node("c").is_some());
}

#[test]
fn a_node_forgotten_while_alive_writes_its_record_again() {
    let mut a = Node::new(config("a", 1, false), Table::new(), T0);
    let mut c = Node::new(config("c", 3, false), Table::new(), T0);
    a.handle(Input::Records(Source::AntiEntropy, everything(&c)), T0 + 10);
    a.handle(Input::Members(vec![gone("c", 3)]), T0 + 20);
    answered(&mut a, 1, Request::ForceLeave("c".into()), T0 + 30);
    // c was only cut off: the tombstone reaches it, and it is back.
    c.handle(Input::Records(Source::AntiEntropy, everything(&a)), T0 + 40);
    assert!(c.table().node("c").is_some());
    let out = a.handle(Input::Records(Source::AntiEntropy, everything(&c)), T0 + 50);
    assert_eq!(forgotten(&out), Some(vec![]));
}

#[test]
fn a_peers_deploy_is_logged_once() {
    let (lone, _) = lone_with_web();
    let mut node = Node::new(config("b", 2, false), Table::new(), T0);
    let key = Key::Service("web".into());
    let record = lone.table().get(&key).unwrap().clone();
    let records = vec![(key, Arc::new(record))];
    let out = node.handle(Input::Records(Source::Delta, records.clone()), T0 + 50);
    let deployed = |out: &[Effect]| {
        out.iter()
            .filter(|e| matches!(e, Effect::Log(Event::Service(c)) if c.kind == ChangeKind::Deployed && c.origin == "a"))
            .count()
    };
    assert_eq!(deployed(&out), 1);
    assert_eq!(
        deployed(&node.handle(Input::Records(Source::Delta, records), T0 + 60)),
        0
    );
}

#[test]
fn partial_passes_decide_touched_slots_and_a_full_pass_comes_periodically() {
    let (mut node, _) = lone_with_web();
    let before = node.stats();
    let report = InstanceReport {
        service: "web".into(),
        slot: 0,
        status: running(9, T0, 1),
    };
    node.handle(Input::Instance(report), T0 + 40);
    node.handle(Input::Tick, T0 + 50);
    let after = node.stats();
    assert!(after.partial_passes > before.partial_passes);
    assert_eq!(after.full_passes, before.full_passes);
    let full = after.full_passes;
    node.handle(Input::Tick, T0 + FULL_PASS_MS + 1_000);
    assert_eq!(node.stats().full_passes, full + 1);
}

#[test]
fn a_dependency_that_starts_running_starts_its_dependents() {
    let mut node = Node::new(config("a", 1, false), Table::new(), T0);
    node.handle(Input::Tick, T0);
    let both = specs(
        r#"[{"name":"db","provider":"shell","params":{"command":"x"}},{"name":"app","provider":"shell","depends_on":["db"],"params":{"command":"x"}}]"#,
    );
    let mut out = answered(&mut node, 1, Request::Deploy(both), T0 + 10);
    out.extend(node.handle(Input::Tick, T0 + 20));
    let started = |out: &[Effect], name: &str| {
        out.iter()
            .any(|e| matches!(e, Effect::Start { spec, .. } if spec.name == name))
    };
    assert!(started(&out, "db") && !started(&out, "app"), "{out:?}");
    let running = InstanceReport {
        service: "db".into(),
        slot: 0,
        status: running(9, T0, 1),
    };
    let full = node.stats().full_passes;
    let mut out = node.handle(Input::Instance(running), T0 + 30);
    out.extend(node.handle(Input::Tick, T0 + 40));
    assert!(started(&out, "app"), "{out:?}");
    // A partial pass did it, not the periodic full one.
    assert_eq!(node.stats().full_passes, full);
}

#[test]
fn many_records_learned_by_anti_entropy_are_forwarded_once_few_and_deltas_never() {
    // A source node with a few services, then many.
    let mut source = Node::new(config("a", 1, false), Table::new(), T0);
    answered(&mut source, 1, Request::Deploy(specs(WEB)), T0);
    let few = source
        .table()
        .records_in(&(0..crate::digest::BUCKETS as u16).collect::<Vec<_>>());
    let many: String = (0..=MAX_DELTAS)
        .map(|i| format!(r#"{{"name":"s{i}","provider":"shell","params":{{"command":"x"}}}}"#))
        .collect::<Vec<_>>()
        .join(",");
    answered(
        &mut source,
        2,
        Request::Deploy(specs(&format!("[{many}]"))),
        T0 + 10,
    );
    // Its claims too.
    source.handle(Input::Tick, T0 + 20);
    let all = source
        .table()
        .records_in(&(0..crate::digest::BUCKETS as u16).collect::<Vec<_>>());
    let pushes = |out: &[Effect]| {
        out.iter()
            .filter(|e| matches!(e, Effect::Push { .. }))
            .count()
    };
    let peers = vec![
        peer("b", 2),
        peer("c", 3),
        peer("d", 4),
        peer("e", 5),
        peer("f", 6),
    ];

    // Few new records, by a delta or by anti-entropy: not forwarded (a
    // delta went to everyone; a few records a round repaired, the peers'
    // own rounds repair too).
    let mut node = Node::new(config("b", 2, true), Table::new(), T0);
    node.handle(Input::Members(peers.clone()), T0);
    let out = node.handle(Input::Records(Source::Delta, few.clone()), T0 + 20);
    assert!(
        !written(&out).contains(&Key::Service("web".into())),
        "a delta is not forwarded"
    );
    let mut other = Node::new(config("c", 3, true), Table::new(), T0);
    other.handle(Input::Members(peers.clone()), T0);
    let out = other.handle(Input::Records(Source::AntiEntropy, few), T0 + 20);
    assert!(other.table().get(&Key::Service("web".into())).is_some());
    assert!(
        !written(&out).contains(&Key::Service("web".into())) && pushes(&out) == 0,
        "a few records learned by anti-entropy are not forwarded"
    );

    // Many, pushed by their writer to every member: not pushed on.
    let mut pushed_to = Node::new(config("d", 4, true), Table::new(), T0);
    pushed_to.handle(Input::Members(peers.clone()), T0);
    let out = pushed_to.handle(Input::Records(Source::Pushed, all.clone()), T0 + 30);
    assert!(pushed_to.table().get(&Key::Service("web".into())).is_some());
    assert_eq!(pushes(&out), 0);

    // Many: pushed by anti-entropy to a few peers, at most every gap.
    let (first, rest) = all.split_at(all.len() / 2);
    let out = node.handle(Input::Records(Source::AntiEntropy, first.to_vec()), T0 + 40);
    assert_eq!(pushes(&out), BULK_PEERS);
    // (Those of the second chunk new to the node.)
    let fresh: Vec<Key> = rest
        .iter()
        .filter(|(k, r)| node.table().get(k) != Some(&**r))
        .map(|(k, _)| k.clone())
        .collect();
    let out = node.handle(Input::Records(Source::AntiEntropy, rest.to_vec()), T0 + 50);
    assert_eq!(
        pushes(&out),
        0,
        "a second chunk within the gap waits for the rounds"
    );
    // ... and goes on when the gap is over, not with the next periodic
    // round.
    assert!(node.next_deadline() <= T0 + 40 + FORWARD_GAP_MS);
    let out = node.handle(Input::Tick, T0 + 40 + FORWARD_GAP_MS);
    assert!(pushes(&out) >= BULK_PEERS, "{out:?}");
    // What waited is what goes on (beside what the node wrote itself).
    let pushed: BTreeSet<&Key> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Push { records, .. } => Some(records.iter().map(|(k, _)| k)),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(!fresh.is_empty() && fresh.iter().all(|k| pushed.contains(k)));
    let more: Vec<_> = (0..=MAX_DELTAS)
        .map(|i| format!(r#"{{"name":"t{i}","provider":"shell","params":{{"command":"x"}}}}"#))
        .collect();
    answered(
        &mut source,
        3,
        Request::Deploy(specs(&format!("[{}]", more.join(",")))),
        T0 + 60,
    );
    let newer: Records = source
        .table()
        .records_in(&(0..crate::digest::BUCKETS as u16).collect::<Vec<_>>())
        .into_iter()
        .filter(|(k, _)| node.table().get(k).is_none())
        .collect();
    // (A periodic round may fall due meanwhile: out of the way.)
    let later = T0 + 40 + 2 * FORWARD_GAP_MS;
    node.handle(Input::Tick, later);
    let out = node.handle(Input::Records(Source::AntiEntropy, newer), later);
    assert_eq!(pushes(&out), BULK_PEERS);
}

/// Reports every started instance running.
fn run_started(node: &mut Node, effects: &[Effect], at: u64) -> Vec<Effect> {
    let mut out = Vec::new();
    for e in effects {
        if let Effect::Start {
            spec,
            slot,
            version,
        } = e
        {
            out.extend(node.handle(
                Input::Instance(InstanceReport {
                    service: spec.name.clone(),
                    slot: *slot,
                    status: running(1, at, *version),
                }),
                at,
            ));
        }
    }
    out
}

#[test]
fn a_node_over_the_cap_hands_one_running_slot_over_and_keeps_it_until_the_new_one_runs() {
    let mut a = Node::new(config("a", 1, false), Table::new(), T0);
    a.handle(Input::Tick, T0);
    // Five slots on a lone node; the first in order may not move.
    let mut text: Vec<String> = (0..4)
        .map(|i| format!(r#"{{"name":"s{i}","provider":"shell","params":{{"command":"x"}}}}"#))
        .collect();
    text.push(
        r#"{"name":"a-fixed","provider":"shell","rebalance":false,"params":{"command":"x"}}"#
            .into(),
    );
    let mut out = answered(
        &mut a,
        1,
        Request::Deploy(specs(&format!("[{}]", text.join(",")))),
        T0 + 10,
    );
    out.extend(a.handle(Input::Tick, T0 + 20));
    assert_eq!(starts(&out), 5);
    run_started(&mut a, &out, T0 + 30);
    assert_eq!(a.table().load("a"), 5);

    // b joins: the cap is now ceil(1.25 x 5 / 2) = 4, and a holds 5.
    let b = Node::new(config("b", 2, false), Table::new(), T0 + 40);
    let b_key = Key::Node("b".into());
    let b_record = Arc::new(b.table().get(&b_key).unwrap().clone());
    a.handle(
        Input::Records(Source::Delta, vec![(b_key, b_record)]),
        T0 + 40,
    );
    a.handle(Input::Members(vec![peer("a", 1), peer("b", 2)]), T0 + 40);
    let at = T0 + 3 * 2_000;
    let out = a.handle(Input::Tick, at);
    let moved: Vec<(String, u32)> = a
        .table()
        .claims()
        .filter(|(_, _, c)| c.owner.as_deref() == Some("b"))
        .map(|(s, k, _)| (s.to_owned(), k))
        .collect();
    assert_eq!(moved, [("s0".to_owned(), 0)], "one slot, not the fixed one");
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Log(Event::SlotHandedOver { to, .. }) if to == "b"))
    );
    assert!(
        !out.iter().any(|e| matches!(e, Effect::Stop { .. })),
        "the instance runs until the new one does"
    );
    // At the cap now: no second move.
    let out = a.handle(Input::Tick, at + 2_000);
    assert_eq!(a.table().load("a"), 4);
    assert!(
        !out.iter()
            .any(|e| matches!(e, Effect::Log(Event::SlotHandedOver { .. })))
    );
    assert!(!out.iter().any(|e| matches!(e, Effect::Stop { .. })));

    // b's instance runs: a stops its own.
    let status = running(2, at, 1);
    let record = Arc::new(Record {
        ts: crate::Timestamp {
            wall_ms: at + 2_100,
            counter: 0,
            node: "b".into(),
        },
        value: Value::Status(status),
    });
    let out = a.handle(
        Input::Records(
            Source::Delta,
            vec![(Key::Status("b".into(), "s0".into(), 0), record)],
        ),
        at + 2_100,
    );
    assert!(out.contains(&Effect::Stop {
        service: "s0".into(),
        slot: 0
    }));
}

/// `name`'s node record, as its own node writes it at start.
fn node_record_of(name: &str, i: u8, tags: &[(&str, &str)]) -> (Key, Arc<Record>) {
    let mut config = config(name, i, false);
    config.tags = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let node = Node::new(config, Table::new(), T0);
    let key = Key::Node(name.into());
    let record = Arc::new(node.table().get(&key).unwrap().clone());
    (key, record)
}

/// A record written by `node` at `wall_ms`.
fn by(node: &str, wall_ms: u64, value: Value) -> Arc<Record> {
    Arc::new(Record {
        ts: crate::Timestamp {
            wall_ms,
            counter: 0,
            node: node.into(),
        },
        value,
    })
}

fn stops(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Stop { .. }))
        .count()
}

#[test]
fn an_every_node_service_runs_on_each_eligible_node_without_a_claim() {
    let mut a = Node::new(config("a", 1, false), Table::new(), T0);
    a.handle(Input::Tick, T0);
    let every =
        r#"{"name":"agent","provider":"shell","replicas":"every-node","params":{"command":"x"}}"#;
    let mut out = answered(&mut a, 1, Request::Deploy(specs(every)), T0 + 10);
    out.extend(a.handle(Input::Tick, T0 + 20));
    assert!(out.iter().any(|e| matches!(e,
        Effect::Start { spec, slot: 0, .. } if spec.name == "agent")));
    assert!(
        !written(&out).iter().any(|k| matches!(k, Key::Claim(..))),
        "no claim: the slot is this node's"
    );
    run_started(&mut a, &out, T0 + 30);
    // A second node joins: its own slot shows, pending, and a's runs.
    let (key, record) = node_record_of("b", 2, &[]);
    a.handle(Input::Records(Source::Delta, vec![(key, record)]), T0 + 40);
    a.handle(Input::Members(vec![peer("a", 1), peer("b", 2)]), T0 + 40);
    let view = crate::services_view::services(a.table(), a.members());
    let slots: Vec<(Option<&str>, InstanceState)> = view[0]
        .slots
        .iter()
        .map(|s| (s.node.as_deref(), s.state))
        .collect();
    assert_eq!(
        slots,
        [
            (Some("a"), InstanceState::Running),
            (Some("b"), InstanceState::Pending)
        ]
    );
    // It can't be scaled; a drain stops it here.
    let out = a.handle(
        Input::Request(2, Request::Scale("agent".into(), 3)),
        T0 + 50,
    );
    assert!(
        matches!(reply(&out, 2), Some(Reply::Written(Err(e))) if e.to_string().contains("every eligible node"))
    );
    let out = answered(&mut a, 3, Request::Drain(true), T0 + 60);
    let mut out2 = out.clone();
    out2.extend(a.handle(Input::Tick, T0 + 70));
    assert_eq!(stops(&out2), 1, "{out2:?}");
}

/// The tag only `a` and `b` have, so that the test knows who may run it.
const ONCE: &str = r#"{"name":"lock","provider":"shell","partition":"at-most-once","stop_timeout":"10s","constraints":{"tags":{"role":"x"}},"params":{"command":"x"}}"#;

fn tagged(name: &str, i: u8) -> NodeConfig {
    let mut c = config(name, i, false);
    c.tags.insert("role".into(), "x".into());
    c
}

#[test]
fn an_at_most_once_slot_runs_only_with_a_majority_and_stops_when_it_is_lost() {
    let mut a = Node::new(tagged("a", 1), Table::new(), T0);
    let peers = vec![peer("a", 1), peer("b", 2), peer("c", 3)];
    let records = vec![node_record_of("b", 2, &[]), node_record_of("c", 3, &[])];
    a.handle(Input::Records(Source::Delta, records), T0);
    a.handle(Input::Members(peers.clone()), T0);
    let mut out = answered(&mut a, 1, Request::Deploy(specs(ONCE)), T0 + 10);
    out.extend(a.handle(Input::Tick, T0 + 20));
    assert!(
        written(&out).contains(&Key::Claim("lock".into(), 0)),
        "a claims at once"
    );
    // Just started, a doesn't know who went lately: it waits the margin.
    let margin = a.members().quorum().margin_ms(&specs(ONCE)[0]);
    assert!(margin >= 10_000 + crate::quorum::SLACK_MS);
    assert_eq!(starts(&out), 0);
    let view = crate::services_view::services(a.table(), a.members());
    let reason = view[0].slots[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("at-most-once"), "{reason}");
    assert!(a.next_deadline() <= T0 + margin);
    // b and c came up: nothing starts before a caught up with both.
    let out = a.handle(Input::Tick, T0 + margin);
    assert_eq!(starts(&out), 0, "started before catching up with b and c");
    a.handle(Input::Synced(addr(2)), T0 + margin);
    let mut out = a.handle(Input::Synced(addr(3)), T0 + margin + 1);
    out.extend(a.handle(Input::Tick, T0 + margin + RECONCILE_GAP_MS));
    // Caught up, but by rounds begun before the claim: it settles only
    // once rounds begun after it complete with b and c, which a begins.
    assert_eq!(starts(&out), 0, "started on an unsettled claim: {out:?}");
    let rounds: BTreeSet<SocketAddr> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Sync(peer) => Some(*peer),
            _ => None,
        })
        .collect();
    assert_eq!(rounds, BTreeSet::from([addr(2), addr(3)]), "{out:?}");
    let at = T0 + margin + 50;
    let mut out = a.handle(Input::Synced(addr(2)), at);
    out.extend(a.handle(Input::Tick, at + RECONCILE_GAP_MS));
    assert_eq!(starts(&out), 0, "started before the round with c: {out:?}");
    let mut out = a.handle(Input::Synced(addr(3)), at + 10);
    out.extend(a.handle(Input::Tick, at + 10 + RECONCILE_GAP_MS));
    assert_eq!(starts(&out), 1, "{out:?}");
    run_started(&mut a, &out, at + 10);

    // b and c are suspected: a sees 1 of 3 alive and stops.
    let mut suspects = peers.clone();
    for p in &mut suspects[1..] {
        p.state = PeerState::Suspect;
    }
    let at = at + 100;
    let mut out = a.handle(Input::Members(suspects), at);
    out.extend(a.handle(Input::Tick, at + RECONCILE_GAP_MS));
    assert_eq!(stops(&out), 1, "{out:?}");
    assert!(out.contains(&Effect::Log(Event::MajorityLost)), "{out:?}");
    // Alive again: it runs again (a still owns it and nobody went).
    let mut out = a.handle(Input::Members(peers), at + 200);
    out.extend(a.handle(Input::Tick, at + 200 + RECONCILE_GAP_MS));
    assert!(out.contains(&Effect::Log(Event::MajorityRegained)));
}

#[test]
fn the_majority_side_starts_an_at_most_once_slot_only_after_the_margin_past_down() {
    let mut b = Node::new(tagged("b", 2), Table::new(), T0);
    let mut peers = vec![peer("a", 1), peer("b", 2), peer("c", 3)];
    let spec = specs(ONCE).remove(0);
    let records = vec![
        node_record_of("a", 1, &[("role", "x")]),
        node_record_of("c", 3, &[]),
        (
            Key::Service("lock".into()),
            by(
                "a",
                T0,
                Value::Service(ServiceRecord {
                    version: 1,
                    instance_since: 1,
                    spec: Some(spec.clone()),
                }),
            ),
        ),
        (
            Key::Claim("lock".into(), 0),
            by(
                "a",
                T0,
                Value::Claim(Claim {
                    owner: Some("a".into()),
                    failed_on: Vec::new(),
                    version: 1,
                }),
            ),
        ),
        (
            Key::Status("a".into(), "lock".into(), 0),
            by("a", T0, Value::Status(running(9, T0, 1))),
        ),
    ];
    b.handle(Input::Records(Source::Delta, records), T0);
    b.handle(Input::Members(peers.clone()), T0);
    b.handle(Input::Synced(addr(1)), T0);
    b.handle(Input::Synced(addr(3)), T0);
    let out = b.handle(Input::Tick, T0 + 100);
    assert!(!written(&out).contains(&Key::Claim("lock".into(), 0)));

    // a is down: b claims, but starts only past the margin.
    let down = T0 + 60_000;
    peers[0].state = PeerState::Gone;
    let mut out = b.handle(Input::Members(peers), down);
    out.extend(b.handle(Input::Tick, down + RECONCILE_GAP_MS));
    assert!(written(&out).contains(&Key::Claim("lock".into(), 0)));
    assert_eq!(starts(&out), 0);
    // Every effect from the claim until just past the margin.
    let margin = b.members().quorum().margin_ms(&spec);
    let mut since_claim = out;
    let mut at = down + RECONCILE_GAP_MS;
    while at < down + margin + 2 * RECONCILE_GAP_MS {
        at = b.next_deadline().max(at + 1);
        let out = b.handle(Input::Tick, at);
        assert!(
            starts(&out) == 0 || at >= down + margin,
            "started before the margin"
        );
        since_claim.extend(out);
    }
    // Past the margin, the claim settles by a round with c, the one live
    // member, begun after it.
    assert_eq!(
        starts(&since_claim),
        0,
        "started on an unsettled claim: {since_claim:?}"
    );
    assert!(
        since_claim.contains(&Effect::Sync(addr(3))),
        "no round asked of c: {since_claim:?}"
    );
    let mut out = b.handle(Input::Synced(addr(3)), at + 20);
    out.extend(b.handle(Input::Tick, at + 20 + RECONCILE_GAP_MS));
    assert_eq!(starts(&out), 1, "not started once settled: {out:?}");
}

/// The service record of `lock`, version 1, written by `writer` at `T0`.
fn lock_service(writer: &str, spec: &crate::ServiceSpec) -> (Key, Arc<Record>) {
    (
        Key::Service("lock".into()),
        by(
            writer,
            T0,
            Value::Service(ServiceRecord {
                version: 1,
                instance_since: 1,
                spec: Some(spec.clone()),
            }),
        ),
    )
}

/// `owner`'s claim of slot 0 of `lock`, written by it at `at`.
fn claim(owner: &str, at: u64) -> (Key, Arc<Record>) {
    (
        Key::Claim("lock".into(), 0),
        by(
            owner,
            at,
            Value::Claim(Claim {
                owner: Some(owner.into()),
                failed_on: Vec::new(),
                version: 1,
            }),
        ),
    )
}

/// An anti-entropy round `from` began with `to` (at `to_addr`): both
/// learn what the other holds, then `from` hears it completed.
fn round(from: &mut Node, to: &mut Node, to_addr: SocketAddr, at: u64) -> Vec<Effect> {
    let all: Vec<u16> = (0..crate::digest::BUCKETS as u16).collect();
    let theirs = to.table().records_in(&all);
    let ours = from.table().records_in(&all);
    to.handle(Input::Records(Source::AntiEntropy, ours), at);
    let mut out = from.handle(Input::Records(Source::AntiEntropy, theirs), at);
    out.extend(from.handle(Input::Synced(to_addr), at));
    out
}

#[test]
fn two_claims_of_an_at_most_once_slot_settle_to_one_start() {
    // a and b each claimed the slot without hearing of the other's claim
    // (the deltas were lost): however old the claims, neither starts
    // before a round begun after its claim completed with every live
    // member, and then only the owner of the later claim does.
    let spec = specs(ONCE).remove(0);
    let service = lock_service("a", &spec);
    let peers = vec![peer("a", 1), peer("b", 2), peer("c", 3)];
    let c = node_record_of("c", 3, &[]);
    let mut a = Node::new(tagged("a", 1), Table::new(), T0);
    let mut b = Node::new(tagged("b", 2), Table::new(), T0);
    let of_a = node_record_of("a", 1, &[("role", "x")]);
    let of_b = node_record_of("b", 2, &[("role", "x")]);
    // Both caught up with the others first (their newcomer rounds), then
    // claimed.
    a.handle(Input::Records(Source::Delta, vec![of_b, c.clone()]), T0);
    b.handle(Input::Records(Source::Delta, vec![of_a, c]), T0);
    for (node, other) in [(&mut a, addr(2)), (&mut b, addr(1))] {
        node.handle(Input::Members(peers.clone()), T0 + 10);
        node.handle(Input::Synced(other), T0 + 20);
        node.handle(Input::Synced(addr(3)), T0 + 20);
    }
    let records = vec![service.clone(), claim("a", T0 + 30)];
    a.handle(Input::Records(Source::Delta, records), T0 + 30);
    let records = vec![service, claim("b", T0 + 40)];
    b.handle(Input::Records(Source::Delta, records), T0 + 40);

    // Long past the margin and two anti-entropy periods: each asks for
    // rounds, and starts nothing.
    let at = T0 + a.members().quorum().margin_ms(&spec) + 60_000;
    let mut out_a = a.handle(Input::Tick, at);
    out_a.extend(a.handle(Input::Tick, at + RECONCILE_GAP_MS));
    let mut out_b = b.handle(Input::Tick, at);
    out_b.extend(b.handle(Input::Tick, at + RECONCILE_GAP_MS));
    assert_eq!(starts(&out_a) + starts(&out_b), 0, "{out_a:?} {out_b:?}");
    assert!(out_a.contains(&Effect::Sync(addr(2))), "{out_a:?}");
    assert!(out_b.contains(&Effect::Sync(addr(1))), "{out_b:?}");

    // The rounds: with c, which knows nothing, and with each other.
    let at = at + 100;
    let mut out_a = a.handle(Input::Synced(addr(3)), at);
    out_a.extend(round(&mut a, &mut b, addr(2), at));
    let mut out_b = b.handle(Input::Synced(addr(3)), at);
    out_b.extend(round(&mut b, &mut a, addr(1), at));
    for t in [at + RECONCILE_GAP_MS, at + 2 * RECONCILE_GAP_MS] {
        out_a.extend(a.handle(Input::Tick, t));
        out_b.extend(b.handle(Input::Tick, t));
    }
    assert_eq!(starts(&out_a), 0, "a lost the race, and started: {out_a:?}");
    assert_eq!(starts(&out_b), 1, "b won it, and did not start: {out_b:?}");
    for node in [&a, &b] {
        let claim = node.table().claim("lock", 0).and_then(|c| c.owner.clone());
        assert_eq!(claim.as_deref(), Some("b"));
    }
}

#[test]
fn an_at_most_once_slot_is_handed_over_stop_first() {
    // b owns it and runs it; a's newer claim takes it (a drain of b, say):
    // b stops at once, with no wait for a's instance.
    let mut b = Node::new(tagged("b", 2), Table::new(), T0);
    let peers = vec![peer("a", 1), peer("b", 2), peer("c", 3)];
    let spec = specs(ONCE).remove(0);
    let service = lock_service("b", &spec);
    let records = vec![
        node_record_of("a", 1, &[("role", "x")]),
        node_record_of("c", 3, &[]),
        service,
        claim("b", T0),
    ];
    b.handle(Input::Records(Source::Delta, records), T0);
    b.handle(Input::Members(peers), T0);
    b.handle(
        Input::Instance(InstanceReport {
            service: "lock".into(),
            slot: 0,
            status: running(5, T0, 1),
        }),
        T0 + 1,
    );
    let mut out = b.handle(
        Input::Records(Source::Delta, vec![claim("a", T0 + 50)]),
        T0 + 50,
    );
    out.extend(b.handle(Input::Tick, T0 + 60));
    assert_eq!(stops(&out), 1, "{out:?}");
}

#[test]
fn a_key_rotation_reaches_a_peer_its_node_record_and_the_agent() {
    use super::keyring::{Ring, RingKey};
    let key = |n: u8| RingKey {
        fingerprint: format!("{n:016x}"),
        key: format!("{:A<43}=", n),
    };
    let with_ring = |name: &str, i: u8| {
        let mut config = config(name, i, false);
        config.keyring = Ring { keys: vec![key(1)] };
        Node::new(config, Table::new(), T0)
    };
    let (mut a, mut b) = (with_ring("a", 1), with_ring("b", 2));
    assert_eq!(
        a.table().node("a").map(|n| n.keys.clone()),
        Some(vec![key(1).fingerprint])
    );
    let mut sent = Vec::new();
    for request in [
        Request::KeyInstall(key(2)),
        Request::KeyUse(key(2).fingerprint),
    ] {
        let out = answered(&mut a, 1, request, T0 + 10);
        assert_eq!(reply(&out, 1), Some(&Reply::Done(Ok(()))));
        for effect in out {
            if let Effect::Broadcast(records) = effect {
                sent.extend(records);
            }
        }
    }
    assert_eq!(a.ring().primary(), Some(&key(2)));
    // The peer follows from the records alone.
    let out = b.handle(Input::Records(Source::Delta, sent), T0 + 20);
    let rotated = Ring {
        keys: vec![key(2), key(1)],
    };
    assert!(out.contains(&Effect::Keyring(rotated.clone())));
    assert_eq!(b.ring(), &rotated);
    assert_eq!(
        b.table().node("b").map(|n| n.keys.clone()),
        Some(rotated.fingerprints())
    );
    // Nothing new: no effect.
    let out = b.handle(Input::Tick, T0 + 30);
    assert!(!out.iter().any(|e| matches!(e, Effect::Keyring(_))));
}

/// The node's instance of `service`/`slot` reports `status`.
fn report(node: &mut Node, service: &str, slot: u32, status: Status, at: u64) -> Vec<Effect> {
    node.handle(
        Input::Instance(InstanceReport {
            service: service.into(),
            slot,
            status,
        }),
        at,
    )
}

fn record_of(node: &Node, name: &str) -> ServiceRecord {
    node.table().service(name).cloned().unwrap()
}

#[test]
fn a_scale_or_a_new_update_policy_keeps_the_instance_version_and_an_env_change_moves_it() {
    let (mut node, _) = lone_with_web();
    assert_eq!(record_of(&node, "web").instance_since, 1);
    answered(&mut node, 2, Request::Scale("web".into(), 3), T0 + 20);
    let scaled = record_of(&node, "web");
    assert_eq!((scaled.version, scaled.instance_since), (2, 1));
    let policy = r#"{"name":"web","provider":"shell","replicas":3,"update":{"max_parallel":2},"params":{"command":"sleep 100"}}"#;
    answered(&mut node, 3, Request::Deploy(specs(policy)), T0 + 30);
    assert_eq!(record_of(&node, "web").instance_since, 1);
    let env = r#"{"name":"web","provider":"shell","replicas":3,"env":{"A":"1"},"params":{"command":"sleep 100"}}"#;
    answered(&mut node, 4, Request::Deploy(specs(env)), T0 + 40);
    let updated = record_of(&node, "web");
    assert_eq!((updated.version, updated.instance_since), (4, 4));
    // Every version is kept, with its cause.
    let history = node.table().history("web").unwrap();
    let causes: Vec<_> = history
        .versions
        .iter()
        .map(|v| (v.version, v.cause))
        .collect();
    assert_eq!(
        causes,
        [
            (1, Cause::Deploy),
            (2, Cause::Scale),
            (3, Cause::Deploy),
            (4, Cause::Deploy)
        ]
    );
    assert_eq!(history.versions[3].outcome, Outcome::Current);
}

#[test]
fn stop_stops_every_instance_keeping_the_spec_and_start_runs_it_again() {
    let (mut node, _) = lone_with_web();
    node.handle(Input::Tick, T0 + 2_000);
    report(&mut node, "web", 0, running(7, T0 + 2_000, 1), T0 + 2_000);
    let out = answered(&mut node, 2, Request::Stop("web".into()), T0 + 3_000);
    assert!(
        matches!(reply(&out, 2), Some(Reply::Written(Ok(2)))),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Stop { service, slot: 0 } if service == "web")),
        "{out:?}"
    );
    assert!(
        node.table()
            .live_service("web")
            .is_some_and(|(s, _)| s.stopped)
    );
    // Stopping twice says so.
    let out = answered(&mut node, 3, Request::Stop("web".into()), T0 + 3_100);
    assert!(
        matches!(
            reply(&out, 3),
            Some(Reply::Written(Err(OpError::NotApplicable { .. })))
        ),
        "{out:?}"
    );
    // (At once: the claim and the start come out of the one call.)
    let out = answered(&mut node, 4, Request::Start("web".into()), T0 + 4_000);
    assert_eq!(starts(&out), 1, "{out:?}");
}

#[test]
fn rollback_writes_a_kept_version_again_and_names_what_is_kept_when_asked_for_another() {
    let (mut node, _) = lone_with_web();
    let env =
        r#"{"name":"web","provider":"shell","env":{"A":"1"},"params":{"command":"sleep 100"}}"#;
    answered(&mut node, 2, Request::Deploy(specs(env)), T0 + 20);
    let out = answered(&mut node, 3, Request::Rollback("web".into(), None), T0 + 30);
    assert!(
        matches!(reply(&out, 3), Some(Reply::Written(Ok(3)))),
        "{out:?}"
    );
    let rolled = record_of(&node, "web");
    assert!(rolled.spec.as_ref().is_some_and(|s| s.env.is_empty()));
    assert_eq!(rolled.instance_since, 3);
    let last = node
        .table()
        .history("web")
        .unwrap()
        .versions
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last.cause, Cause::Rollback(1));
    let out = answered(
        &mut node,
        4,
        Request::Rollback("web".into(), Some(9)),
        T0 + 40,
    );
    match reply(&out, 4) {
        Some(Reply::Written(Err(e))) => {
            assert!(e.to_string().contains("kept: 1, 2, 3"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_rolling_update_replaces_a_slot_only_once_the_slots_before_it_ran_healthy() {
    // Node a owns both slots of a service with max_parallel 1.
    let (mut node, _) = lone_with_web();
    let v = |env: &str| {
        format!(
            r#"{{"name":"web","provider":"shell","replicas":2,"env":{{"V":"{env}"}},"update":{{"min_healthy_time":"2s"}},"params":{{"command":"sleep 100"}}}}"#
        )
    };
    answered(&mut node, 2, Request::Deploy(specs(&v("1"))), T0 + 20);
    node.handle(Input::Tick, T0 + 2_000);
    for slot in 0..2 {
        report(
            &mut node,
            "web",
            slot,
            running(10 + slot, T0 + 2_000, 2),
            T0 + 2_000,
        );
    }
    answered(&mut node, 3, Request::Deploy(specs(&v("2"))), T0 + 10_000);
    let out = node.handle(Input::Tick, T0 + 10_100);
    let started: Vec<u32> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Start {
                slot, version: 3, ..
            } => Some(*slot),
            _ => None,
        })
        .collect();
    assert_eq!(started, [0], "slot 1 waits for slot 0: {out:?}");
    // Slot 0 runs the new version: slot 1 waits 2 s more, then goes.
    report(
        &mut node,
        "web",
        0,
        running(20, T0 + 10_200, 3),
        T0 + 10_200,
    );
    let early = node.handle(Input::Tick, T0 + 11_000);
    assert!(
        !early.iter().any(|e| matches!(
            e,
            Effect::Start {
                slot: 1,
                version: 3,
                ..
            }
        )),
        "{early:?}"
    );
    let mut due = Vec::new();
    while node.next_deadline() <= T0 + 12_500 {
        let at = node.next_deadline().max(T0 + 11_000);
        due.extend(node.handle(Input::Tick, at));
    }
    assert!(
        due.iter().any(|e| matches!(
            e,
            Effect::Start {
                slot: 1,
                version: 3,
                ..
            }
        )),
        "{due:?}"
    );
}

#[test]
fn a_failed_update_with_auto_revert_writes_the_last_healthy_version_back() {
    let (mut node, _) = lone_with_web();
    node.handle(Input::Tick, T0 + 2_000);
    report(&mut node, "web", 0, running(7, T0 + 2_000, 1), T0 + 2_000);
    let bad = r#"{"name":"web","provider":"shell","env":{"BAD":"1"},"update":{"auto_revert":true,"min_healthy_time":"1s","healthy_deadline":"10s"},"params":{"command":"sleep 100"}}"#;
    answered(&mut node, 2, Request::Deploy(specs(bad)), T0 + 10_000);
    let out = node.handle(Input::Tick, T0 + 10_100);
    assert_eq!(starts(&out), 1, "{out:?}");
    let mut failed = running(0, T0 + 11_000, 2);
    failed.state = InstanceState::Failed;
    failed.started_ms = T0 + 10_100;
    failed.pid = None;
    let out = report(&mut node, "web", 0, failed, T0 + 11_000);
    let logs: Vec<&Event> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Log(event) => Some(event),
            _ => None,
        })
        .collect();
    assert!(
        logs.iter()
            .any(|e| matches!(e, Event::UpdateFailed { version: 2, .. })),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|e| matches!(
            e,
            Event::UpdateReverted {
                version: 3,
                failed: 2,
                to: 1,
                ..
            }
        )),
        "{logs:?}"
    );
    let reverted = record_of(&node, "web");
    assert!(reverted.spec.as_ref().is_some_and(|s| s.env.is_empty()));
    let history = node.table().history("web").unwrap();
    let outcomes: Vec<_> = history
        .versions
        .iter()
        .map(|v| (v.version, v.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, Outcome::Healthy),
            (2, Outcome::Failed),
            (3, Outcome::Current)
        ]
    );
}
