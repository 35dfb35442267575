//! Health checks on real processes: an instance is `starting` until its
//! check passes, and one whose check fails `failures` times in a row is
//! `unhealthy`, stopped and restarted by its policy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;
use std::path::Path;

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The one slot of `name`, as `services --json` shows it.
fn slot(agent: &Agent, name: &str) -> Value {
    slots(agent, name)
        .unwrap_or_default()
        .pop()
        .unwrap_or(Value::Null)
}

fn pid_of(slot: &Value) -> Option<u32> {
    slot["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// Waits for `name` to run healthy with a pid other than `not`.
fn wait_healthy(agent: &Agent, name: &str, not: Option<u32>, within: Duration) -> (u32, Instant) {
    let mut found = None;
    wait_until(&format!("{name} running"), within, || {
        let s = slot(agent, name);
        found = pid_of(&s).filter(|p| s["state"] == "running" && Some(*p) != not);
        Ok(found.is_some())
    })
    .unwrap();
    (found.unwrap(), Instant::now())
}

fn agent(dir: &Path) -> Agent {
    local_cluster(dir, 1).unwrap().pop().unwrap()
}

/// Asserts `holds` at every look for `span`: what must stay true while
/// nothing may change yet.
fn holds_for(span: Duration, mut holds: impl FnMut()) {
    let from = Instant::now();
    while from.elapsed() < span {
        holds();
    }
}

#[test]
fn a_frozen_http_server_turns_unhealthy_and_is_restarted() {
    if !have_busybox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path());
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "ok\n").unwrap();
    let port = free_port();
    let (interval_ms, failures) = (500, 2);
    let spec = format!(
        r#"{{"name": "web", "provider": "exec", "stop_timeout": "200ms",
            "params": {{"command": ["{BUSYBOX}", "httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "{root}"]}},
            "check": {{"http": "http://127.0.0.1:{port}/", "interval": "{interval_ms}ms", "timeout": "300ms", "grace": "0s", "failures": {failures}}}}}"#,
        root = root.display()
    );
    agent.deploy(&spec).unwrap();
    let (pid, _) = wait_healthy(&agent, "web", None, Duration::from_secs(10));
    assert_eq!(slot(&agent, "web")["restarts"], 0);

    // Frozen: it still holds its port, and answers nothing.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let frozen = Instant::now();
    let mut restarted = None;
    wait_until("a restarted instance", Duration::from_secs(15), || {
        let s = slot(&agent, "web");
        restarted = pid_of(&s).filter(|p| *p != pid && s["state"] == "running");
        Ok(restarted.is_some())
    })
    .unwrap();
    let took = frozen.elapsed();
    eprintln!(
        "frozen to restarted and healthy again: {} ms",
        took.as_millis()
    );
    let events = agent.log_events("instance unhealthy");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("GET")),
        "{events:?}"
    );
    // The old process is gone (killed while frozen), the new one serves.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let s = slot(&agent, "web");
    assert_eq!(s["restarts"], 1, "{s}");
    assert_eq!(s["health"], "passing", "{s}");
    // Frozen, it could not act on SIGTERM: the stop killed it.
    assert_eq!(s["last_signal"], 9, "{s}");
    // Detection (failures probes, an interval apart), the stop timeout,
    // and a second start that passes its first probe an interval later.
    let bound = Duration::from_millis(interval_ms * (failures + 1) + 200 + 1_000);
    assert!(took < bound, "took {took:?}, more than {bound:?}");
}

#[test]
fn a_command_check_holds_a_slot_starting_until_it_passes() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path());
    let flag = dir.path().join("ready");
    let m = marker(1);
    let spec = format!(
        r#"{{"name": "db", "provider": "exec", "stop_timeout": "200ms",
            "params": {{"command": ["sleep", "{m}"]}},
            "check": {{"command": ["test", "-f", "{flag}"], "interval": "200ms", "grace": "60s"}}}}"#,
        flag = flag.display()
    );
    agent.deploy(&spec).unwrap();
    wait_until("the process up", Duration::from_secs(10), || {
        Ok(processes_with_arg(&m).len() == 1)
    })
    .unwrap();
    // Up, but its check fails (in the grace period: no restart): it stays
    // starting through several probes.
    holds_for(Duration::from_secs(1), || {
        let s = slot(&agent, "db");
        assert_eq!(s["state"], "starting", "{s}");
        assert_eq!(s["health"], "pending", "{s}");
        assert_eq!(s["restarts"], 0, "{s}");
    });
    std::fs::write(&flag, "").unwrap();
    let (pid, _) = wait_healthy(&agent, "db", None, Duration::from_secs(5));
    assert_eq!(processes_with_arg(&m), vec![pid]);
    assert_eq!(slot(&agent, "db")["health"], "passing");
}

#[test]
fn a_closed_port_fails_a_tcp_check_and_the_instance_is_restarted() {
    if !have_busybox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path());
    let port = free_port().to_string();
    let m = marker(2);
    // A listener in the foreground; once it is gone the instance lives on
    // (sleeping), with its port closed.
    let spec = format!(
        r#"{{"name": "kv", "provider": "shell", "stop_timeout": "200ms",
            "params": {{"command": "{BUSYBOX} nc -ll -p {port} -e /bin/true; exec sleep {m}"}},
            "check": {{"tcp": "127.0.0.1:{port}", "interval": "300ms", "timeout": "200ms", "grace": "0s", "failures": 2}}}}"#
    );
    agent.deploy(&spec).unwrap();
    let (pid, _) = wait_healthy(&agent, "kv", None, Duration::from_secs(10));
    let listeners = processes_with_arg(&port);
    assert_eq!(listeners.len(), 1, "{listeners:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(listeners[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The instance outlives its listener...
    wait_until("the instance asleep", Duration::from_secs(5), || {
        Ok(processes_with_arg(&m).len() == 1)
    })
    .unwrap();
    // ...until its check fails: then it is restarted, listening again.
    let (again, _) = wait_healthy(&agent, "kv", Some(pid), Duration::from_secs(10));
    assert_ne!(again, pid);
    assert!(processes_with_arg(&m).is_empty(), "the old run is gone");
    assert_eq!(processes_with_arg(&port).len(), 1);
    let events = agent.log_events("instance unhealthy");
    assert!(
        events.len() == 1
            && events[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("connect to 127.0.0.1")),
        "{events:?}"
    );
}

#[test]
fn a_dependent_service_starts_only_once_its_dependency_is_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path());
    let flag = dir.path().join("db-ready");
    let (db, app) = (marker(3), marker(4));
    let specs = format!(
        r#"[{{"name": "db", "provider": "exec", "stop_timeout": "200ms",
             "params": {{"command": ["sleep", "{db}"]}},
             "check": {{"command": ["test", "-f", "{flag}"], "interval": "200ms", "grace": "60s"}}}},
            {{"name": "app", "provider": "exec", "depends_on": ["db"], "stop_timeout": "200ms",
             "params": {{"command": ["sleep", "{app}"]}}}}]"#,
        flag = flag.display()
    );
    agent.deploy(&specs).unwrap();
    wait_until("db's process up", Duration::from_secs(10), || {
        Ok(processes_with_arg(&db).len() == 1)
    })
    .unwrap();
    // db runs but has not passed its check: app waits.
    holds_for(Duration::from_secs(1), || {
        assert!(
            processes_with_arg(&app).is_empty(),
            "app started before db was healthy"
        );
        let s = slot(&agent, "app");
        assert_eq!(s["state"], "pending", "{s}");
    });
    assert!(
        slot(&agent, "app")["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting for dependency db")),
        "{}",
        slot(&agent, "app")
    );
    std::fs::write(&flag, "").unwrap();
    wait_until("app started", Duration::from_secs(10), || {
        Ok(processes_with_arg(&app).len() == 1)
    })
    .unwrap();
    assert_eq!(slot(&agent, "db")["state"], "running");
}

/// `deploy --wait` of `spec` (and extra args): exit code and stderr.
fn deploy_wait(agent: &Agent, spec: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["deploy", "-", "--wait"];
    args.extend_from_slice(extra);
    let out = agent.cli_with_input(&args, spec).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn deploy_wait_says_running_only_for_what_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path());
    // Success.
    let m = marker(5);
    let (code, err) = deploy_wait(&agent, &sleeper("fine", 1, &m), &[]);
    assert_eq!(code, Some(0), "{err}");
    // A process that exits after half a second, again and again.
    let (code, err) = deploy_wait(
        &agent,
        r#"{"name": "brief", "provider": "shell", "max_restarts": 2, "params": {"command": "sleep 0.5; exit 3"}}"#,
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("brief slot 0 failed"), "{err}");
    // A check that never passes: unhealthy, restarted, failed.
    let m = marker(6);
    let spec = format!(
        r#"{{"name": "sick", "provider": "exec", "max_restarts": 1, "stop_timeout": "200ms",
            "params": {{"command": ["sleep", "{m}"]}},
            "check": {{"command": ["false"], "interval": "200ms", "grace": "0s", "failures": 1}}}}"#
    );
    let (code, err) = deploy_wait(&agent, &spec, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("sick slot 0 failed") && err.contains("health check failed"),
        "{err}"
    );
    // A check still in its grace period at the deadline.
    let m = marker(7);
    let spec = format!(
        r#"{{"name": "slow", "provider": "exec", "stop_timeout": "200ms",
            "params": {{"command": ["sleep", "{m}"]}},
            "check": {{"command": ["false"], "interval": "200ms", "grace": "1h"}}}}"#
    );
    let started = Instant::now();
    let (code, err) = deploy_wait(&agent, &spec, &["--timeout", "2s"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("0 of 1 slots") && err.contains("2s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A port already taken: the server can't bind, and exits.
    if have_busybox() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let spec = format!(
            r#"{{"name": "clash", "provider": "exec", "max_restarts": 2,
                "params": {{"command": ["{BUSYBOX}", "httpd", "-f", "-p", "127.0.0.1:{port}"]}}}}"#
        );
        let (code, err) = deploy_wait(&agent, &spec, &[]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("clash slot 0 failed"), "{err}");
    }
}

#[test]
fn inspect_prints_the_stored_spec_ready_to_deploy_again() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path());
    let m = marker(8);
    let spec = format!(
        r#"{{"name": "kept", "provider": "exec", "replicas": 2, "env": {{"A": "b"}},
            "params": {{"command": ["sleep", "{m}"]}},
            "check": {{"tcp": "127.0.0.1:9", "interval": "3s", "grace": "1h"}}}}"#
    );
    agent.deploy(&spec).unwrap();
    let toml = agent.cli(&["inspect", "kept"]).unwrap();
    assert!(
        toml.contains("[services.check]") || toml.contains("[check]"),
        "{toml}"
    );
    assert!(toml.contains("tcp = \"127.0.0.1:9\""), "{toml}");
    // What it prints deploys as the same spec: nothing is written.
    let out = agent.cli_with_input(&["deploy", "-"], &toml).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "unchanged kept version 1"
    );
    let json = agent.cli(&["inspect", "kept", "--json"]).unwrap();
    let out = agent.cli_with_input(&["deploy", "-"], &json).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "unchanged kept version 1"
    );
    let out = agent.cli_with_input(&["inspect", "ghost"], "").unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"ghost\""));
}
