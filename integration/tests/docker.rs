//! A Docker service through the CLI, on the locally built test image.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;

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
