//! Clock skew, with agents whose clock libfaketime moves: offsets in
//! `members`, a WARN past 1 s, an ERROR on both sides past the window,
//! writes refused by the skewed agent, and recovery once its clock is
//! fixed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;
use std::path::Path;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// libfaketime is there; CI installs it and must not skip.
fn faketime() -> bool {
    mob_integration::requirement::met(
        Path::new(LIBFAKETIME).exists(),
        "MOB_REQUIRE_FAKETIME",
        &format!("{LIBFAKETIME} is missing (apt-get install faketime)"),
    )
}

/// An agent joining `seed` whose wall clock is moved by `offset`
/// (libfaketime's syntax, "+2h"); its monotonic clock stays real.
fn skewed(name: &str, dir: &Path, key: &Path, seed: SocketAddr, offset: &str) -> AgentSpec {
    let mut spec = AgentSpec::local(name, dir, key);
    spec.join.push(seed);
    spec.env = vec![
        ("LD_PRELOAD".into(), LIBFAKETIME.into()),
        ("FAKETIME".into(), offset.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ];
    spec
}

fn offset_of(agent: &Agent, name: &str) -> Option<i64> {
    let members: Vec<Value> =
        serde_json::from_str(&agent.cli(&["members", "--json"]).ok()?).ok()?;
    members
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["clock_offset_ms"].as_i64())
}

/// Unix ms of a log line's timestamp.
fn at_ms(line: &Value) -> u128 {
    let text = line["timestamp"].as_str().unwrap();
    humantime::parse_rfc3339(text)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn skewed_clocks_are_seen_warned_of_and_refused_and_recover() {
    if !faketime() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 3).unwrap();
    let key = dir.path().join("cluster.key");
    let seed = agents[0].addr;

    // 3 s ahead: a member, with a warning and its offset shown.
    let started = std::time::SystemTime::now();
    let ahead = Agent::start(skewed("ahead", dir.path(), &key, seed, "+3s")).unwrap();
    wait_until(
        "the offset of ahead in members",
        Duration::from_secs(15),
        || Ok(offset_of(&agents[0], "ahead").is_some_and(|ms| (2_000..4_000).contains(&ms))),
    )
    .unwrap();
    let offset = offset_of(&agents[0], "n2").unwrap();
    assert!(offset.abs() < 1_000, "n2 is off by {offset} ms");
    wait_until("the warning", Duration::from_secs(15), || {
        Ok(!agents[0]
            .log_events("peer's clock is off from this one by more than 1 s")
            .is_empty())
    })
    .unwrap();
    let warned =
        at_ms(&agents[0].log_events("peer's clock is off from this one by more than 1 s")[0]);
    drop(ahead);

    // Two hours ahead: its datagrams are refused, an ERROR on both sides,
    // and its operator's writes are refused with the reason.
    let far_started = std::time::SystemTime::now();
    let mut far = Agent::start(skewed("far", dir.path(), &key, seed, "+2h")).unwrap();
    wait_until(
        "the ERROR on a healthy agent",
        Duration::from_secs(15),
        || Ok(!agents[0].log_events("datagram refused: stale").is_empty()),
    )
    .unwrap();
    let errored = at_ms(&agents[0].log_events("datagram refused: stale")[0]);
    wait_until(
        "the ERROR on the skewed agent",
        Duration::from_secs(15),
        || Ok(!far.log_events("datagram refused: stale").is_empty()),
    )
    .unwrap();
    let mut refusal = String::new();
    wait_until(
        "the skewed agent to refuse writes",
        Duration::from_secs(20),
        || {
            let out = far.cli_with_input(&["deploy", "-"], &sleeper("late", 1, &marker(41)))?;
            refusal = String::from_utf8_lossy(&out.stderr).into_owned();
            Ok(out.status.code() == Some(1) && refusal.contains("clock"))
        },
    )
    .unwrap();
    assert!(refusal.contains("ahead of its peers'"), "{refusal}");
    assert!(
        !agents[0]
            .service_names()
            .unwrap()
            .contains(&"late".to_owned())
    );

    // Clock fixed, same data dir: it joins, and its writes are taken.
    far.terminate().unwrap();
    let mut fixed = far.spec.clone();
    fixed.env.clear();
    let far = Agent::start(fixed).unwrap();
    wait_until(
        "the fixed agent to be a member",
        Duration::from_secs(20),
        || {
            Ok(agents[0]
                .members()?
                .iter()
                .any(|m| m.name == "far" && m.state == "alive"))
        },
    )
    .unwrap();
    wait_until(
        "a deploy from the fixed agent everywhere",
        Duration::from_secs(20),
        || {
            let out = far.cli_with_input(&["deploy", "-"], &sleeper("after", 0, &marker(42)))?;
            if !out.status.success() {
                return Ok(false);
            }
            Ok(agents.iter().all(|a| {
                a.service_names()
                    .unwrap_or_default()
                    .contains(&"after".to_owned())
            }))
        },
    )
    .unwrap();
    agents.push(far);
    let since =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    eprintln!(
        "clock skew: first WARN {} ms after a 3 s skew began, first ERROR {} ms after a 2 h skew began",
        warned.saturating_sub(since(started)),
        errored.saturating_sub(since(far_started))
    );
}
