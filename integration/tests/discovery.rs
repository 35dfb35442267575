//! Ports and discovery on real agents: replicas on one host get ports of
//! their own from the range, their `${MOB_ADDR_HTTP}` is where they
//! listen, `resolve` lists them, and a fixed port that is taken fails the
//! slot with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::io::{Read, Write};

use common::*;

/// The body of `GET /` at `addr`.
fn get(addr: &str) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn replicas_on_one_host_get_their_own_ports_and_resolve_lists_them() {
    if !have_busybox() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = local_cluster(dir.path(), 1).unwrap().pop().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "served by mob\n").unwrap();
    // The port is the owner's pick; the instance learns it from ${...}.
    let spec = format!(
        r#"{{"name": "web", "provider": "exec", "replicas": 3, "stop_timeout": "200ms",
            "ports": {{"http": 0}},
            "params": {{"command": ["{BUSYBOX}", "httpd", "-f", "-p", "${{MOB_ADDR_HTTP}}", "-h", "{root}"]}},
            "check": {{"http": "http://${{MOB_ADDR_HTTP}}/", "interval": "200ms", "timeout": "500ms", "grace": "0s"}}}}"#,
        root = root.display()
    );
    agent.deploy(&spec).unwrap();
    let mut slots_now = Vec::new();
    wait_until("3 web instances running", Duration::from_secs(20), || {
        slots_now = slots(&agent, "web")?;
        Ok(slots_now.len() == 3 && slots_now.iter().all(|s| s["state"] == "running"))
    })
    .unwrap();
    let ports: BTreeSet<u64> = slots_now
        .iter()
        .map(|s| s["ports"]["http"].as_u64().unwrap())
        .collect();
    assert_eq!(ports.len(), 3, "{slots_now:?}");
    assert!(
        ports.iter().all(|p| (20_000..=32_767).contains(p)),
        "{ports:?}"
    );
    for s in &slots_now {
        assert_eq!(s["addr"], "127.0.0.1", "{s}");
        let addr = format!("127.0.0.1:{}", s["ports"]["http"]);
        let answer = get(&addr).unwrap();
        assert!(answer.contains("served by mob"), "{addr}: {answer}");
    }

    // resolve: every instance, by its own port.
    let out = agent.cli(&["resolve", "web"]).unwrap();
    let resolved: BTreeSet<String> = out.lines().map(str::to_owned).collect();
    let expected: BTreeSet<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    assert_eq!(resolved, expected);
    let json: Vec<Value> =
        serde_json::from_str(&agent.cli(&["resolve", "web", "--json"]).unwrap()).unwrap();
    assert_eq!(json.len(), 3);
    assert!(
        json.iter()
            .all(|e| e["node"] == "n1" && e["ip"] == "127.0.0.1")
    );
    let wrong = agent
        .cli(&["resolve", "web", "--port", "admin"])
        .unwrap_err();
    assert!(wrong.to_string().contains("no port \"admin\""), "{wrong}");

    // A restart by policy keeps the slot's port.
    let first = &slots_now[0];
    let pid = first["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("slot 0 running again", Duration::from_secs(20), || {
        let s = &slots(&agent, "web")?[0];
        Ok(s["state"] == "running" && s["pid"].as_u64() != Some(pid))
    })
    .unwrap();
    assert_eq!(
        slots(&agent, "web").unwrap()[0]["ports"]["http"],
        first["ports"]["http"]
    );
}

#[test]
fn a_fixed_port_in_use_fails_the_slot_and_status_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let agent = local_cluster(dir.path(), 1).unwrap().pop().unwrap();
    let squatter = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let marker = marker(1);
    agent
        .deploy(&format!(
            r#"{{"name": "fixed", "provider": "exec", "ports": {{"admin": {port}}},
                "params": {{"command": ["sleep", "{marker}"]}}}}"#
        ))
        .unwrap();
    let mut status = Value::Null;
    wait_until("the slot to fail", Duration::from_secs(20), || {
        status = serde_json::from_str(&agent.cli(&["status", "fixed", "--json"])?)?;
        Ok(status["slots"][0]["state"] == "failed")
    })
    .unwrap();
    let reason = status["slots"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("port admin ({port}) is in use")),
        "{status}"
    );
    assert!(processes_with_arg(&marker).is_empty());
    drop(squatter);
}
