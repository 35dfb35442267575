//! The `mob-agent` command line as an operator meets it: exit codes and
//! messages for bad input, keygen, talking to an absent agent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::process::Command;

use mob_integration::binary;

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(binary());
    c.args(args).env_remove("MOB_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn keygen_prints_a_usable_key() {
    let out = run(&["keygen"], &[]);
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    let key = key.trim();
    assert_eq!(key.len(), 44, "{key}");
    assert_ne!(
        key,
        String::from_utf8(run(&["keygen"], &[]).stdout)
            .unwrap()
            .trim()
    );
}

#[test]
fn malformed_key_file_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bad.key");
    std::fs::write(&key, "definitely not a key").unwrap();
    let out = run(
        &[
            "run",
            "--name",
            "x",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.key"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        "definitely not a key"
    );
}

#[test]
fn malformed_mob_key_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "run",
            "--name",
            "x",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[("MOB_KEY", "c2hvcnQ=")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MOB_KEY"));
}

#[test]
fn bad_flag_values_exit_2() {
    let out = run(&["run", "--bind", "not-an-addr"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bind"));
}

#[test]
fn members_without_an_agent_exits_1_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = run(&["members", "--agent", sock.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("none.sock") && err.contains("--agent"),
        "{err}"
    );
}

#[test]
fn first_start_generates_a_key_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    // No --key-file and no MOB_KEY.
    let mut child = Command::new(binary())
        .args([
            "run",
            "--name",
            "gen",
            "--bind",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--dns",
            "off",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--ready-file")
        .arg(dir.path().join("ready.json"))
        .env_remove("MOB_KEY")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let key_path = data.join("cluster.key");
    // The ready file is written after the start-up log lines.
    let ready = dir.path().join("ready.json");
    let found = mob_integration::wait_until(
        "the agent to be ready",
        std::time::Duration::from_secs(10),
        || {
            Ok(ready.exists()
                && std::fs::read_to_string(&key_path).is_ok_and(|k| k.trim().len() == 44))
        },
    );
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    found.unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("generated a new cluster key") && log.contains("cluster.key"),
        "{log}"
    );
    assert!(
        !log.contains(std::fs::read_to_string(&key_path).unwrap().trim()),
        "the key was logged"
    );
}

#[test]
fn a_text_log_to_a_file_is_plain_mistakes_are_warned_of_and_sighup_keeps_it_running() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // A seed, but no key: refused (a new key would keep it alone).
    let out = run(
        &[
            "run",
            "--join",
            "127.0.0.1:9",
            "--dns",
            "off",
            "--http",
            "off",
            "--data-dir",
        ]
        .iter()
        .copied()
        .chain([dir.path().join("nokey").to_str().unwrap()])
        .collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--join was given but no cluster key") && stderr.contains("--key-file"),
        "{stderr}"
    );
    assert!(!dir.path().join("nokey/cluster.key").exists());
    let key = mob_integration::new_key_file(&dir.path().join("cluster.key")).unwrap();
    // Every address bound, loopback advertised (the route to the seed).
    let mut child = Command::new(binary())
        .args([
            "run",
            "--name",
            "plain",
            "--bind",
            "0.0.0.0:0",
            "--join",
            "127.0.0.1:9",
        ])
        .args([
            "--log-format",
            "text",
            "--dns",
            "off",
            "--http",
            "off",
            "--data-dir",
        ])
        .arg(dir.path().join("d"))
        .arg("--key-file")
        .arg(&key)
        .env_remove("MOB_KEY")
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let started = mob_integration::wait_until(
        "the agent to start",
        std::time::Duration::from_secs(10),
        || Ok(text().contains("agent started")),
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let hup = started.and_then(|_| {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)?;
        mob_integration::wait_until("SIGHUP logged", std::time::Duration::from_secs(10), || {
            Ok(text().contains("SIGHUP: no --config file to reload"))
        })
    });
    // Alone 10 s with a seed: one WARN.
    let alone = mob_integration::wait_until(
        "the alone warning",
        std::time::Duration::from_secs(15),
        || Ok(text().contains("still alone: no seed answered")),
    );
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    hup.unwrap();
    alone.unwrap();
    let text = text();
    assert!(alive, "SIGHUP stopped the agent:\n{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
    assert!(text.contains("advertising loopback"), "{text}");
}

#[test]
fn completions_and_the_man_page_cover_the_verbs() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for verb in ["deploy", "resolve", "rollback", "members"] {
            assert!(text.contains(verb), "{shell} completions lack {verb}");
        }
    }
    let bad = run(&["completions", "tcsh"], &[]);
    assert_eq!(bad.status.code(), Some(2));
    let man = run(&["man"], &[]);
    assert!(man.status.success());
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(text.contains(".TH mob-agent 1"), "{text}");
    assert!(text.contains("resolve"), "{text}");
}

#[test]
fn the_local_cluster_script_fails_fast_showing_the_bind_error_when_its_port_is_taken() {
    // The first agent's port, taken on TCP and UDP.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let _udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/local-cluster.sh");
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg("--once")
        .env("MOB_AGENT_BIN", binary())
        .env("MOB_BASE_PORT", port.to_string())
        .env("MOB_DNS_BASE_PORT", free())
        .env("MOB_HTTP_BASE_PORT", free())
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        took < std::time::Duration::from_secs(5),
        "took {took:?}: {text}"
    );
    assert!(text.contains("agent node1 exited"), "{text}");
    assert!(text.contains("Address already in use"), "{text}");
}

#[test]
fn join_links_two_lone_agents_version_shows_them_and_deploy_takes_a_spec_inline() {
    use mob_integration::{Agent, AgentSpec};
    let dir = tempfile::tempdir().unwrap();
    let key = mob_integration::new_key_file(&dir.path().join("cluster.key")).unwrap();
    let agents = vec![
        Agent::start(AgentSpec::local("a", dir.path(), &key)).unwrap(),
        Agent::start(AgentSpec::local("b", dir.path(), &key)).unwrap(),
    ];
    assert_eq!(agents[0].members().unwrap().len(), 1);
    // Nobody there: an error naming the address.
    let err = agents[1]
        .cli(&["join", "127.0.0.1:9"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no agent at 127.0.0.1:9 answered"), "{err}");
    let out = agents[1]
        .cli(&["join", &agents[0].addr.to_string(), "--json"])
        .unwrap();
    let joined: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(joined["joined"], serde_json::json!(["a"]));
    mob_integration::wait_until(
        "both to see both",
        std::time::Duration::from_secs(10),
        || mob_integration::all_see_alive(&agents, &["a", "b"]),
    )
    .unwrap();

    // version: this binary's, and each member's.
    let out = agents[0].cli(&["version", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let names: Vec<&str> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["version"] == env!("CARGO_PKG_VERSION"))
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    // With no agent to ask: only its own.
    let out = run(
        &["version", "--json", "--agent", "/nonexistent/mob.sock"],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["members"].is_null(), "{v}");

    // deploy with the spec inline.
    let out = agents[0]
        .cli(&[
            "deploy",
            r#"{"name": "inline", "provider": "exec", "params": {"command": ["sleep", "3600"]}}"#,
        ])
        .unwrap();
    assert!(out.contains("inline"), "{out}");
    mob_integration::wait_until(
        "the service on b",
        std::time::Duration::from_secs(10),
        || Ok(agents[1].service_names()?.contains(&"inline".to_owned())),
    )
    .unwrap();
}
