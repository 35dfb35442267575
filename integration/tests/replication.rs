//! The replicated service table with real agents: deploy/update/remove
//! spread, anti-entropy alone, late joiners, full restarts, a damaged file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::time::Duration;

use common::fast_gc;
use mob_integration::{Agent, AgentSpec, local_cluster, local_cluster_with, wait_until};

fn spec(name: &str, replicas: u32) -> String {
    format!(
        r#"{{"name": "{name}", "provider": "shell", "replicas": {replicas}, "params": {{"command": "sleep 1000"}}}}"#
    )
}

fn replicas_of(agent: &Agent, name: &str) -> anyhow::Result<Option<u64>> {
    Ok(agent
        .services()?
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["replicas"].as_u64()))
}

/// Waits until every agent shows `name` with `replicas` (None: absent);
/// returns how long it took.
fn wait_everywhere(
    agents: &[Agent],
    name: &str,
    replicas: Option<u64>,
    within: Duration,
) -> Duration {
    wait_until(
        &format!("{name} with {replicas:?} replicas on every agent"),
        within,
        || {
            for a in agents {
                if replicas_of(a, name)? != replicas {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .unwrap()
}

#[test]
fn deploy_update_and_remove_reach_every_agent_within_2_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 5).unwrap();

    let out = agents[0].deploy(&spec("web", 1)).unwrap();
    assert_eq!(out.trim(), "deployed web version 1");
    wait_everywhere(&agents, "web", Some(1), Duration::from_secs(2));
    let svc = &agents[3].services().unwrap()[0];
    assert_eq!(svc["provider"], "shell");
    assert_eq!(svc["slots"].as_array().unwrap().len(), 1);
    assert_eq!(svc["slots"][0]["slot"], 0);

    // Update from another agent.
    agents[2].cli(&["scale", "web", "3"]).unwrap();
    wait_everywhere(&agents, "web", Some(3), Duration::from_secs(2));
    let out = agents[4].deploy(&spec("web", 2)).unwrap();
    assert_eq!(out.trim(), "updated web version 3");
    wait_everywhere(&agents, "web", Some(2), Duration::from_secs(2));
    let out = agents[1].deploy(&spec("web", 2)).unwrap();
    assert_eq!(out.trim(), "unchanged web version 3");

    agents[1].cli(&["remove", "web"]).unwrap();
    wait_everywhere(&agents, "web", None, Duration::from_secs(2));

    // Every agent logged each change once, naming the origin.
    for a in &agents {
        let deployed = a.log_events("service deployed");
        assert_eq!(deployed.len(), 1, "{}", a.name());
        assert_eq!(deployed[0]["origin"], "n1");
        assert_eq!(a.log_events("service updated").len(), 2, "{}", a.name());
        let removed = a.log_events("service removed");
        assert_eq!(removed.len(), 1, "{}", a.name());
        assert_eq!(
            (
                removed[0]["version"].as_u64(),
                removed[0]["origin"].as_str()
            ),
            (Some(4), Some("n2"))
        );
    }
}

#[test]
fn bad_specs_and_unknown_services_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 2).unwrap();
    agents[0].deploy(&spec("keep", 1)).unwrap();
    wait_everywhere(&agents, "keep", Some(1), Duration::from_secs(5));

    let bad = [
        (
            r#"{"name": "x", "provider": "podman", "params": {}}"#,
            "provider",
        ),
        (
            r#"{"name": "x", "provider": "exec", "params": {}}"#,
            "params.command",
        ),
        (
            r#"{"name": "Bad!", "provider": "exec", "params": {"command": "x"}}"#,
            "name",
        ),
        (
            r#"{"name": "x", "provider": "exec", "replicas": 1e9, "params": {"command": "x"}}"#,
            "x",
        ),
        (
            r#"[{"name": "a", "provider": "exec", "depends_on": ["b"], "params": {"command": "x"}}, {"name": "b", "provider": "exec", "depends_on": ["a"], "params": {"command": "x"}}]"#,
            "cycle",
        ),
        (
            r#"{"name": "x", "provider": "exec", "params": {"command": "x"}, "restart_window": "forever"}"#,
            "restart_window",
        ),
        ("not a spec at all", "toml"),
    ];
    for (text, needle) in bad {
        let out = agents[0].cli_with_input(&["deploy", "-"], text).unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
    }
    for (args, needle) in [
        (&["remove", "ghost"][..], "ghost"),
        (&["scale", "ghost", "2"][..], "ghost"),
        (&["scale", "keep", "5000"][..], "replicas"),
        (&["status", "ghost"][..], "ghost"),
    ] {
        let err = agents[1].cli(args).unwrap_err().to_string();
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    for a in &agents {
        assert_eq!(a.service_names().unwrap(), vec!["keep"], "{}", a.name());
        assert_eq!(replicas_of(a, "keep").unwrap(), Some(1));
    }
}

#[test]
fn anti_entropy_alone_converges() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("no-deltas.toml");
    std::fs::write(
        &config,
        "[table]\nbroadcast_deltas = false\nanti_entropy_period = \"500ms\"\n",
    )
    .unwrap();
    let agents = local_cluster_with(
        dir.path(),
        4,
        &["--config".into(), config.display().to_string()],
    )
    .unwrap();
    for i in 0..5 {
        agents[i % 4].deploy(&spec(&format!("s{i}"), 1)).unwrap();
    }
    wait_until(
        "every agent to hold all five services",
        Duration::from_secs(15),
        || {
            for a in &agents {
                if a.service_names()?.len() != 5 {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .unwrap();
    // No delta was broadcast: the records came by anti-entropy.
    for a in &agents {
        let stats = a.stats().unwrap();
        assert_eq!(stats["deltas_received"], 0, "{stats}");
        assert!(
            stats["anti_entropy_rounds"].as_u64().unwrap() > 0,
            "{stats}"
        );
    }
}

#[test]
fn a_late_agent_gets_the_whole_table() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let many: Vec<String> = (0..30).map(|i| spec(&format!("svc-{i:02}"), 1)).collect();
    agents[1].deploy(&format!("[{}]", many.join(","))).unwrap();
    wait_until("the table on the founders", Duration::from_secs(10), || {
        Ok(agents
            .iter()
            .all(|a| a.service_names().is_ok_and(|n| n.len() == 30)))
    })
    .unwrap();

    let key = dir.path().join("cluster.key");
    let mut late = AgentSpec::local("late", dir.path(), &key);
    late.join.push(agents[0].addr);
    let late = Agent::start(late).unwrap();
    wait_until(
        "the late agent to hold all 30 services",
        Duration::from_secs(10),
        || Ok(late.service_names()?.len() == 30),
    )
    .unwrap();
}

#[test]
fn services_survive_a_full_cluster_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 3).unwrap();
    agents[0].deploy(&spec("db", 1)).unwrap();
    agents[2].deploy(&spec("web", 2)).unwrap();
    agents[1].cli(&["remove", "db"]).unwrap();
    agents[1].deploy(&spec("cache", 1)).unwrap();
    wait_until("the table everywhere", Duration::from_secs(10), || {
        Ok(agents
            .iter()
            .all(|a| a.service_names().is_ok_and(|n| n == ["cache", "web"])))
    })
    .unwrap();
    for a in &mut agents {
        a.terminate().unwrap();
    }
    // Each agent alone, before any peer is back, has the table from disk.
    for a in &mut agents {
        let mut spec = a.spec.clone();
        spec.join.clear();
        spec.bind = a.addr;
        let alone = Agent::start(spec).unwrap();
        assert_eq!(
            alone.service_names().unwrap(),
            vec!["cache", "web"],
            "{}",
            alone.name()
        );
        assert_eq!(replicas_of(&alone, "web").unwrap(), Some(2));
        drop(alone);
    }
}

#[test]
fn an_acknowledged_write_survives_a_crash_right_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 1).unwrap();
    agents[0].deploy(&spec("kept", 2)).unwrap();
    agents[0].cli(&["scale", "kept", "3"]).unwrap();
    // No peer holds a copy: only the file can bring it back.
    agents[0].kill9().unwrap();
    agents[0].restart().unwrap();
    assert_eq!(agents[0].service_names().unwrap(), vec!["kept"]);
    assert_eq!(replicas_of(&agents[0], "kept").unwrap(), Some(3));
}

fn table_stat(agent: &Agent, counter: &str) -> anyhow::Result<u64> {
    agent.stats()?[counter]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no {counter} in stats"))
}

#[test]
fn removed_services_and_gone_nodes_are_forgotten_and_stay_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let extra = fast_gc(dir.path());
    let mut agents = local_cluster_with(dir.path(), 3, &extra).unwrap();
    let records_everywhere = |agents: &[Agent], n: u64| -> anyhow::Result<bool> {
        for a in agents {
            if table_stat(a, "table_records")? != n {
                return Ok(false);
            }
        }
        Ok(true)
    };
    // Three node records, nothing else.
    wait_until("the node records", Duration::from_secs(10), || {
        records_everywhere(&agents, 3)
    })
    .unwrap();
    agents[0].deploy(&spec("temp", 1)).unwrap();
    wait_until("the claim and status", Duration::from_secs(10), || {
        Ok(agents
            .iter()
            .all(|a| table_stat(a, "table_records").unwrap_or(0) >= 6))
    })
    .unwrap();
    agents[1].cli(&["remove", "temp"]).unwrap();
    // The removal, the released claim and the stale status are forgotten
    // a little after 2 s.
    wait_until("the service forgotten", Duration::from_secs(15), || {
        records_everywhere(&agents, 3)
    })
    .unwrap();
    for a in &agents {
        assert!(
            table_stat(a, "table_forgotten").unwrap() >= 3,
            "{}",
            a.name()
        );
    }
    // A node gone for longer than gc_after is forgotten too.
    agents[2].kill9().unwrap();
    let survivors = &agents[..2];
    wait_until("the dead node forgotten", Duration::from_secs(20), || {
        records_everywhere(survivors, 2)
    })
    .unwrap();
    // Anti-entropy between nodes that forgot at different moments brings
    // nothing back.
    let end = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < end {
        assert!(records_everywhere(survivors, 2).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_new_agent_keeps_claims_older_than_the_gc_age() {
    // Claims older than gc_after must reach a new agent like any other
    // record: dropping them would make it take slots over.
    let dir = tempfile::tempdir().unwrap();
    let extra = fast_gc(dir.path());
    let mut agents = local_cluster_with(dir.path(), 1, &extra).unwrap();
    for i in 0..10 {
        // Pinned: rebalancing would rightly move some to the new agent.
        let pinned = format!(
            r#"{{"name": "old-{i}", "provider": "shell", "rebalance": false, "params": {{"command": "sleep 1000"}}}}"#
        );
        agents[0].deploy(&pinned).unwrap();
    }
    let running = |a: &Agent| -> anyhow::Result<usize> {
        Ok(a.services()?
            .iter()
            .flat_map(|s| s["slots"].as_array().cloned().unwrap_or_default())
            .filter(|slot| slot["state"] == "running")
            .count())
    };
    wait_until("ten services running", Duration::from_secs(10), || {
        Ok(running(&agents[0])? == 10)
    })
    .unwrap();
    let before = agents[0].services().unwrap();
    // Let every claim age past gc_after.
    let aged = std::time::Instant::now() + Duration::from_secs(3);
    wait_until("the claims to age", Duration::from_secs(5), || {
        Ok(std::time::Instant::now() >= aged)
    })
    .unwrap();
    let key = dir.path().join("cluster.key");
    let mut late = AgentSpec::local("n2", dir.path(), &key);
    late.join.push(agents[0].addr);
    late.extra = extra.to_vec();
    agents.push(Agent::start(late).unwrap());
    wait_until(
        "the new agent to see ten running",
        Duration::from_secs(15),
        || Ok(running(&agents[1])? == 10),
    )
    .unwrap();
    // A few reconcile rounds later, nothing moved.
    let end = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < end {
        assert!(agents[1].log_events("slot claimed").is_empty());
        std::thread::sleep(Duration::from_millis(100));
    }
    let nodes = |view: &[serde_json::Value]| -> Vec<serde_json::Value> {
        view.iter().map(|s| s["slots"][0]["node"].clone()).collect()
    };
    assert_eq!(nodes(&agents[0].services().unwrap()), nodes(&before));
}

#[test]
fn a_damaged_table_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 1).unwrap();
    agents[0].deploy(&spec("web", 1)).unwrap();
    let table = agents[0].spec.data_dir.join("table");
    wait_until("the table file", Duration::from_secs(5), || {
        Ok(table.exists())
    })
    .unwrap();
    agents[0].terminate().unwrap();

    let bytes = std::fs::read(&table).unwrap();
    let damaged = &bytes[..bytes.len() - 3];
    std::fs::write(&table, damaged).unwrap();

    let spec_before = agents[0].spec.clone();
    let err = Agent::start(spec_before.clone())
        .err()
        .expect("the agent must refuse to start");
    assert!(err.to_string().contains("exited"), "{err}");
    let log = std::fs::read_to_string(spec_before.data_dir.join("agent.log")).unwrap();
    assert!(
        log.contains(&table.display().to_string()) && log.contains("--reset-table"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&table).unwrap(),
        damaged,
        "the damaged file was modified"
    );

    // --reset-table sets it aside and starts empty.
    let mut reset = spec_before;
    reset.extra.push("--reset-table".into());
    let agent = Agent::start(reset).unwrap();
    assert!(agent.service_names().unwrap().is_empty());
    let aside: Vec<_> = std::fs::read_dir(&agent.spec.data_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("table.corrupt.")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), damaged);
}
