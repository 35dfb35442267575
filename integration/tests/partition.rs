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
    let everyone_alive = || -> anyhow::Result<bool> {
        for a in &agents {
            if !a.sees_alive(&all)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
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
    let everyone = || -> anyhow::Result<bool> {
        for a in &agents {
            if !a.sees_alive(&["h1", "h2", "h3"])? {
                return Ok(false);
            }
        }
        Ok(true)
    };
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
