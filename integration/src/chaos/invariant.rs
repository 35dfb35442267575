//! The promises, checked on the real cluster after a heal: counted from
//! the agents' answers and from the machine's processes, never from one
//! agent's table alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::Cluster;
use super::workload::{Expected, Shown, Workload};
use crate::count_processes_with_args;

/// The first promise that does not hold, in words; `None` when all do.
pub fn violated(cluster: &Cluster, workload: &Workload) -> anyhow::Result<Option<String>> {
    if let Some(v) = settled(cluster, workload)? {
        return Ok(Some(v));
    }
    running(cluster, workload)
}

/// The promises that, once they hold, keep holding while nothing fails:
/// members and tables agree, and show every acknowledged write.
pub fn settled(cluster: &Cluster, workload: &Workload) -> anyhow::Result<Option<String>> {
    let names: BTreeSet<String> = cluster.agents.iter().map(|a| a.name().to_owned()).collect();
    // Every agent's member list agrees: every host, alive.
    for agent in &cluster.agents {
        let members = agent.members()?;
        let alive: BTreeSet<String> = members
            .iter()
            .filter(|m| m.state == "alive")
            .map(|m| m.name.clone())
            .collect();
        if alive != names || members.len() != names.len() {
            let listed: Vec<String> = members
                .iter()
                .map(|m| format!("{} {}", m.name, m.state))
                .collect();
            return Ok(Some(format!(
                "members: {} lists {listed:?}, not every host alive",
                agent.name()
            )));
        }
    }
    // Every agent shows the same services, and the last acknowledged
    // write of each.
    let views = views(cluster)?;
    let (first, _, first_shown) = &views[0];
    for (name, _, shown) in &views[1..] {
        if shown != first_shown {
            return Ok(Some(format!(
                "tables: {name} shows {shown:?}, {first} shows {first_shown:?}"
            )));
        }
    }
    for (name, service) in &workload.services {
        let shown = first_shown.get(name);
        let lost = match (&service.expected, shown) {
            (Expected::Unknown, _) => false,
            (Expected::Removed, None) => false,
            (Expected::Removed, Some(_)) => true,
            (Expected::Spec(want), Some(Some(got))) => want != got,
            (Expected::Spec(_), _) => true,
        };
        if lost {
            return Ok(Some(format!(
                "acknowledged write lost: {name} should be {:?}, every agent shows {shown:?}",
                service.expected
            )));
        }
    }
    Ok(None)
}

/// Every slot of every live service runs exactly once, on the stored
/// generation, and nothing else runs (counted from the processes);
/// `resolve` and DNS answer where they run.
fn running(cluster: &Cluster, workload: &Workload) -> anyhow::Result<Option<String>> {
    let views = views(cluster)?;
    let (first, first_services, first_shown) = &views[0];
    let markers: Vec<String> = workload
        .services
        .values()
        .map(|s| s.marker.clone())
        .collect();
    let all_pids = crate::pids_with_args(&markers);
    for ((name, _), pids) in workload.services.iter().zip(all_pids) {
        let count = pids.len();
        let want = match first_shown.get(name) {
            Some(Some(shown)) if !shown.stopped => shown.replicas as usize,
            Some(None) => {
                return Ok(Some(format!("{name}: a record the harness can't read")));
            }
            _ => 0,
        };
        if count != want {
            return Ok(Some(format!(
                "{name}: {count} processes run, {want} slots want one each"
            )));
        }
        if !matches!(first_shown.get(name), Some(Some(_))) {
            continue;
        }
        let stored = super::workload::generation(&cluster.agents[0], name)?.to_string();
        let pids: BTreeSet<u32> = pids.into_iter().collect();
        for &pid in &pids {
            let generation = environ_of(pid, "GEN");
            if generation.as_deref() != Some(stored.as_str()) {
                return Ok(Some(format!(
                    "{name}: pid {pid} runs generation {generation:?}, the spec is at {stored}"
                )));
            }
        }
        // Each slot reports a running instance whose pid is a real one.
        let view = first_services.iter().find(|s| s["name"] == name.as_str());
        let slots = view
            .and_then(|v| v["slots"].as_array())
            .cloned()
            .unwrap_or_default();
        let reported: BTreeSet<u32> = slots
            .iter()
            .filter(|s| s["state"] == "running")
            .filter_map(|s| s["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect();
        if reported != pids {
            return Ok(Some(format!(
                "{name}: {first} shows running pids {reported:?}, the processes are {pids:?}"
            )));
        }
    }
    // Discovery agrees with where instances run.
    for (name, services, _) in &views {
        for service in services {
            let Some(service_name) = service["name"].as_str() else {
                continue;
            };
            let Some(agent) = cluster.agents.iter().find(|a| a.name() == name) else {
                continue;
            };
            // (An error, for a service with nothing running, answers nothing.)
            let resolved: Value = agent
                .cli(&["resolve", service_name, "--json"])
                .ok()
                .and_then(|out| serde_json::from_str(&out).ok())
                .unwrap_or(Value::Null);
            let running: BTreeSet<(u64, String)> = service["slots"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["state"] == "running")
                .filter_map(|s| Some((s["slot"].as_u64()?, s["addr"].as_str()?.to_owned())))
                .collect();
            let answered: BTreeSet<(u64, String)> = resolved
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| Some((r["slot"].as_u64()?, r["ip"].as_str()?.to_owned())))
                .collect();
            if running != answered {
                return Ok(Some(format!(
                    "resolve {service_name} on {name} answers {answered:?}, instances run at {running:?}"
                )));
            }
            // And DNS: the A records are the addresses resolve gives.
            if let (Some(ns), Some(server)) = (&agent.spec.netns, agent.dns) {
                let records = dns_a(ns, server, &format!("{service_name}.service.mob."))?;
                let ips: BTreeSet<String> = answered.into_iter().map(|(_, ip)| ip).collect();
                if records != ips {
                    return Ok(Some(format!(
                        "DNS on {name} answers {service_name} with {records:?}, resolve with {ips:?}"
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// The A records `server`, an agent's DNS inside the namespace `ns`,
/// answers for `name` (none for NXDOMAIN).
fn dns_a(ns: &str, server: SocketAddr, name: &str) -> anyhow::Result<BTreeSet<String>> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut query = Message::new();
    query
        .set_id(0x4d4f)
        .add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    let bytes = query.to_vec()?;
    let ns = ns.to_owned();
    // (The agent's DNS listens on the namespace's loopback: one thread
    // enters the namespace to ask.)
    let answer = std::thread::spawn(move || -> anyhow::Result<Vec<u8>> {
        crate::netns::enter(&ns)?;
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.send_to(&bytes, server)?;
        let mut buf = vec![0u8; 4096];
        let n = socket.recv(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the DNS query's thread panicked"))??;
    Ok(Message::from_vec(&answer)?
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect())
}

/// One agent's `services --json`, with each record as [`Shown`].
type View = (String, Vec<Value>, BTreeMap<String, Option<Shown>>);

/// Every agent's view of the services.
fn views(cluster: &Cluster) -> anyhow::Result<Vec<View>> {
    cluster
        .agents
        .iter()
        .map(|agent| {
            let services = agent.services()?;
            let shown = services
                .iter()
                .filter_map(|s| Some((s["name"].as_str()?.to_owned(), Shown::of(s))))
                .collect();
            Ok((agent.name().to_owned(), services, shown))
        })
        .collect()
}

/// The value of `name` in a process's environment.
fn environ_of(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|entry| {
        let text = std::str::from_utf8(entry).ok()?;
        let (k, v) = text.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

/// Samples, every 50 ms for as long as it runs, that no at-most-once
/// service has two instances, faults or not.
pub struct OnceSampler {
    /// Markers of the at-most-once services, added as they are deployed.
    pub markers: Arc<Mutex<Vec<(String, String)>>>,
    /// Every sample that saw two, in words.
    pub seen_twice: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl OnceSampler {
    /// Starts sampling.
    pub fn start() -> Self {
        let markers: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let seen_twice: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let thread = {
            let (markers, seen_twice, stop) = (markers.clone(), seen_twice.clone(), stop.clone());
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let mut samples = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let watched = markers.lock().map(|m| m.clone()).unwrap_or_default();
                    if !watched.is_empty() {
                        let args: Vec<String> = watched.iter().map(|(_, m)| m.clone()).collect();
                        for ((name, _), n) in watched.iter().zip(count_processes_with_args(&args)) {
                            if n > 1
                                && let Ok(mut seen) = seen_twice.lock()
                            {
                                seen.push(format!(
                                    "{name}: {n} instances at {:.2} s",
                                    started.elapsed().as_secs_f64()
                                ));
                            }
                        }
                        samples += 1;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                samples
            })
        };
        Self {
            markers,
            seen_twice,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns how many samples it took.
    pub fn stop(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for OnceSampler {
    fn drop(&mut self) {
        self.stop();
    }
}
