//! README's "Try it" commands, run as written in the cluster that
//! `scripts/local-cluster.sh` starts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mob_integration::{binary, wait_until};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `sh` blocks of README's "Try it" section, one command per line,
/// comments dropped.
fn try_it_blocks() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("### Try it")
        .nth(1)
        .expect("README has a Try it section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let block = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .map(|l| l.split("  #").next().unwrap_or_default().trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        blocks.push(block);
    }
    blocks
}

/// The script, stopped (SIGTERM: it stops its agents) when dropped.
struct Cluster {
    script: Child,
    out: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.script.id().to_string()])
            .status();
        let _ = self.script.wait();
        if std::thread::panicking() {
            eprintln!(
                "local-cluster.sh said:\n{}",
                std::fs::read_to_string(&self.out).unwrap_or_default()
            );
        }
    }
}

fn run(line: &str, socket: &str) -> String {
    let bin_dir = binary().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-c", line])
        .current_dir(repo())
        .env("MOB_AGENT", socket)
        .env("PATH", path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "`{line}` failed: {text}");
    text
}

fn members(socket: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&run("mob-agent members --json", socket)).unwrap_or_default()
}

#[test]
fn the_try_it_commands_run_as_written_in_the_local_cluster() {
    let blocks = try_it_blocks();
    assert!(!blocks.is_empty() && blocks[0].len() >= 5, "{blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    // Below the ephemeral range, away from other tests' (port 0) agents.
    let base = 10_000 + (std::process::id() % 2_000) * 10;
    let out = dir.path().join("local-cluster.out");
    let log = std::fs::File::create(&out).unwrap();
    let script = Command::new("bash")
        .arg(repo().join("scripts/local-cluster.sh"))
        .env("MOB_AGENT_BIN", binary())
        .env("MOB_BASE_PORT", base.to_string())
        .env("MOB_DNS_BASE_PORT", (base + 3).to_string())
        .env("MOB_HTTP_BASE_PORT", (base + 6).to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let cluster = Cluster { script, out };
    let printed = || std::fs::read_to_string(&cluster.out).unwrap_or_default();
    wait_until(
        "the local cluster to be up",
        Duration::from_secs(60),
        || Ok(printed().contains("Ctrl-C stops them all.")),
    )
    .unwrap();
    let text = printed();
    let socket = text
        .split("export MOB_AGENT=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the script prints an export line")
        .to_owned();

    for line in &blocks[0] {
        if let Some(rest) = line.strip_prefix("kill -9 ") {
            assert!(rest.contains("node3"), "{line}");
            // (`[-]`: the pattern doesn't match the shell that runs pgrep.)
            let pattern = format!("[-]-name node3 --bind 127.0.0.1:{}", base + 2);
            let pid = run(&format!("pgrep -f -- '{pattern}'"), &socket);
            run(&format!("kill -9 {}", pid.trim()), &socket);
            wait_until("node3 to be down", Duration::from_secs(15), || {
                Ok(members(&socket)
                    .iter()
                    .any(|m| m["name"] == "node3" && m["state"] == "down"))
            })
            .unwrap();
            continue;
        }
        if line.starts_with("mob-agent logs clock") {
            // (An operator types slower than this loop: let it start.)
            wait_until("clock to run", Duration::from_secs(15), || {
                let status: serde_json::Value =
                    serde_json::from_str(&run("mob-agent status clock --json", &socket))?;
                Ok(status["slots"][0]["state"] == "running")
            })
            .unwrap();
        }
        let said = run(line, &socket);
        eprintln!("$ {line}\n{said}");
        if line.starts_with("mob-agent force-leave") {
            assert!(!members(&socket).iter().any(|m| m["name"] == "node3"));
        }
    }

    let docker = Command::new("docker")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if mob_integration::requirement::met(docker, "MOB_REQUIRE_DOCKER", "docker is unavailable") {
        for line in blocks.get(1).expect("README has a docker block") {
            run(line, &socket);
        }
        wait_until("the docker service to run", Duration::from_secs(30), || {
            let services: Vec<serde_json::Value> =
                serde_json::from_str(&run("mob-agent services --json", &socket))?;
            Ok(services.iter().any(|s| {
                s["name"] == "www"
                    && s["slots"]
                        .as_array()
                        .is_some_and(|slots| slots.iter().all(|k| k["state"] == "running"))
            }))
        })
        .unwrap();
        run("mob-agent remove www", &socket);
    }
}
