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

/// `api`: 3 `sleep` replicas, each with a port `http` picked for it.
fn api(marker: &str) -> String {
    format!(
        r#"{{"name": "api", "provider": "exec", "replicas": 3, "ports": {{"http": 0}},
            "params": {{"command": ["sleep", "{marker}"]}}}}"#
    )
}

/// Whether `dig` is there (CI installs dnsutils: there it must be).
fn have_dig() -> bool {
    let found = std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    mob_integration::requirement::met(found, "CI", "dig is missing (install dnsutils)")
}

/// What `dig` got from `agent`'s DNS: the status and the answer lines.
fn dig(agent: &Agent, args: &[&str]) -> (String, Vec<String>) {
    let dns = agent.dns.expect("the agent serves DNS");
    // (An agent in a network namespace answers there.)
    let mut command = match &agent.spec.netns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns, "dig"]);
            c
        }
        None => std::process::Command::new("dig"),
    };
    let out = command
        .arg(format!("@{}", dns.ip()))
        .args([
            "-p",
            &dns.port().to_string(),
            "+noall",
            "+comments",
            "+answer",
            "+tries=1",
            "+time=2",
        ])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_owned();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (status, answers)
}

#[test]
fn dns_answers_a_srv_and_node_records_from_the_table_and_refuses_other_zones() {
    if !have_dig() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let marker = marker(2);
    agents[0].deploy(&api(&marker)).unwrap();
    let mut slots_now = Vec::new();
    wait_until("3 api instances running", Duration::from_secs(20), || {
        slots_now = slots(&agents[2], "api")?;
        Ok(slots_now.len() == 3 && slots_now.iter().all(|s| s["state"] == "running"))
    })
    .unwrap();
    let ports: BTreeSet<String> = slots_now
        .iter()
        .map(|s| s["ports"]["http"].to_string())
        .collect();

    // SRV: every instance's port, each on its node; by UDP and by TCP.
    for tcp in [false, true] {
        let mut args = vec!["SRV", "_http._tcp.api.service.mob"];
        if tcp {
            args.push("+tcp");
        }
        let (status, answers) = dig(&agents[1], &args);
        assert_eq!(status, "NOERROR", "{answers:?}");
        let got: BTreeSet<String> = answers
            .iter()
            .filter_map(|l| l.split(' ').nth(6).map(str::to_owned))
            .collect();
        assert_eq!(got, ports, "{answers:?}");
        let targets: BTreeSet<String> = answers
            .iter()
            .filter_map(|l| l.split(' ').nth(7).map(str::to_owned))
            .collect();
        assert_eq!(
            targets,
            ["n1.node.mob.", "n2.node.mob.", "n3.node.mob."]
                .map(str::to_owned)
                .into()
        );
    }
    // A: one per node with an instance (all on loopback here: one IP).
    let (status, answers) = dig(&agents[1], &["A", "api.service.mob"]);
    assert_eq!(status, "NOERROR");
    assert_eq!(answers, ["api.service.mob. 0 IN A 127.0.0.1"]);
    let (_, answers) = dig(&agents[1], &["A", "n2.node.mob"]);
    assert_eq!(answers, ["n2.node.mob. 0 IN A 127.0.0.1"]);
    let slot = slots_now[1]["node"].as_str().unwrap().to_owned();
    let (status, answers) = dig(&agents[0], &["A", "1.api.service.mob"]);
    assert_eq!(
        (status.as_str(), answers.len()),
        ("NOERROR", 1),
        "slot 1 on {slot}"
    );
    // Unknown names, another zone, a port the service lacks.
    assert_eq!(dig(&agents[0], &["A", "nope.service.mob"]).0, "NXDOMAIN");
    assert_eq!(
        dig(&agents[0], &["SRV", "_grpc._tcp.api.service.mob"]).0,
        "NXDOMAIN"
    );
    assert_eq!(dig(&agents[0], &["A", "example.com"]).0, "REFUSED");

    // Garbage on the DNS port is dropped and counted; the agent answers on.
    let dns = agents[0].dns.unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let before = agents[0].stats().unwrap()["dns_malformed"]
        .as_u64()
        .unwrap();
    for size in [0usize, 1, 5, 12, 40, 512, 4000] {
        let junk: Vec<u8> = (0..size).map(|i| (i * 37 + size) as u8).collect();
        socket.send_to(&junk, dns).unwrap();
    }
    // A truncated query: the header of a real one.
    socket
        .send_to(&[0x12, 0x34, 0x01, 0x00, 0x00, 0x01], dns)
        .unwrap();
    wait_until("the garbage counted", Duration::from_secs(5), || {
        Ok(agents[0].stats()?["dns_malformed"].as_u64().unwrap_or(0) >= before + 6)
    })
    .unwrap();
    assert_eq!(dig(&agents[0], &["A", "api.service.mob"]).0, "NOERROR");
}

#[test]
fn dns_follows_a_failover_within_detection_and_a_second() {
    if !have_dig() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut agents = local_cluster(dir.path(), 3).unwrap();
    let marker = marker(3);
    agents[0]
        .deploy(&format!(
            r#"{{"name": "one", "provider": "exec", "ports": {{"http": 0}},
                "params": {{"command": ["sleep", "{marker}"]}}}}"#
        ))
        .unwrap();
    let target = |agent: &Agent| -> Option<String> {
        dig(agent, &["SRV", "_http._tcp.one.service.mob"])
            .1
            .first()
            .and_then(|l| l.split(' ').nth(7).map(str::to_owned))
    };
    let mut owner = None;
    wait_until("one to be in DNS", Duration::from_secs(20), || {
        owner = target(&agents[0]);
        Ok(owner.is_some())
    })
    .unwrap();
    let owner = owner.unwrap();
    let victim = agents
        .iter()
        .position(|a| owner == format!("{}.node.mob.", a.spec.name))
        .unwrap();
    let survivor = (victim + 1) % 3;
    let victim_name = agents[victim].spec.name.clone();
    agents[victim].kill9().unwrap();
    let killed = Instant::now();
    let mut down_at = None;
    wait_until("DNS to name the new owner", Duration::from_secs(20), || {
        if down_at.is_none()
            && agents[survivor]
                .state_of(&victim_name)?
                .is_none_or(|m| m.state != "alive" && m.state != "suspect")
        {
            down_at = Some(killed.elapsed());
        }
        Ok(target(&agents[survivor]).is_some_and(|t| t != owner))
    })
    .unwrap();
    let took = killed.elapsed();
    let detected = down_at.unwrap_or(took);
    eprintln!(
        "kill -9 of the owner: down after {} ms, DNS names the new owner after {} ms",
        detected.as_millis(),
        took.as_millis()
    );
    // Failure detection, then at most a second more.
    assert!(
        took <= detected + Duration::from_secs(1),
        "down after {detected:?}, DNS moved after {took:?}"
    );
}

#[test]
fn hosts_with_their_own_ips_give_distinct_addresses() {
    if !have_dig() || !Netns::usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let net = Netns::up("d", 3).unwrap();
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();
    let agents = net.start_agents(dir.path(), &key).unwrap();
    wait_until("the cluster", Duration::from_secs(20), || {
        all_see_alive(&agents, &["h1", "h2", "h3"])
    })
    .unwrap();
    let marker = marker(4);
    agents[0].deploy(&api(&marker)).unwrap();
    let ips: BTreeSet<String> = (1..=3).map(|i| net.ip(i).to_string()).collect();
    let mut answers = Vec::new();
    wait_until(
        "A records of all three hosts",
        Duration::from_secs(30),
        || {
            answers = dig(&agents[2], &["A", "api.service.mob"]).1;
            let got: BTreeSet<String> = answers
                .iter()
                .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
                .collect();
            Ok(got == ips)
        },
    )
    .unwrap();
    let (_, node) = dig(&agents[2], &["A", "h1.node.mob"]);
    assert_eq!(node, [format!("h1.node.mob. 0 IN A {}", net.ip(1))]);
    // resolve agrees, with each instance's own port.
    let resolved: BTreeSet<String> = agents[1]
        .cli(&["resolve", "api"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split(':').next().map(str::to_owned))
        .collect();
    assert_eq!(resolved, ips);
}
