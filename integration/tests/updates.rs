//! Rolling updates, their automatic revert, and the verbs that write a new
//! version of a service (`stop`, `start`, `restart`, `rollback`), with
//! real agents and real processes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;

/// A `sleep` service whose command check passes once the instance is up;
/// `round` tells its versions apart, `update` is its `[update]` table.
fn checked(name: &str, replicas: u32, marker: &str, round: u32, update: &str) -> String {
    format!(
        r#"{{"name": "{name}", "provider": "exec", "replicas": {replicas}, "stop_timeout": "1s",
            "env": {{"ROUND": "{round}"}},
            "params": {{"command": ["sleep", "{marker}"]}},
            "check": {{"command": ["true"], "interval": "200ms", "timeout": "1s", "grace": "0s", "failures": 1}},
            "update": {update}}}"#
    )
}

/// Log events with this message about `service`, over every agent.
fn events_of(agents: &[Agent], message: &str, service: &str) -> usize {
    agents
        .iter()
        .flat_map(|a| a.log_events(message))
        .filter(|e| e["service"] == service)
        .count()
}

/// `(slot, state, version)` of every slot, as `agent` shows them.
fn states(agent: &Agent, name: &str) -> Vec<(u64, String, Option<u64>)> {
    slots(agent, name)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["slot"].as_u64().unwrap_or(u64::MAX),
                s["state"].as_str().unwrap_or_default().to_owned(),
                s["version"].as_u64(),
            )
        })
        .collect()
}

/// Whether every slot of `name` runs `version`.
fn all_on(agent: &Agent, name: &str, replicas: usize, version: u64) -> bool {
    let now = states(agent, name);
    now.len() == replicas
        && now
            .iter()
            .all(|(_, state, v)| state == "running" && *v == Some(version))
}

/// What a rolling update looked like, sampled every 50 ms.
struct Rollout {
    /// The fewest slots seen running (healthy) at once.
    fewest_running: usize,
    /// The fewest real processes of the service seen at once.
    fewest_processes: usize,
    /// From the deploy to every slot running the new version.
    took: Duration,
}

/// Deploys version 2 of a `replicas`-slot service and samples the table
/// and the real processes every 50 ms until every slot runs it.
fn roll(replicas: u32, max_parallel: u32, min_healthy: &str) -> Rollout {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let m = marker(replicas);
    let update =
        format!(r#"{{"max_parallel": {max_parallel}, "min_healthy_time": "{min_healthy}"}}"#);
    agents[0]
        .deploy(&checked("roll", replicas, &m, 1, &update))
        .unwrap();
    let n = replicas as usize;
    wait_until("version 1 runs", Duration::from_secs(30), || {
        Ok(all_on(&agents[0], "roll", n, 1))
    })
    .unwrap();
    let before: BTreeSet<u32> = processes_with_arg(&m).into_iter().collect();
    assert_eq!(before.len(), n);
    let from = Instant::now();
    agents[1]
        .deploy(&checked("roll", replicas, &m, 2, &update))
        .unwrap();
    let mut rollout = Rollout {
        fewest_running: n,
        fewest_processes: n,
        took: Duration::ZERO,
    };
    wait_until("every slot on version 2", Duration::from_secs(120), || {
        let now = states(&agents[2], "roll");
        let running = now.iter().filter(|(_, s, _)| s == "running").count();
        rollout.fewest_running = rollout.fewest_running.min(running);
        rollout.fewest_processes = rollout.fewest_processes.min(processes_with_arg(&m).len());
        std::thread::sleep(Duration::from_millis(50));
        Ok(all_on(&agents[2], "roll", n, 2))
    })
    .unwrap();
    rollout.took = from.elapsed();
    // Every process was replaced, and one instance per slot remains.
    let after: BTreeSet<u32> = processes_with_arg(&m).into_iter().collect();
    assert_eq!(after.len(), n, "{after:?}");
    assert!(before.is_disjoint(&after), "{before:?} / {after:?}");
    // One line per step, on the slot's owner.
    let steps = events_of(&agents, "update progressed", "roll");
    assert_eq!(steps, n, "one `update progressed` per slot");
    rollout
}

#[test]
fn a_rolling_update_of_4_replicas_one_at_a_time_keeps_3_running_healthy() {
    let r = roll(4, 1, "1s");
    eprintln!(
        "4 replicas, max_parallel 1, min_healthy_time 1s: fewest running {} (processes {}), {} ms",
        r.fewest_running,
        r.fewest_processes,
        r.took.as_millis()
    );
    assert!(r.fewest_running >= 3, "{}", r.fewest_running);
    assert!(r.fewest_processes >= 3, "{}", r.fewest_processes);
    // One slot after another, each healthy 1 s before the next goes.
    assert!(r.took >= Duration::from_secs(3), "{:?}", r.took);
}

#[test]
fn a_rolling_update_of_10_replicas_two_at_a_time_keeps_8_running_healthy() {
    let r = roll(10, 2, "2s");
    eprintln!(
        "10 replicas, max_parallel 2, min_healthy_time 2s: fewest running {} (processes {}), {} ms",
        r.fewest_running,
        r.fewest_processes,
        r.took.as_millis()
    );
    assert!(r.fewest_running >= 8, "{}", r.fewest_running);
    assert!(r.fewest_processes >= 8, "{}", r.fewest_processes);
}

#[test]
fn a_bad_update_stops_after_its_first_slot_and_reverts_to_the_healthy_version() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let m = marker(30);
    let update = r#"{"max_parallel": 1, "min_healthy_time": "1s", "healthy_deadline": "3s", "auto_revert": true}"#;
    agents[0].deploy(&checked("app", 3, &m, 1, update)).unwrap();
    wait_until("version 1 runs", Duration::from_secs(30), || {
        Ok(all_on(&agents[0], "app", 3, 1))
    })
    .unwrap();
    // Version 2's check never passes.
    let bad = checked("app", 3, &m, 2, update).replace(r#"["true"]"#, r#"["false"]"#);
    agents[1].deploy(&bad).unwrap();
    let mut on_bad: BTreeSet<u64> = BTreeSet::new();
    let mut fewest = 3;
    wait_until(
        "reverted: every slot on version 3",
        Duration::from_secs(60),
        || {
            let now = states(&agents[2], "app");
            on_bad.extend(
                now.iter()
                    .filter(|(_, _, v)| *v == Some(2))
                    .map(|(s, ..)| *s),
            );
            fewest = fewest.min(now.iter().filter(|(_, s, _)| s == "running").count());
            std::thread::sleep(Duration::from_millis(50));
            Ok(all_on(&agents[2], "app", 3, 3))
        },
    )
    .unwrap();
    assert_eq!(
        on_bad.len(),
        1,
        "only the first slot tried version 2: {on_bad:?}"
    );
    assert!(fewest >= 2, "{fewest}");
    let failed = events_of(&agents, "update failed", "app");
    let reverted = events_of(&agents, "update reverted", "app");
    assert!(
        failed >= 1 && reverted >= 1,
        "failed {failed}, reverted {reverted}"
    );
    // Version 3 is version 1's spec again, and the history says so.
    let inspect = agents[0].cli(&["inspect", "app", "--json"]).unwrap();
    assert!(inspect.contains(r#""ROUND": "1""#), "{inspect}");
    let history: Value =
        serde_json::from_str(&agents[2].cli(&["history", "app", "--json"]).unwrap()).unwrap();
    let rows: Vec<(u64, String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["cause"].as_str().unwrap().to_owned(),
                v["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, "deploy".into(), "healthy".into()),
            (2, "deploy".into(), "failed".into()),
            (3, "revert of 2 to 1".into(), "current".into()),
        ]
    );
}

#[test]
fn stop_start_restart_inspect_and_rollback_on_three_agents() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let m = marker(40);
    let update = r#"{"min_healthy_time": "500ms"}"#;
    agents[0].deploy(&checked("svc", 3, &m, 1, update)).unwrap();
    wait_until("svc runs", Duration::from_secs(30), || {
        Ok(all_on(&agents[0], "svc", 3, 1))
    })
    .unwrap();

    // stop: every process goes, the spec stays.
    let out = agents[1].cli(&["stop", "svc", "--json"]).unwrap();
    let written: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(written["version"], 2, "{out}");
    wait_until("no svc process", Duration::from_secs(15), || {
        Ok(processes_with_arg(&m).is_empty())
    })
    .unwrap();
    let listed = agents[2].cli(&["services"]).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("svc") && l.contains("stopped")),
        "{listed}"
    );
    assert!(
        agents[2]
            .cli(&["inspect", "svc"])
            .unwrap()
            .contains("ROUND")
    );
    let again = agents[0].cli(&["stop", "svc"]).unwrap_err().to_string();
    assert!(
        again.contains("svc") && again.contains("stopped already"),
        "{again}"
    );

    // start: it runs again.
    agents[2].cli(&["start", "svc"]).unwrap();
    wait_until("svc runs again", Duration::from_secs(30), || {
        Ok(all_on(&agents[0], "svc", 3, 3))
    })
    .unwrap();

    // restart: every process is replaced, one slot after another.
    let before: BTreeSet<u32> = processes_with_arg(&m).into_iter().collect();
    agents[0].cli(&["restart", "svc"]).unwrap();
    let mut fewest = 3;
    wait_until("svc restarted", Duration::from_secs(30), || {
        fewest = fewest.min(processes_with_arg(&m).len());
        let now: BTreeSet<u32> = processes_with_arg(&m).into_iter().collect();
        Ok(all_on(&agents[0], "svc", 3, 4) && now.len() == 3 && now.is_disjoint(&before))
    })
    .unwrap();
    assert!(fewest >= 2, "restart is rolling: {fewest}");

    // restart --slot: that slot alone, at once.
    let pids = |agent: &Agent| -> Vec<Option<u64>> {
        slots(agent, "svc")
            .unwrap_or_default()
            .iter()
            .map(|s| s["pid"].as_u64())
            .collect()
    };
    let before = pids(&agents[0]);
    let out = agents[1].cli(&["restart", "svc", "--slot", "1"]).unwrap();
    assert!(out.contains("slot 1"), "{out}");
    wait_until("slot 1 restarted", Duration::from_secs(15), || {
        let now = pids(&agents[0]);
        Ok(all_on(&agents[0], "svc", 3, 5) && now[1].is_some() && now[1] != before[1])
    })
    .unwrap();
    let after = pids(&agents[0]);
    assert_eq!(
        (after[0], after[2]),
        (before[0], before[2]),
        "{before:?} / {after:?}"
    );
    let err = agents[0]
        .cli(&["restart", "svc", "--slot", "7"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no slot 7"), "{err}");

    // rollback: a new spec, then back to the one before.
    agents[1].deploy(&checked("svc", 3, &m, 9, update)).unwrap();
    let out = agents[2].cli(&["rollback", "svc"]).unwrap();
    assert!(out.contains("version 7"), "{out}");
    let spec = agents[0].cli(&["inspect", "svc", "--json"]).unwrap();
    assert!(spec.contains(r#""ROUND": "1""#), "{spec}");
    wait_until("svc rolled back", Duration::from_secs(30), || {
        Ok(all_on(&agents[0], "svc", 3, 7))
    })
    .unwrap();
    let history = agents[0].cli(&["history", "svc"]).unwrap();
    for cause in [
        "deploy",
        "stop",
        "start",
        "restart",
        "restart of slot 1",
        "rollback to 5",
    ] {
        assert!(history.contains(cause), "{cause}: {history}");
    }

    // Unknown names and versions are named.
    for (args, says) in [
        (&["stop", "nope"][..], "nope"),
        (&["history", "nope"][..], "nope"),
        (&["rollback", "svc", "--version", "99"][..], "not kept"),
    ] {
        let err = agents[0].cli(args).unwrap_err().to_string();
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
