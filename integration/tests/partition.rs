//! Partitions between hosts in network namespaces: membership heals, and
//! services heal to exactly one instance per slot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;

#[test]
fn partition_heals_within_15_seconds() {
    if !Netns::usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let net = Netns::up("p", 5).unwrap();
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();
    let agents = net.start_agents(dir.path(), &key).unwrap();
    let all = names(&agents);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let everyone_alive = || -> anyhow::Result<bool> { all_see_alive(&agents, &all) };
    wait_until(
        "the cluster to form",
        Duration::from_secs(20),
        everyone_alive,
    )
    .unwrap();

    // Cut h5 off until both sides have declared the other down.
    net.cut(5).unwrap();
    wait_until(
        "both sides of the partition to see the other down",
        Duration::from_secs(20),
        || {
            for a in &agents[..4] {
                if a.state_of("h5")?.map(|m| m.state).as_deref() != Some("down") {
                    return Ok(false);
                }
            }
            let isolated = agents[4].members()?;
            Ok(isolated.iter().skip(1).all(|m| m.state == "down"))
        },
    )
    .unwrap();

    net.heal(5).unwrap();
    let took = wait_until(
        "everyone alive again after the heal",
        Duration::from_secs(15),
        everyone_alive,
    )
    .unwrap();
    eprintln!("partition healed in {took:?}");
}

#[test]
fn a_partition_heals_to_exactly_one_instance_per_slot() {
    if !Netns::usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let net = Netns::up("s", 3).unwrap();
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();
    let agents = net.start_agents(dir.path(), &key).unwrap();
    let everyone = || -> anyhow::Result<bool> { all_see_alive(&agents, &["h1", "h2", "h3"]) };
    wait_until("the cluster", Duration::from_secs(20), everyone).unwrap();
    let (both, a_side, b_side) = (marker(6), marker(7), marker(8));
    agents[0].deploy(&sleeper("shared", 2, &both)).unwrap();
    wait_running(&agents, "shared", 2, &both, Duration::from_secs(10));

    net.cut(3).unwrap();
    wait_until("h3 to be cut off", Duration::from_secs(15), || {
        Ok(agents[0].state_of("h3")?.is_some_and(|m| m.state == "down")
            && agents[2].state_of("h1")?.is_some_and(|m| m.state == "down"))
    })
    .unwrap();
    // Each side deploys: a service of its own, and the same service anew.
    agents[0].deploy(&sleeper("a-side", 1, &a_side)).unwrap();
    agents[2].deploy(&sleeper("b-side", 1, &b_side)).unwrap();
    agents[2].cli(&["scale", "shared", "3"]).unwrap();
    wait_until(
        "each side to run its own copy of everything",
        Duration::from_secs(15),
        || {
            Ok(processes_with_arg(&a_side).len() == 1
                && processes_with_arg(&b_side).len() == 1
                && processes_with_arg(&both).len() >= 4)
        },
    )
    .unwrap();

    net.heal(3).unwrap();
    let healed = Instant::now();
    wait_until(
        "exactly one instance per slot after the heal",
        Duration::from_secs(15),
        || {
            Ok(everyone()?
                && processes_with_arg(&a_side).len() == 1
                && processes_with_arg(&b_side).len() == 1
                && processes_with_arg(&both).len() == 3
                && slots(&agents[1], "shared")?
                    .iter()
                    .filter(|s| s["state"] == "running")
                    .count()
                    == 3)
        },
    )
    .unwrap();
    eprintln!(
        "partition healed to one instance per slot in {:?}",
        healed.elapsed()
    );
    stays_exactly(3, &both, Duration::from_secs(2));
}

#[test]
fn an_at_most_once_service_never_runs_twice_across_a_partition() {
    if !Netns::usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let net = Netns::up("o", 5).unwrap();
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();
    let agents = net.start_agents(dir.path(), &key).unwrap();
    let all: Vec<String> = (1..=5).map(|i| format!("h{i}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let everyone = || -> anyhow::Result<bool> { all_see_alive(&agents, &all) };
    wait_until("the cluster", Duration::from_secs(20), everyone).unwrap();
    let m = marker(9);
    agents[0]
        .deploy(&format!(
            r#"{{"name": "lock", "provider": "exec", "partition": "at-most-once", "stop_timeout": "2s", "params": {{"command": ["sleep", "{m}"]}}}}"#
        ))
        .unwrap();
    // Every sample of real processes, all along: never two.
    let mut most = 0;
    let mut sample = || {
        let n = processes_with_arg(&m).len();
        most = most.max(n);
        assert!(n <= 1, "lock runs {n} times");
        n
    };
    let owner = || -> anyhow::Result<Option<usize>> {
        let node = slots(&agents[0], "lock")?
            .iter()
            .find(|s| s["state"] == "running")
            .and_then(|s| s["node"].as_str().map(str::to_owned));
        Ok(node.and_then(|n| n.trim_start_matches('h').parse().ok()))
    };
    wait_until("lock to run", Duration::from_secs(30), || {
        Ok(sample() == 1 && owner()?.is_some())
    })
    .unwrap();
    let first = owner().unwrap().unwrap();

    // The owner and one more host on the side of 2: it stops there, and
    // runs on the side of 3 only after the margin.
    let minority = [first, first % 5 + 1];
    net.split(&minority).unwrap();
    let cut = Instant::now();
    wait_until(
        "the side of 2 to stop lock",
        Duration::from_secs(30),
        || Ok(sample() == 0),
    )
    .unwrap();
    let stopped = cut.elapsed();
    let majority: Vec<&Agent> = (1..=5)
        .filter(|i| !minority.contains(i))
        .map(|i| &agents[i - 1])
        .collect();
    wait_until("the side of 3 to run lock", Duration::from_secs(60), || {
        let runs = sample() == 1;
        let there = slots(majority[0], "lock")?.iter().any(|s| {
            s["state"] == "running"
                && s["node"]
                    .as_str()
                    .is_some_and(|n| majority.iter().any(|a| a.name() == n))
        });
        Ok(runs && there)
    })
    .unwrap();
    let moved = cut.elapsed();
    assert!(
        agents[first - 1]
            .log_events("majority of the nodes out of sight; at-most-once services stop here")
            .len()
            == 1,
        "the old owner says why it stopped"
    );

    net.unsplit(&minority).unwrap();
    let healed = Instant::now();
    wait_until(
        "one instance after the heal",
        Duration::from_secs(30),
        || Ok(everyone()? && sample() == 1),
    )
    .unwrap();
    for _ in 0..40 {
        assert_eq!(sample(), 1, "after the heal");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "at-most-once across 2|3: stopped on the side of 2 {stopped:?} after the cut, ran on the side of 3 {moved:?} after it, one instance {:?} after the heal; at most {most} at any sample",
        healed.elapsed()
    );
}
