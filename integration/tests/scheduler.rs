//! Self-organizing placement with real agents and real processes: one
//! instance per slot, spread, failover, no duplicates after a return,
//! drain, constraints, partitions, logs through the CLI, Docker.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mob_integration::{
    Agent, AgentSpec, Netns, local_cluster, new_key_file, processes_with_arg, wait_until,
};
use serde_json::Value;

/// A `sleep` argument no other test uses: instances are found by it.
fn marker(k: u32) -> String {
    (1_000_000 + (std::process::id() % 50_000) * 20 + k).to_string()
}

fn sleeper(name: &str, replicas: u32, marker: &str) -> String {
    format!(
        r#"{{"name": "{name}", "provider": "exec", "replicas": {replicas}, "stop_timeout": "2s", "params": {{"command": ["sleep", "{marker}"]}}}}"#
    )
}

fn slots(agent: &Agent, name: &str) -> anyhow::Result<Vec<Value>> {
    Ok(agent
        .services()?
        .into_iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["slots"].as_array().cloned())
        .unwrap_or_default())
}

/// Waits until `name` has all `replicas` slots running, each as one real
/// process on the node the table says; returns (slot, node, pid).
fn wait_running(
    agents: &[Agent],
    name: &str,
    replicas: usize,
    marker: &str,
    within: Duration,
) -> Vec<(u64, String, u32)> {
    wait_running_off(agents, name, replicas, marker, within, None)
}

/// [`wait_running`], but only a placement with no slot on `avoid` counts:
/// right after a move starts, the old placement is still running and would
/// otherwise satisfy the wait.
fn wait_running_off(
    agents: &[Agent],
    name: &str,
    replicas: usize,
    marker: &str,
    within: Duration,
    avoid: Option<&str>,
) -> Vec<(u64, String, u32)> {
    let mut placed = Vec::new();
    wait_until(
        &format!("{name}: {replicas} slots running, one process each, none on {avoid:?}"),
        within,
        || {
            let view = slots(&agents[0], name)?;
            placed = view
                .iter()
                .filter(|s| s["state"] == "running")
                .filter_map(|s| {
                    Some((
                        s["slot"].as_u64()?,
                        s["node"].as_str()?.to_owned(),
                        s["pid"].as_u64()? as u32,
                    ))
                })
                .collect();
            let mut pids = processes_with_arg(marker);
            pids.sort_unstable();
            let mut reported: Vec<u32> = placed.iter().map(|p| p.2).collect();
            reported.sort_unstable();
            let avoided = avoid.is_none_or(|node| placed.iter().all(|p| p.1 != node));
            Ok(placed.len() == replicas && pids == reported && avoided)
        },
    )
    .unwrap();
    placed
}

/// Checks for `period` that exactly `n` processes carry `marker`.
fn stays_exactly(n: usize, marker: &str, period: Duration) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        let pids = processes_with_arg(marker);
        assert_eq!(
            pids.len(),
            n,
            "expected exactly {n} instances, found {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent_named<'a>(agents: &'a [Agent], name: &str) -> &'a Agent {
    agents.iter().find(|a| a.name() == name).unwrap()
}

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
fn logs_follow_streams_new_lines_from_another_node() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 2).unwrap();
    let spec = r#"{"name": "ticker", "provider": "shell", "params": {"command": "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done"}}"#;
    agents[0].deploy(spec).unwrap();
    let mut owner = String::new();
    wait_until("ticker placed", Duration::from_secs(10), || {
        owner = slots(&agents[0], "ticker")?
            .first()
            .and_then(|s| s["node"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Ok(!owner.is_empty())
    })
    .unwrap();
    // Follow from the agent that does not run it.
    let other = agents.iter().find(|a| a.name() != owner).unwrap();
    let mut follow = std::process::Command::new(mob_integration::binary())
        .args(["logs", "ticker", "-f", "-n", "1", "--agent"])
        .arg(&other.socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Lines written after the follow began arrive, in order.
    let ticks: Vec<u64> = (0..4)
        .map(|_| {
            let line = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            line.rsplit("tick-").next().unwrap().parse().unwrap()
        })
        .collect();
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    follow.kill().unwrap();
    follow.wait().unwrap();
    // Both agents still answer.
    for a in &agents {
        a.cli(&["services"]).unwrap();
    }
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
    // Scale down: the highest slots go, the rest stay where they are.
    agents[2].cli(&["scale", "spread", "1"]).unwrap();
    let after = wait_running(&agents, "spread", 1, &m, Duration::from_secs(10));
    assert_eq!(after[0], placed.iter().find(|p| p.0 == 0).unwrap().clone());
}

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
    assert!(
        killed[0]["pids"]
            .as_str()
            .unwrap_or_default()
            .contains(&orphan.to_string()),
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

    agents[index].cli(&["drain", "--undo"]).unwrap();
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

fn wait_until_value(agent: &Agent, name: &str) -> Value {
    let mut out = Value::Null;
    wait_until("status", Duration::from_secs(5), || {
        out = serde_json::from_str(&agent.cli(&["status", name, "--json"])?)?;
        Ok(true)
    })
    .unwrap();
    out
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

#[test]
fn a_docker_service_runs_logs_and_goes_through_the_cli() {
    let docker = std::process::Command::new("docker")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
        && std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/build-test-image.sh"
            ))
            .status()
            .is_ok_and(|s| s.success());
    if !docker {
        assert!(
            std::env::var_os("MOB_REQUIRE_DOCKER").is_none(),
            "MOB_REQUIRE_DOCKER is set but docker is unavailable"
        );
        eprintln!("skipped: no docker engine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 2).unwrap();
    let name = format!("dk{}", std::process::id());
    let spec = format!(
        r#"{{"name": "{name}", "provider": "docker", "stop_timeout": "1s", "params": {{"image": "mob-test/busybox", "args": ["sh", "-c", "echo docker-says-hi; exec sleep 1000"]}}}}"#
    );
    agents[0].deploy(&spec).unwrap();
    wait_until("the container to run", Duration::from_secs(30), || {
        Ok(slots(&agents[1], &name)?
            .first()
            .is_some_and(|s| s["state"] == "running"))
    })
    .unwrap();
    wait_until(
        "its log line through the CLI",
        Duration::from_secs(10),
        || {
            Ok(agents[1]
                .cli(&["logs", &name])?
                .contains("stdout docker-says-hi"))
        },
    )
    .unwrap();
    agents[1].cli(&["remove", &name]).unwrap();
    let container = format!("mob-{name}-0");
    wait_until(
        "the container to be removed",
        Duration::from_secs(30),
        || {
            let out = std::process::Command::new("docker")
                .args(["ps", "-a", "--format", "{{.Names}}"])
                .output()?;
            Ok(!String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == container))
        },
    )
    .unwrap();
}
