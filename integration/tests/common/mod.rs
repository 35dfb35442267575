//! Helpers the behaviour-named test binaries share: spec builders, waits
//! on real processes, log-event counts. Each binary uses some of them.

#![allow(dead_code, unused_imports)]

pub(crate) use std::collections::{BTreeSet, HashSet};
pub(crate) use std::net::{SocketAddr, TcpListener, UdpSocket};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use mob_integration::{
    Agent, AgentSpec, Netns, all_see_alive, count_processes_with_args, local_cluster, new_key_file,
    processes_with_arg, wait_until,
};
pub(crate) use serde_json::Value;

/// Busybox, static (CI installs `busybox-static`): its `httpd` serves.
pub(crate) const BUSYBOX: &str = "/bin/busybox";

/// Whether busybox is there (CI installs it: there it must be).
pub(crate) fn have_busybox() -> bool {
    mob_integration::requirement::met(
        std::path::Path::new(BUSYBOX).exists(),
        "CI",
        "/bin/busybox is missing (install busybox-static)",
    )
}

/// A `sleep` argument no other test uses: instances are found by it.
pub(crate) fn marker(k: u32) -> String {
    (1_000_000 + (std::process::id() % 50_000) * 20 + k).to_string()
}

pub(crate) fn sleeper(name: &str, replicas: u32, marker: &str) -> String {
    format!(
        r#"{{"name": "{name}", "provider": "exec", "replicas": {replicas}, "stop_timeout": "2s", "params": {{"command": ["sleep", "{marker}"]}}}}"#
    )
}

pub(crate) fn slots(agent: &Agent, name: &str) -> anyhow::Result<Vec<Value>> {
    Ok(agent
        .services()?
        .into_iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["slots"].as_array().cloned())
        .unwrap_or_default())
}

/// Waits until `name` has all `replicas` slots running, each as one real
/// process on the node the table says; returns (slot, node, pid).
pub(crate) fn wait_running(
    agents: &[Agent],
    name: &str,
    replicas: usize,
    marker: &str,
    within: Duration,
) -> Vec<(u64, String, u32)> {
    wait_running_off(agents, name, replicas, marker, within, None)
}

/// [`wait_running`], but only a placement with no slot on `avoid` counts:
/// right after a move starts, the old placement is still running and would
/// otherwise satisfy the wait.
pub(crate) fn wait_running_off(
    agents: &[Agent],
    name: &str,
    replicas: usize,
    marker: &str,
    within: Duration,
    avoid: Option<&str>,
) -> Vec<(u64, String, u32)> {
    let mut placed = Vec::new();
    wait_until(
        &format!("{name}: {replicas} slots running, one process each, none on {avoid:?}"),
        within,
        || {
            let view = slots(&agents[0], name)?;
            placed = view
                .iter()
                .filter(|s| s["state"] == "running")
                .filter_map(|s| {
                    Some((
                        s["slot"].as_u64()?,
                        s["node"].as_str()?.to_owned(),
                        s["pid"].as_u64()? as u32,
                    ))
                })
                .collect();
            let mut pids = processes_with_arg(marker);
            pids.sort_unstable();
            let mut reported: Vec<u32> = placed.iter().map(|p| p.2).collect();
            reported.sort_unstable();
            let avoided = avoid.is_none_or(|node| placed.iter().all(|p| p.1 != node));
            Ok(placed.len() == replicas && pids == reported && avoided)
        },
    )
    .unwrap();
    placed
}

/// Checks for `period` that exactly `n` processes carry `marker`.
pub(crate) fn stays_exactly(n: usize, marker: &str, period: Duration) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        let pids = processes_with_arg(marker);
        assert_eq!(
            pids.len(),
            n,
            "expected exactly {n} instances, found {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn agent_named<'a>(agents: &'a [Agent], name: &str) -> &'a Agent {
    agents.iter().find(|a| a.name() == name).unwrap()
}

pub(crate) fn wait_until_value(agent: &Agent, name: &str) -> Value {
    let mut out = Value::Null;
    wait_until("status", Duration::from_secs(5), || {
        out = serde_json::from_str(&agent.cli(&["status", name, "--json"])?)?;
        Ok(true)
    })
    .unwrap();
    out
}

pub(crate) fn names(agents: &[Agent]) -> Vec<String> {
    agents.iter().map(|a| a.name().to_owned()).collect()
}

/// Log events of `agent` with this message about node `about`.
pub(crate) fn events_about(agent: &Agent, message: &str, about: &str) -> usize {
    agent
        .log_events(message)
        .iter()
        .filter(|e| e["node"] == about)
        .count()
}

pub(crate) fn free_port() -> SocketAddr {
    // Free for both UDP and TCP at the time of the call.
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// `run` arguments for a config with garbage collected after 2 s.
pub(crate) fn fast_gc(dir: &std::path::Path) -> Vec<String> {
    let config = dir.join("gc.toml");
    std::fs::write(
        &config,
        "[table]\nanti_entropy_period = \"200ms\"\ngc_after = \"2s\"\n",
    )
    .unwrap();
    vec!["--config".to_owned(), config.display().to_string()]
}
