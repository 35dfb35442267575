//! Key rotation on real agents: `keys install`, `use` and `remove` reach
//! every agent through the table; one that was down through `install` and
//! `use` rejoins on the old key and follows; one that holds only a removed
//! key is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;

/// `keys list --json` of `agent`.
fn keys(agent: &Agent) -> Vec<Value> {
    let out = agent.cli(&["keys", "list", "--json"]).unwrap_or_default();
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_default()
}

/// The names in a `keys list` entry's `field`, sorted.
fn names(entry: &Value, field: &str) -> Vec<String> {
    let mut names: Vec<String> = entry[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until `agent` lists key `fingerprint` with `field` naming exactly
/// `expected`.
fn wait_key(agent: &Agent, fingerprint: &str, field: &str, expected: &[&str], what: &str) {
    let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    wait_until(what, Duration::from_secs(30), || {
        Ok(keys(agent)
            .iter()
            .any(|k| k["fingerprint"] == fingerprint && names(k, field) == expected))
    })
    .unwrap();
}

/// The fingerprint `keys list` gives this agent's primary.
fn primary(agent: &Agent) -> Option<String> {
    keys(agent)
        .into_iter()
        .find(|k| k["primary"] == true)
        .and_then(|k| k["fingerprint"].as_str().map(str::to_owned))
}

#[test]
fn a_key_rotates_on_every_agent_and_one_that_was_down_follows() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 5).unwrap();
    let old = primary(&agents[0]).expect("a primary key");
    let new_key = std::fs::read_to_string(new_key_file(&dir.path().join("new.key")).unwrap())
        .unwrap()
        .trim()
        .to_owned();
    // n5 is down through the install and the use.
    agents[4].terminate().unwrap();
    let four = ["n1", "n2", "n3", "n4"];
    wait_until("n1 to see n5 gone", Duration::from_secs(30), || {
        Ok(agents[0].state_of("n5")?.is_none_or(|m| m.state != "alive"))
    })
    .unwrap();
    let out = agents[0].cli(&["keys", "install", &new_key]).unwrap();
    let new = out
        .split_whitespace()
        .nth(2)
        .expect("installed key FINGERPRINT ...")
        .to_owned();
    assert_eq!(new.len(), 16, "{out}");
    wait_key(
        &agents[0],
        &new,
        "nodes",
        &four,
        "every live agent to hold the new key",
    );
    // The old key is still everyone's primary, so it can't be removed.
    let refused = agents[1].cli(&["keys", "remove", &old]).unwrap_err();
    assert!(refused.to_string().contains("primary"), "{refused}");
    let out = agents[1].cli(&["keys", "use", &new_key, "--json"]).unwrap();
    let used: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        used,
        serde_json::json!({"fingerprint": new, "done": "used"})
    );
    wait_key(
        &agents[0],
        &new,
        "sealing",
        &four,
        "every live agent to seal with the new key",
    );

    // n5 comes back holding the old key only, which the others still
    // accept: it rejoins, and learns the new key from the table.
    let marker = marker(1);
    agents[0].deploy(&sleeper("after", 1, &marker)).unwrap();
    let mut spec = agents[4].spec.clone();
    spec.bind = agents[4].addr;
    agents[4] = Agent::start(spec).unwrap();
    let all = ["n1", "n2", "n3", "n4", "n5"];
    wait_until(
        "everyone to see n5 alive again",
        Duration::from_secs(30),
        || all_see_alive(&agents, &all),
    )
    .unwrap();
    wait_until(
        "n5 to seal with the new key",
        Duration::from_secs(30),
        || Ok(primary(&agents[4]).as_deref() == Some(new.as_str())),
    )
    .unwrap();
    wait_until(
        "n5 to learn of the service deployed while it was down",
        Duration::from_secs(30),
        || Ok(agents[4].service_names()?.contains(&"after".to_owned())),
    )
    .unwrap();
    // The remove is checked against the view of the agent it is sent to,
    // so every agent must see all five on the new key first.
    for agent in &agents {
        wait_key(
            agent,
            &new,
            "sealing",
            &all,
            "all five to seal with the new key, in every agent's view",
        );
    }

    // Remove the old key: every agent drops it, n5's keyring file too.
    agents[2].cli(&["keys", "remove", &old]).unwrap();
    wait_until(
        "every agent to drop the old key",
        Duration::from_secs(30),
        || {
            for agent in &agents {
                let held: Vec<Value> = keys(agent)
                    .into_iter()
                    .filter(|k| k["held"] == true)
                    .collect();
                if held.len() != 1 || held[0]["fingerprint"] != new.as_str() {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .unwrap();
    wait_until(
        "n5's keyring file to hold the new key alone",
        Duration::from_secs(10),
        || {
            let file = std::fs::read_to_string(agents[4].spec.data_dir.join("keyring"))?;
            let file: Value = serde_json::from_str(&file)?;
            Ok(file["keys"].as_array().map(Vec::len) == Some(1)
                && file["primary"] == new_key.as_str())
        },
    )
    .unwrap();

    // The table holds the keys: it is as private as the keyring.
    use std::os::unix::fs::PermissionsExt;
    let table = std::fs::metadata(agents[0].spec.data_dir.join("table")).unwrap();
    assert_eq!(table.permissions().mode() & 0o777, 0o600);

    // An agent that holds only the removed key is refused by everyone.
    let before = agents[0].stats().unwrap()["packets_rejected"]
        .as_u64()
        .unwrap_or(0);
    let mut outsider = AgentSpec::local("stale", dir.path(), &agents[0].spec.key_file);
    outsider.join = vec![agents[0].addr];
    let outsider = Agent::start(outsider).unwrap();
    wait_until(
        "n1 to refuse the old key's packets",
        Duration::from_secs(30),
        || {
            let now = agents[0].stats()?["packets_rejected"].as_u64().unwrap_or(0);
            Ok(now > before + 3)
        },
    )
    .unwrap();
    assert!(agents[0].state_of("stale").unwrap().is_none());
    // ... and an operator reads it in the log, not only in the counters.
    let warned = agents[0].log_events("packet rejected");
    assert!(
        warned.iter().any(|e| e["level"] == "WARN"),
        "no warning of the rejected packets: {warned:?}"
    );
    assert_eq!(
        outsider
            .members()
            .unwrap()
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["stale"]
    );
    // The cluster still works on the new key.
    wait_running(&agents, "after", 1, &marker, Duration::from_secs(30));
}
