//! Instance logs through the CLI, from another node, followed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;

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
