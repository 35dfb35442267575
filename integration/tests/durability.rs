//! Acknowledged means on disk: an agent whose data dir fills up refuses
//! the writes it cannot save, keeps serving reads, leaves no temp file,
//! and after a kill -9 has exactly the writes it acknowledged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "mount tmpfs on {}: {status}",
            dir.display()
        );
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounting needs root; CI runs as root and must not skip.
fn root() -> bool {
    mob_integration::requirement::met(
        nix::unistd::geteuid().is_root(),
        "MOB_REQUIRE_NETNS",
        "mounting a tmpfs needs root",
    )
}

/// A service no node runs (its constraint matches none), with a large
/// environment so that the table grows fast.
fn bulky(name: &str) -> String {
    let filler = "x".repeat(1500);
    format!(
        r#"{{"name": "{name}", "provider": "exec", "constraints": {{"tags": {{"zone": "none"}}}}, "env": {{"FILLER": "{filler}"}}, "params": {{"command": ["sleep", "1"]}}}}"#
    )
}

#[test]
fn a_full_disk_refuses_writes_and_loses_none_it_acknowledged() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();
    let state = dir.path().join("state");
    let _disk = Tmpfs::mount(&state, "256k").unwrap();
    let mut spec = AgentSpec::local("full", dir.path(), &key);
    spec.state_dir = Some(state.clone());
    let mut agent = Agent::start(spec).unwrap();

    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    let started = Instant::now();
    for i in 0..400 {
        let name = format!("bulky-{i:03}");
        let out = agent
            .cli_with_input(&["deploy", "-"], &bulky(&name))
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            acknowledged.insert(name);
        } else {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains("No space left on device")
                    && stderr.contains("nothing was written"),
                "the error names the OS error: {stderr}"
            );
            refused += 1;
            if refused >= 20 {
                break;
            }
        }
    }
    eprintln!(
        "full disk: {} deploys acknowledged, {refused} refused, in {:?}",
        acknowledged.len(),
        started.elapsed()
    );
    assert!(!acknowledged.is_empty() && refused >= 20);

    // Reads are still served, and show exactly what was acknowledged.
    let names: BTreeSet<String> = agent.service_names().unwrap().into_iter().collect();
    assert_eq!(names, acknowledged);
    let stats = agent.stats().unwrap();
    assert!(stats["table_save_failures"].as_u64() >= Some(refused));
    let no_temp = || {
        std::fs::read_dir(&state)
            .unwrap()
            .filter_map(Result::ok)
            .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
    };
    assert!(no_temp(), "a temp file was left behind");
    // Once a minute, not once a failure.
    assert_eq!(
        agent
            .log_events("cannot save the table; operator writes are refused until a save succeeds")
            .len(),
        1
    );

    // A kill -9 and a restart on the same full disk: it starts, and holds
    // exactly the acknowledged writes.
    agent.restart().unwrap();
    let names: BTreeSet<String> = agent.service_names().unwrap().into_iter().collect();
    assert_eq!(
        names, acknowledged,
        "acknowledged writes lost, or refused ones kept"
    );
    assert!(no_temp());
}
