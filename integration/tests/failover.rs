//! Failover with real agents: a killed owner's slots move and its return
//! makes no duplicate; leftovers of a crashed run are killed; drain and
//! graceful stop hand slots over before stopping them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;

#[test]
fn a_killed_owner_fails_over_and_its_return_makes_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 3).unwrap();
    let m = marker(3);
    agents[0].deploy(&sleeper("db", 1, &m)).unwrap();
    let before = wait_running(&agents, "db", 1, &m, Duration::from_secs(10));
    let owner = agents.iter().position(|a| a.name() == before[0].1).unwrap();
    // Ask a survivor from now on.
    agents.swap(0, if owner == 0 { 1 } else { 0 });
    let owner = agents.iter().position(|a| a.name() == before[0].1).unwrap();
    let killed_at = Instant::now();
    agents[owner].kill9().unwrap();
    let after = wait_running_off(
        &agents,
        "db",
        1,
        &m,
        Duration::from_secs(15),
        Some(&before[0].1),
    );
    eprintln!(
        "kill -9 of the owner -> running elsewhere in {:?}",
        killed_at.elapsed()
    );
    assert_ne!(after[0].1, before[0].1);
    assert_ne!(after[0].2, before[0].2);
    assert!(
        processes_with_arg(&m) == vec![after[0].2],
        "the old instance survived its agent"
    );

    agents[owner].restart().unwrap();
    // From the moment it is back, never a second instance: it must not act
    // on its stale table before catching up.
    stays_exactly(1, &m, Duration::from_secs(4));
    let names: Vec<String> = agents.iter().map(|a| a.name().to_owned()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_until(
        "the returned agent to be a member again",
        Duration::from_secs(15),
        || Ok(agents.iter().all(|a| a.sees_alive(&names).unwrap_or(false))),
    )
    .unwrap();
    stays_exactly(1, &m, Duration::from_secs(3));
    assert_eq!(
        slots(&agents[0], "db").unwrap()[0]["node"],
        after[0].1.as_str()
    );
}

#[test]
fn a_restarted_agent_kills_what_its_crashed_run_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 1).unwrap();
    let (main, child) = (marker(12), marker(13));
    let spec = format!(
        r#"{{"name": "forks", "provider": "shell", "params": {{"command": "sleep {child} & exec sleep {main}"}}}}"#
    );
    agents[0].deploy(&spec).unwrap();
    wait_until(
        "the instance and its child",
        Duration::from_secs(10),
        || Ok(processes_with_arg(&main).len() == 1 && processes_with_arg(&child).len() == 1),
    )
    .unwrap();
    let orphan = processes_with_arg(&child)[0];
    agents[0].kill9().unwrap();
    wait_until(
        "the instance to die with its agent",
        Duration::from_secs(5),
        || Ok(processes_with_arg(&main).is_empty()),
    )
    .unwrap();
    // The parent-death signal is not inherited: the child lives on...
    assert!(processes_with_arg(&child).contains(&orphan));
    // ...until the agent is back.
    agents[0].restart().unwrap();
    wait_until(
        "the orphan gone and the service running again",
        Duration::from_secs(10),
        || {
            let children = processes_with_arg(&child);
            Ok(!children.contains(&orphan)
                && children.len() == 1
                && processes_with_arg(&main).len() == 1)
        },
    )
    .unwrap();
    let killed = agents[0].log_events("killed processes left by an earlier run");
    assert_eq!(killed.len(), 1, "{killed:?}");
    // A list field is a JSON array of numbers, not a string.
    assert!(
        killed[0]["pids"]
            .as_array()
            .is_some_and(|pids| pids.contains(&serde_json::json!(orphan))),
        "{killed:?}"
    );
}

#[test]
fn drain_moves_instances_then_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let m = marker(4);
    agents[0].deploy(&sleeper("moving", 2, &m)).unwrap();
    let before = wait_running(&agents, "moving", 2, &m, Duration::from_secs(10));
    let drained = before[0].1.clone();
    let out = agent_named(&agents, &drained).cli(&["drain"]).unwrap();
    assert!(out.contains("draining"), "{out}");
    let after = wait_running_off(
        &agents,
        "moving",
        2,
        &m,
        Duration::from_secs(15),
        Some(&drained),
    );
    let old: Vec<u32> = before
        .iter()
        .filter(|p| p.1 == drained)
        .map(|p| p.2)
        .collect();
    for pid in old {
        assert!(
            !processes_with_arg(&m).contains(&pid),
            "drained instance {pid} still runs"
        );
    }
    // Each drained instance stopped only once its replacement ran.
    let at = |event: &Value| {
        humantime::parse_rfc3339_weak(event["timestamp"].as_str().unwrap_or_default()).unwrap()
    };
    let moved: Vec<&(u64, String, u32)> = before.iter().filter(|p| p.1 == drained).collect();
    assert!(!moved.is_empty());
    for (slot, _, _) in moved {
        let stopped = agent_named(&agents, &drained)
            .log_events("instance stopped")
            .into_iter()
            .find(|e| e["service"] == "moving" && e["slot"] == *slot)
            .expect("the drained instance's stop is logged");
        let new_owner = &after.iter().find(|p| p.0 == *slot).unwrap().1;
        let started = agent_named(&agents, new_owner)
            .log_events("instance started")
            .into_iter()
            .find(|e| e["service"] == "moving" && e["slot"] == *slot)
            .expect("the replacement's start is logged");
        assert!(at(&started) <= at(&stopped), "{started} / {stopped}");
    }
    // A drain outlives a restart of the agent: new slots avoid the node.
    let mut agents = agents;
    let index = agents.iter().position(|a| a.name() == drained).unwrap();
    agents[index].restart().unwrap();
    let m2 = marker(9);
    agents[(index + 1) % 3]
        .deploy(&sleeper("after", 3, &m2))
        .unwrap();
    let placed = wait_running(&agents, "after", 3, &m2, Duration::from_secs(15));
    assert!(placed.iter().all(|p| p.1 != drained), "{placed:?}");

    let out = agents[index].cli(&["drain", "--undo", "--json"]).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        serde_json::json!({"node": null, "draining": false})
    );
    // Sticky: nothing moves back.
    stays_exactly(2, &m, Duration::from_secs(2));
    assert_eq!(
        wait_running(&agents, "moving", 2, &m, Duration::from_secs(5)),
        after
    );
}

#[test]
fn a_gracefully_stopped_agent_hands_over_and_takes_slots_again_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 2).unwrap();
    let m = marker(10);
    agents[0].deploy(&sleeper("handed", 2, &m)).unwrap();
    let before = wait_running(&agents, "handed", 2, &m, Duration::from_secs(10));
    let leaving = agents.iter().position(|a| a.name() == before[0].1).unwrap();
    let stopped_at = Instant::now();
    agents[leaving].terminate().unwrap();
    let survivor = &agents[1 - leaving];
    wait_until("both slots on the survivor", Duration::from_secs(5), || {
        let view = slots(survivor, "handed")?;
        Ok(view
            .iter()
            .all(|s| s["state"] == "running" && s["node"] == survivor.name())
            && processes_with_arg(&m).len() == 2)
    })
    .unwrap();
    eprintln!(
        "graceful stop -> running elsewhere in {:?}",
        stopped_at.elapsed()
    );
    // Back again: not draining, so a new service spreads onto it.
    agents[leaving].restart().unwrap();
    let m2 = marker(11);
    agents[leaving].deploy(&sleeper("again", 2, &m2)).unwrap();
    let placed = wait_running(&agents, "again", 2, &m2, Duration::from_secs(15));
    let nodes: BTreeSet<&str> = placed.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(nodes.len(), 2, "{placed:?}");
}

#[test]
fn drain_of_another_node_is_taken_up_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let m = marker(16);
    agents[0].deploy(&sleeper("remote", 2, &m)).unwrap();
    let before = wait_running(&agents, "remote", 2, &m, Duration::from_secs(10));
    let drained = before[0].1.clone();
    let asker = agents.iter().find(|a| a.name() != drained).unwrap();
    // A node nobody knows is refused, naming it.
    let refused = asker.cli(&["drain", "--node", "nobody"]).unwrap_err();
    assert!(refused.to_string().contains("\"nobody\""), "{refused}");
    let out = asker.cli(&["drain", "--node", &drained, "--json"]).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        serde_json::json!({"node": drained, "draining": true})
    );
    wait_running_off(
        &agents,
        "remote",
        2,
        &m,
        Duration::from_secs(15),
        Some(&drained),
    );
    // The drained node took it up itself, and every agent shows it.
    let target = agent_named(&agents, &drained);
    assert_eq!(
        target
            .log_events("draining: slots move to other nodes")
            .len(),
        1
    );
    assert_eq!(asker.log_events("drain of another node requested").len(), 1);
    wait_until(
        "every agent to list the node draining",
        Duration::from_secs(5),
        || {
            for a in &agents {
                let members: Vec<Value> = serde_json::from_str(&a.cli(&["members", "--json"])?)?;
                let listed = members.iter().find(|m| m["name"] == drained.as_str());
                if listed.is_none_or(|m| m["draining"] != true) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .unwrap();
    asker.cli(&["drain", "--node", &drained, "--undo"]).unwrap();
    wait_until(
        "the drained node to take the undo up",
        Duration::from_secs(5),
        || Ok(target.log_events("drain undone: eligible again").len() == 1),
    )
    .unwrap();
}
