//! Membership with real `mob-agent` processes: forming, failure detection,
//! graceful leave, restart, wrong keys, late seeds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;

#[test]
fn five_agents_form_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 5).unwrap();
    let all = names(&agents);
    for agent in &agents {
        let members = agent.members().unwrap();
        assert_eq!(members.len(), 5, "{} lists {members:?}", agent.name());
        let listed: HashSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(listed, all.iter().map(String::as_str).collect());
        assert!(members.iter().all(|m| m.state == "alive"), "{members:?}");
        // The local node comes first.
        assert_eq!(members[0].name, agent.name());
        // One `member up` line per peer, carrying the live member count.
        let ups = agent.log_events("member up");
        assert_eq!(ups.len(), 4, "{}: {ups:?}", agent.name());
        assert!(ups.iter().all(|e| e["members"].as_u64().is_some()));
        // JSON logs carry real arrays and numbers.
        let started = agent.log_events("agent started");
        assert_eq!(started.len(), 1, "{started:?}");
        let seeds = started[0]["seeds"].as_array().expect("seeds is an array");
        assert!(
            seeds
                .iter()
                .all(|s| s.as_str().is_some_and(|s| s.contains(':')))
        );
        assert!(started[0]["providers"].is_array(), "{started:?}");
        assert!(started[0]["epoch"].as_u64().is_some(), "{started:?}");
    }
}

#[test]
fn kill_is_down_and_sigterm_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 5).unwrap();

    let mut victim = agents.pop().unwrap();
    let victim_name = victim.name().to_owned();
    victim.kill9().unwrap();
    wait_until(
        "all survivors to report the killed agent down",
        Duration::from_secs(15),
        || {
            for a in &agents {
                if a.state_of(&victim_name)?.map(|m| m.state).as_deref() != Some("down") {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .unwrap();
    for a in &agents {
        assert_eq!(
            events_about(a, "member down", &victim_name),
            1,
            "{}",
            a.name()
        );
    }

    let mut leaver = agents.pop().unwrap();
    let leaver_name = leaver.name().to_owned();
    leaver.terminate().unwrap();
    let mut seen_down = false;
    wait_until(
        "all survivors to report the stopped agent left",
        Duration::from_secs(5),
        || {
            let mut all_left = true;
            for a in &agents {
                match a.state_of(&leaver_name)?.map(|m| m.state).as_deref() {
                    Some("left") => {}
                    Some("down") => {
                        seen_down = true;
                        all_left = false;
                    }
                    _ => all_left = false,
                }
            }
            Ok(all_left)
        },
    )
    .unwrap();
    assert!(!seen_down, "a graceful stop was reported as down");
    for a in &agents {
        assert_eq!(
            events_about(a, "member left", &leaver_name),
            1,
            "{}",
            a.name()
        );
        assert_eq!(
            events_about(a, "member down", &leaver_name),
            0,
            "{}",
            a.name()
        );
    }
    // The stopped agent said goodbye before exiting.
    assert_eq!(
        leaver
            .log_events("shutting down: handing slots over, then leaving the cluster")
            .len(),
        1
    );
}

#[test]
fn restarted_agent_returns_with_a_newer_epoch_without_flapping() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 4).unwrap();
    let old_epoch = agents[3].members().unwrap()[0].epoch;
    let name = agents[3].name().to_owned();

    agents[3].kill9().unwrap();
    wait_until(
        "the killed agent to be down everywhere",
        Duration::from_secs(15),
        || {
            for a in &agents[..3] {
                if a.state_of(&name)?.map(|m| m.state).as_deref() != Some("down") {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .unwrap();

    agents[3].restart().unwrap();
    let all = names(&agents);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    wait_until(
        "everyone to see everyone alive again",
        Duration::from_secs(15),
        || all_see_alive(&agents, &all),
    )
    .unwrap();
    for a in &agents {
        let back = a.state_of(&name).unwrap().unwrap();
        assert!(
            back.epoch > old_epoch,
            "{}: epoch {} not newer than {old_epoch}",
            a.name(),
            back.epoch
        );
    }
    // The epoch came from the data dir and is persisted for the next start.
    let stored: u64 = std::fs::read_to_string(agents[3].spec.data_dir.join("epoch"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(stored, agents[3].members().unwrap()[0].epoch);

    // No flapping: the survivors never saw each other go down or come back,
    // and saw the restarted node go down once and come up once more.
    for a in &agents[..3] {
        for other in &agents[..3] {
            if other.name() == a.name() {
                continue;
            }
            assert_eq!(
                events_about(a, "member down", other.name()),
                0,
                "{} about {}",
                a.name(),
                other.name()
            );
            assert_eq!(
                events_about(a, "member suspect", other.name()),
                0,
                "{} about {}",
                a.name(),
                other.name()
            );
            assert_eq!(
                events_about(a, "member up", other.name()),
                1,
                "{} about {}",
                a.name(),
                other.name()
            );
        }
        assert_eq!(events_about(a, "member down", &name), 1, "{}", a.name());
        assert_eq!(events_about(a, "member up", &name), 2, "{}", a.name());
    }
}

#[test]
fn agent_with_another_key_never_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let other_key = new_key_file(&dir.path().join("other.key")).unwrap();
    let mut spec = AgentSpec::local("intruder", dir.path(), &other_key);
    spec.join = agents.iter().map(|a| a.addr).collect();
    let intruder = Agent::start(spec).unwrap();

    let rejected = |a: &Agent| -> anyhow::Result<u64> {
        a.stats()?["packets_rejected"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no packets_rejected"))
    };
    wait_until(
        "every member to reject the intruder's packets",
        Duration::from_secs(20),
        || {
            for a in &agents {
                assert!(
                    a.state_of("intruder")?.is_none(),
                    "{} lists the intruder",
                    a.name()
                );
                if rejected(a)? < 3 {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .unwrap();
    // The intruder sees only itself, and rejects the members' replies if any.
    let seen = intruder.members().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    for a in &agents {
        assert!(a.state_of("intruder").unwrap().is_none());
        assert_eq!(a.members().unwrap().len(), 3);
    }
}

#[test]
fn agent_started_before_its_seed_joins_when_the_seed_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();
    let seed_addr = free_port();
    let mut early = AgentSpec::local("early", dir.path(), &key);
    early.join.push(seed_addr);
    let early = Agent::start(early).unwrap();
    // It keeps announcing to the absent seed.
    wait_until(
        "the early agent to announce",
        Duration::from_secs(10),
        || Ok(early.stats()?["datagrams_sent"].as_u64().unwrap_or(0) >= 2),
    )
    .unwrap();
    assert_eq!(early.members().unwrap().len(), 1);

    let mut seed = AgentSpec::local("seed", dir.path(), &key);
    seed.bind = seed_addr;
    let seed = Agent::start(seed).unwrap();
    wait_until("both to see each other", Duration::from_secs(15), || {
        Ok(early.sees_alive(&["early", "seed"])? && seed.sees_alive(&["early", "seed"])?)
    })
    .unwrap();
}

#[test]
fn force_leave_forgets_a_down_node_everywhere_until_it_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 3).unwrap();
    let gone = agents[2].name().to_owned();
    // A live node is refused.
    let refused = agents[0].cli(&["force-leave", &gone]).unwrap_err();
    assert!(refused.to_string().contains("is alive"), "{refused}");
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    agents[2].kill9().unwrap();
    wait_until(
        "the survivors to report it down",
        Duration::from_secs(15),
        || {
            Ok(agents[..2]
                .iter()
                .all(|a| matches!(a.state_of(&gone), Ok(Some(m)) if m.state == "down")))
        },
    )
    .unwrap();
    // How long it has been down: since after the kill.
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&agents[0].cli(&["members", "--json"]).unwrap()).unwrap();
    let down = listed.iter().find(|m| m["name"] == gone.as_str()).unwrap();
    assert!(
        down["state_since_ms"].as_u64().unwrap() >= killed_ms,
        "{down}"
    );
    let detail = agents[0].cli(&["members", "--detail"]).unwrap();
    assert!(detail.lines().next().unwrap().contains("FOR"), "{detail}");
    let out = agents[0].cli(&["force-leave", &gone, "--json"]).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"forgotten": gone})
    );
    // Gone from both survivors' lists (the other one learns it from the
    // table), and it stays gone.
    wait_until(
        "both survivors to forget it",
        Duration::from_secs(10),
        || {
            for a in &agents[..2] {
                if a.state_of(&gone)?.is_some() {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .unwrap();
    assert_eq!(
        agents[0]
            .log_events("member forgotten by force-leave")
            .len(),
        1
    );
    // Started again, it is a member again everywhere.
    agents[2].restart().unwrap();
    let all = names(&agents);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    wait_until(
        "the restarted node to be a member again",
        Duration::from_secs(15),
        || all_see_alive(&agents, &all),
    )
    .unwrap();
}
