//! Where services run, with real agents and real processes: one instance
//! cluster-wide, spread over nodes, tag constraints, `deploy --wait`, and
//! what an instance sees of its agent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;

#[test]
fn one_instance_runs_cluster_wide_and_its_logs_are_readable_from_any_agent() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let m = marker(1);
    let spec = format!(
        r#"{{"name": "web", "provider": "shell", "params": {{"command": "echo web-says-hello; exec sleep {m}"}}}}"#
    );
    agents[1].deploy(&spec).unwrap();
    let placed = wait_running(&agents, "web", 1, &m, Duration::from_secs(10));
    stays_exactly(1, &m, Duration::from_secs(2));
    // Every agent reports the same placement.
    for a in &agents {
        let view = slots(a, "web").unwrap();
        assert_eq!(view[0]["node"], placed[0].1.as_str(), "{}", a.name());
    }
    for a in &agents {
        let out = a.cli(&["logs", "web", "-n", "10"]).unwrap();
        assert!(out.contains("stdout web-says-hello"), "{}: {out}", a.name());
    }
    let owner = agent_named(&agents, &placed[0].1);
    assert_eq!(owner.log_events("slot claimed").len(), 1);
    // Removing it stops the process.
    agents[2].cli(&["remove", "web"]).unwrap();
    wait_until("the instance to stop", Duration::from_secs(10), || {
        Ok(processes_with_arg(&m).is_empty())
    })
    .unwrap();
}

#[test]
fn deploy_wait_waits_for_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 1).unwrap();
    let m = marker(15);
    let out = agents[0]
        .cli_with_input(&["deploy", "-", "--wait"], &sleeper("upgraded", 1, &m))
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The update crashes at once: the old instance running must not count.
    let broken = r#"{"name": "upgraded", "provider": "exec", "max_restarts": 1, "params": {"command": ["false"]}}"#;
    let out = agents[0]
        .cli_with_input(&["deploy", "-", "--wait"], broken)
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("upgraded slot 0 failed"), "{stderr}");
    // Scaling an unchanged spec restarts nothing, and --wait sees it run.
    let scaled = sleeper("upgraded", 2, &m);
    agents[0].deploy(&sleeper("upgraded", 1, &m)).unwrap();
    wait_running(&agents, "upgraded", 1, &m, Duration::from_secs(10));
    let out = agents[0]
        .cli_with_input(&["deploy", "-", "--wait"], &scaled)
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(processes_with_arg(&m).len(), 2);
}

#[test]
fn three_replicas_spread_one_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let m = marker(2);
    // `deploy --wait` returns once every slot runs.
    let out = agents[0]
        .cli_with_input(&["deploy", "-", "--wait"], &sleeper("spread", 3, &m))
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("running\n"));
    assert_eq!(
        processes_with_arg(&m).len(),
        3,
        "deploy --wait returned before every slot ran"
    );
    let placed = wait_running(&agents, "spread", 3, &m, Duration::from_secs(10));
    let nodes: BTreeSet<&String> = placed.iter().map(|p| &p.1).collect();
    assert_eq!(nodes.len(), 3, "{placed:?}");
    // `members` shows the spread: one slot on each node, from any agent.
    wait_until(
        "members to show one slot per node",
        Duration::from_secs(10),
        || {
            Ok(agents.iter().all(|a| {
                a.members()
                    .is_ok_and(|m| m.len() == 3 && m.iter().all(|m| m.slots == 1))
            }))
        },
    )
    .unwrap();
    // Scale down: the highest slots go, the rest stay where they are.
    agents[2].cli(&["scale", "spread", "1"]).unwrap();
    let after = wait_running(&agents, "spread", 1, &m, Duration::from_secs(10));
    assert_eq!(after[0], placed.iter().find(|p| p.0 == 0).unwrap().clone());
}

#[test]
fn constraints_place_only_on_tagged_nodes_and_explain_pending() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();
    let mut agents: Vec<Agent> = Vec::new();
    for (i, zone) in ["a", "b", "b"].iter().enumerate() {
        let mut spec = AgentSpec::local(&format!("n{}", i + 1), dir.path(), &key);
        spec.extra = vec!["--tag".into(), format!("zone={zone}")];
        if let Some(seed) = agents.first() {
            spec.join.push(seed.addr);
        }
        agents.push(Agent::start(spec).unwrap());
    }
    wait_until("the cluster", Duration::from_secs(10), || {
        Ok(agents
            .iter()
            .all(|a| a.sees_alive(&["n1", "n2", "n3"]).unwrap_or(false)))
    })
    .unwrap();
    let m = marker(5);
    let spec = format!(
        r#"{{"name": "zoned", "provider": "exec", "replicas": 2, "constraints": {{"tags": {{"zone": "b"}}}}, "params": {{"command": ["sleep", "{m}"]}}}}"#
    );
    agents[0].deploy(&spec).unwrap();
    let placed = wait_running(&agents, "zoned", 2, &m, Duration::from_secs(10));
    let nodes: BTreeSet<&str> = placed.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["n2", "n3"]));

    agents[0]
        .deploy(r#"{"name": "nowhere", "provider": "exec", "constraints": {"tags": {"zone": "c"}}, "params": {"command": ["sleep", "1"]}}"#)
        .unwrap();
    let status: Value = wait_until_value(&agents[1], "nowhere");
    assert_eq!(status["slots"][0]["state"], "pending");
    assert_eq!(status["slots"][0]["node"], Value::Null);
    let reason = status["slots"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("zone=c"), "{status}");
    let text = agents[2].cli(&["status", "nowhere"]).unwrap();
    assert!(
        text.contains("slot 0: no live, non-draining node offers"),
        "{text}"
    );
}

#[test]
fn an_instance_can_reach_its_agent_but_never_sees_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();
    let mut spec = AgentSpec::local("n1", dir.path(), &key);
    let key_text = std::fs::read_to_string(&key).unwrap();
    spec.env = vec![("MOB_KEY".into(), key_text.trim().to_owned())];
    let agent = Agent::start(spec).unwrap();
    let m = marker(14);
    let bin = mob_integration::binary();
    let command = format!(
        "echo \"key=[$MOB_KEY]\"; {} services; exec sleep {m}",
        bin.display()
    );
    let spec = serde_json::json!({
        "name": "curious",
        "provider": "shell",
        "params": {"command": command},
    });
    agent.deploy(&spec.to_string()).unwrap();
    let mut out = String::new();
    wait_until("the instance's output", Duration::from_secs(10), || {
        out = agent.cli(&["logs", "curious"])?;
        Ok(out.contains("curious") && out.contains("key=["))
    })
    .unwrap();
    assert!(out.contains("key=[]"), "{out}");
    // `mob-agent services` inside the instance found its agent by MOB_AGENT.
    assert!(out.contains("stdout curious"), "{out}");
}

#[test]
fn joining_agents_get_slots_by_rebalancing_and_no_slot_ever_runs_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 12).unwrap();
    // 120 one-slot services, each a `sleep` with an argument of its own.
    let base = marker(20);
    let args: Vec<String> = (0..120).map(|i| format!("{base}.{i:03}")).collect();
    let specs: Vec<String> = args
        .iter()
        .enumerate()
        .map(|(i, arg)| {
            format!(
                r#"{{"name": "r{i:03}", "provider": "exec", "stop_timeout": "2s", "params": {{"command": ["sleep", "{arg}"]}}}}"#
            )
        })
        .collect();
    agents[0].deploy(&format!("[{}]", specs.join(","))).unwrap();
    wait_until(
        "120 services running, one process each",
        Duration::from_secs(30),
        || Ok(count_processes_with_args(&args).iter().all(|n| *n == 1)),
    )
    .unwrap();

    // Four agents join.
    let key = dir.path().join("cluster.key");
    for i in 13..=16 {
        let mut spec = AgentSpec::local(&format!("n{i}"), dir.path(), &key);
        spec.join.push(agents[0].addr);
        agents.push(Agent::start(spec).unwrap());
    }
    // Every 50 ms, real processes: a slot never runs nowhere, and never
    // more than twice (the handover's overlap).
    let new: Vec<String> = (13..=16).map(|i| format!("n{i}")).collect();
    let started = Instant::now();
    let mut samples = 0;
    let mut doubled = 0;
    loop {
        let counts = count_processes_with_args(&args);
        samples += 1;
        for (arg, n) in args.iter().zip(&counts) {
            assert!(
                *n >= 1,
                "{arg} runs nowhere, {:?} after the join",
                started.elapsed()
            );
            assert!(*n <= 2, "{arg} runs {n} times");
        }
        doubled += counts.iter().filter(|n| **n == 2).count();
        let members = agents[0].members().unwrap_or_default();
        let joined_hold = new
            .iter()
            .all(|name| members.iter().any(|m| &m.name == name && m.slots >= 1));
        if joined_hold && counts.iter().all(|n| *n == 1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the joined agents hold no slot after 60 s: {members:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "rebalancing: every joined agent holds a slot after {:.1} s ({samples} samples, {doubled} slot-samples in handover)",
        started.elapsed().as_secs_f64()
    );
    // The joined agents got their slots by handovers (claims are sticky:
    // nothing else gives them any).
    let handed: usize = agents
        .iter()
        .map(|a| a.log_events("slot handed over").len())
        .sum();
    assert!(handed >= new.len(), "{handed} handovers");
}

/// Nodes (by name) with a running slot of `name`, as `agent` sees them.
fn running_on(agent: &Agent, name: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(slots(agent, name)?
        .iter()
        .filter(|s| s["state"] == "running")
        .filter_map(|s| s["node"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn an_every_node_service_runs_once_on_each_agent_and_follows_membership() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 5).unwrap();
    let m = marker(21);
    let spec = format!(
        r#"{{"name": "node-agent", "provider": "exec", "replicas": "every-node", "stop_timeout": "2s", "params": {{"command": ["sleep", "{m}"]}}}}"#
    );
    agents[0].deploy(&spec).unwrap();
    let five: BTreeSet<String> = (1..=5).map(|i| format!("n{i}")).collect();
    wait_until(
        "one instance on each of the 5 agents",
        Duration::from_secs(20),
        || Ok(processes_with_arg(&m).len() == 5 && running_on(&agents[0], "node-agent")? == five),
    )
    .unwrap();
    let before: BTreeSet<u32> = processes_with_arg(&m).into_iter().collect();
    let err = agents[0]
        .cli(&["scale", "node-agent", "3"])
        .expect_err("an every-node service has no count to scale");
    assert!(err.to_string().contains("every eligible node"), "{err}");

    // A sixth agent joins: it starts its own, and nothing else moves.
    let key = dir.path().join("cluster.key");
    let mut spec = AgentSpec::local("n6", dir.path(), &key);
    spec.join.push(agents[0].addr);
    agents.push(Agent::start(spec).unwrap());
    let six: BTreeSet<String> = (1..=6).map(|i| format!("n{i}")).collect();
    let took = wait_until(
        "the joined agent to run its own instance",
        Duration::from_secs(20),
        || Ok(processes_with_arg(&m).len() == 6 && running_on(&agents[0], "node-agent")? == six),
    )
    .unwrap();
    eprintln!("every-node: the sixth agent runs its instance {took:?} after it started");
    let after: BTreeSet<u32> = processes_with_arg(&m).into_iter().collect();
    assert!(before.is_subset(&after), "an instance restarted or moved");

    // An agent that leaves takes its slot with it: nothing moves.
    agents[5].terminate().unwrap();
    wait_until(
        "the left agent's instance gone, and no other",
        Duration::from_secs(20),
        || Ok(processes_with_arg(&m).len() == 5 && running_on(&agents[0], "node-agent")? == five),
    )
    .unwrap();
    let left: BTreeSet<u32> = processes_with_arg(&m).into_iter().collect();
    assert_eq!(left, before, "the five first instances run on, untouched");
}
