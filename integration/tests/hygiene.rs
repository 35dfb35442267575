//! What an instance inherits from its agent: a clean environment unless
//! the spec asks for the agent's, no file descriptor above 2; and specs
//! that would break a start are refused, naming the field.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Waits for `path` to be written whole (the instance ends with `done`).
fn written(path: &Path) -> String {
    let mut text = String::new();
    wait_until(
        &format!("{} to be written", path.display()),
        Duration::from_secs(30),
        || {
            text = std::fs::read_to_string(path).unwrap_or_default();
            Ok(text.ends_with("done\n"))
        },
    )
    .unwrap();
    text
}

/// A lone agent with a secret and a locale in its environment, and a
/// descriptor its parent left open (not close-on-exec).
fn agent(dir: &Path) -> (Agent, std::fs::File) {
    let key = new_key_file(&dir.join("cluster.key")).unwrap();
    let leaked = std::fs::File::create(dir.join("leaked")).unwrap();
    let flags = nix::fcntl::fcntl(&leaked, nix::fcntl::FcntlArg::F_GETFD).unwrap();
    let mut flags = nix::fcntl::FdFlag::from_bits_truncate(flags);
    flags.remove(nix::fcntl::FdFlag::FD_CLOEXEC);
    nix::fcntl::fcntl(&leaked, nix::fcntl::FcntlArg::F_SETFD(flags)).unwrap();
    let mut spec = AgentSpec::local("h", dir, &key);
    spec.env = vec![
        ("AGENT_SECRET".into(), "hunter2".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TZ".into(), "UTC".into()),
    ];
    (Agent::start(spec).unwrap(), leaked)
}

/// A one-replica exec service that writes its environment and its open
/// descriptors to `out`.
fn probe(name: &str, out: &Path, inherit: bool) -> String {
    let out = out.display();
    format!(
        r#"{{"name": "{name}", "provider": "exec", "restart": "never", "inherit_env": {inherit}, "env": {{"GREETING": "hi"}}, "params": {{"command": ["/bin/sh", "-c", "exec > {out}.tmp; env; ls /proc/$$/fd; echo done; mv {out}.tmp {out}"]}}}}"#
    )
}

#[test]
fn an_instance_gets_a_clean_environment_and_no_inherited_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, leaked) = agent(dir.path());
    let out = dir.path().join("clean.out");
    agent.deploy(&probe("clean", &out, false)).unwrap();
    let text = written(&out);
    let keys: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    // What the shell sets itself.
    let shell: BTreeSet<&str> = ["PWD", "SHLVL", "OLDPWD", "_"].into();
    let documented: BTreeSet<&str> = [
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "GREETING",
        "MOB_SERVICE",
        "MOB_SLOT",
        "MOB_NODE",
        "MOB_IP",
        "MOB_AGENT",
        "MOB_INSTANCE_OF",
    ]
    .into();
    let unexpected: Vec<_> = keys
        .iter()
        .filter(|k| !documented.contains(*k) && !shell.contains(*k))
        .collect();
    assert!(
        unexpected.is_empty(),
        "not documented: {unexpected:?}\n{text}"
    );
    for k in ["PATH", "LANG", "TZ", "GREETING", "MOB_SERVICE", "MOB_NODE"] {
        assert!(keys.contains(k), "{k} missing:\n{text}");
    }
    let fds: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty())
        .collect();
    assert_eq!(
        fds,
        ["0", "1", "2"].into(),
        "descriptors (the agent held {} from its parent):\n{text}",
        leaked.as_raw_fd()
    );

    // Opting back in: the agent's environment.
    let out = dir.path().join("inherit.out");
    agent.deploy(&probe("inherit", &out, true)).unwrap();
    let text = written(&out);
    assert!(text.contains("AGENT_SECRET=hunter2\n"), "{text}");
    assert!(text.contains("GREETING=hi\n"), "{text}");
}

#[test]
fn specs_that_cannot_start_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, _leaked) = agent(dir.path());
    let cases = [
        (
            r#"{"name": "a", "provider": "exec", "env": {"BAD=KEY": "x"}, "params": {"command": ["true"]}}"#,
            "env",
        ),
        (
            r#"{"name": "b", "provider": "exec", "env": {"K": "nul\u0000here"}, "params": {"command": ["true"]}}"#,
            "env.K",
        ),
        (
            r#"{"name": "c", "provider": "exec", "params": {"command": ["echo", "a\u0000b"]}}"#,
            "params.command",
        ),
        (
            r#"{"name": "d", "provider": "docker", "params": {"image": "--privileged"}}"#,
            "params.image",
        ),
    ];
    for (spec, field) in cases {
        let out = agent.cli_with_input(&["deploy", "-"], spec).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{spec}: {stderr}");
        assert!(
            stderr.contains(field),
            "{spec}: the error names {field}: {stderr}"
        );
    }
    assert!(agent.service_names().unwrap().is_empty());
}

#[test]
fn a_slot_that_cannot_start_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, _leaked) = agent(dir.path());
    agent
        .deploy(r#"{"name": "missing", "provider": "exec", "params": {"command": ["/no/such/program"]}}"#)
        .unwrap();
    wait_until("the start error in status", Duration::from_secs(30), || {
        Ok(slots(&agent, "missing")?.iter().any(|s| {
            s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("last start failed") && r.contains("/no/such/program"))
        }))
    })
    .unwrap();
}
