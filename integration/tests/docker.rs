//! A Docker service through the CLI, on the locally built test image.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;

/// Whether the engine is there and the test image built (with
/// `MOB_REQUIRE_DOCKER` set, it must be).
fn have_docker() -> bool {
    let available = std::process::Command::new("docker")
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
    mob_integration::requirement::met(available, "MOB_REQUIRE_DOCKER", "docker is unavailable")
}

/// Names of the containers `docker ps` lists (`-a`: stopped ones too).
fn containers(all: bool) -> Vec<String> {
    let mut args = vec!["ps", "--format", "{{.Names}}"];
    if all {
        args.push("-a");
    }
    std::process::Command::new("docker")
        .args(args)
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The container of slot 0 of `service`: `mob-<service>-0-<agent hash>`.
fn slot_container(service: &str, all: bool) -> Option<String> {
    let prefix = format!("mob-{service}-0-");
    containers(all).into_iter().find(|c| {
        c.strip_prefix(&prefix)
            .is_some_and(|h| h.len() == 8 && h.chars().all(|c| c.is_ascii_hexdigit()))
    })
}

#[test]
fn a_docker_service_runs_logs_and_goes_through_the_cli() {
    if !have_docker() {
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
    let container = slot_container(&name, true).expect("its container");
    agents[1].cli(&["remove", &name]).unwrap();
    wait_until(
        "the container to be removed",
        Duration::from_secs(30),
        || Ok(!containers(true).contains(&container)),
    )
    .unwrap();
}

#[test]
fn a_docker_command_check_runs_inside_the_container() {
    if !have_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 1).unwrap();
    let name = format!("dkc{}", std::process::id());
    // The file exists only inside the container: a check run on the host
    // would never pass.
    let spec = format!(
        r#"{{"name": "{name}", "provider": "docker", "stop_timeout": "1s",
            "params": {{"image": "mob-test/busybox", "args": ["sleep", "1000"]}},
            "check": {{"command": ["test", "-f", "/ready"], "interval": "300ms", "grace": "60s"}}}}"#
    );
    agents[0].deploy(&spec).unwrap();
    let mut container = None;
    wait_until("the container up", Duration::from_secs(30), || {
        container = slot_container(&name, false);
        Ok(container.is_some())
    })
    .unwrap();
    let container = container.unwrap();
    let state = |agents: &[Agent]| {
        slots(&agents[0], &name)
            .ok()
            .and_then(|s| s.first().map(|s| s["state"].clone()))
    };
    wait_until("the slot starting", Duration::from_secs(10), || {
        Ok(state(&agents) == Some(Value::from("starting")))
    })
    .unwrap();
    let touched = std::process::Command::new("docker")
        .args(["exec", &container, "touch", "/ready"])
        .status()
        .unwrap();
    assert!(touched.success());
    wait_until("the check to pass", Duration::from_secs(10), || {
        Ok(state(&agents) == Some(Value::from("running")))
    })
    .unwrap();
    assert!(!std::path::Path::new("/ready").exists());
    agents[0].cli(&["remove", &name]).unwrap();
}

#[test]
fn two_docker_replicas_on_one_host_publish_their_own_ports() {
    if !have_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 1).unwrap();
    let name = format!("dkp{}", std::process::id());
    // Both listen on 8080 in their containers; each gets its own host port.
    let spec = format!(
        r#"{{"name": "{name}", "provider": "docker", "replicas": 2, "stop_timeout": "1s",
            "ports": {{"http": {{"to": 8080}}}},
            "params": {{"image": "mob-test/busybox",
                        "args": ["sh", "-c", "mkdir -p /www && echo slot-${{MOB_SLOT}} > /www/index.html && exec httpd -f -p 8080 -h /www"]}}}}"#
    );
    agents[0].deploy(&spec).unwrap();
    let mut answers = BTreeSet::new();
    wait_until(
        "both containers to answer on their host ports",
        Duration::from_secs(60),
        || {
            answers.clear();
            for slot in slots(&agents[0], &name)? {
                let Some(port) = slot["ports"]["http"].as_u64() else {
                    return Ok(false);
                };
                let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port as u16))
                else {
                    return Ok(false);
                };
                use std::io::{Read, Write};
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if let Some(line) = answer.lines().find(|l| l.starts_with("slot-")) {
                    answers.insert(line.to_owned());
                }
            }
            Ok(answers.len() == 2)
        },
    )
    .unwrap();
    assert_eq!(
        answers,
        BTreeSet::from(["slot-0".to_owned(), "slot-1".to_owned()])
    );
    agents[0].cli(&["remove", &name]).unwrap();
}

#[test]
fn two_clusters_on_one_engine_keep_their_own_containers() {
    if !have_docker() {
        return;
    }
    // Two separate one-agent clusters, one service name.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = local_cluster(a.path(), 1).unwrap();
    let second = local_cluster(b.path(), 1).unwrap();
    let name = format!("dkt{}", std::process::id());
    let spec = format!(
        r#"{{"name": "{name}", "provider": "docker", "stop_timeout": "1s",
            "params": {{"image": "mob-test/busybox", "args": ["sleep", "1000"]}}}}"#
    );
    first[0].deploy(&spec).unwrap();
    let running = |agent: &Agent| -> anyhow::Result<Option<u64>> {
        Ok(slots(agent, &name)?
            .first()
            .filter(|s| s["state"] == "running")
            .and_then(|s| s["pid"].as_u64()))
    };
    let mut pid = None;
    wait_until(
        "the first cluster's container",
        Duration::from_secs(30),
        || {
            pid = running(&first[0])?;
            Ok(pid.is_some())
        },
    )
    .unwrap();
    second[0].deploy(&spec).unwrap();
    wait_until(
        "the second cluster's container",
        Duration::from_secs(30),
        || Ok(running(&second[0])?.is_some()),
    )
    .unwrap();
    // The second start removed nothing of the first's.
    let prefix = format!("mob-{name}-0-");
    let ours: Vec<String> = containers(false)
        .into_iter()
        .filter(|c| c.starts_with(&prefix))
        .collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert_eq!(running(&first[0]).unwrap(), pid);
    for agents in [&first, &second] {
        agents[0].cli(&["remove", &name]).unwrap();
    }
}

#[test]
fn deploy_wait_fails_for_an_image_that_does_not_exist() {
    if !have_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 1).unwrap();
    let name = format!("dkm{}", std::process::id());
    let spec = format!(
        r#"{{"name": "{name}", "provider": "docker", "max_restarts": 1,
            "params": {{"image": "mob-test/no-such-image", "args": ["true"]}}}}"#
    );
    let out = agents[0]
        .cli_with_input(&["deploy", "-", "--wait"], &spec)
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{name} slot 0 failed")), "{err}");
}
