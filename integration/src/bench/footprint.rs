//! Footprint of idle 5-node clusters side by side: mob, Serf, and Serf
//! with `-encrypt` (mob always seals). Per agent: RSS, CPU over the
//! window, and the bytes it sends, counted the same way for every system
//! by nftables counters on the loopback (the IP packet: payload, UDP or
//! TCP and IP headers). mob's own counters (its datagrams and frames,
//! envelope included, no IP or UDP header) are shown next to them.
//!
//! Needs root and `nft`.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use super::Mode;
use super::report::Section;
use super::serf::{self, SerfAgent};
use crate::{Agent, local_cluster_on};

const TABLE: &str = "mobbench";

/// nftables counters of the packets each watched port sends and receives;
/// the table is removed on drop.
struct Counters {
    ports: Vec<u16>,
}

impl Counters {
    fn new(ports: &[u16]) -> anyhow::Result<Self> {
        let _ = nft(&format!("delete table inet {TABLE}"));
        let mut script = format!(
            "add table inet {TABLE}\n\
             add chain inet {TABLE} out {{ type filter hook output priority 0; policy accept; }}\n"
        );
        for port in ports {
            for kind in ["udp_sport", "tcp_sport", "tcp_dport"] {
                let _ = writeln!(script, "add counter inet {TABLE} {kind}_{port}");
            }
            let _ = writeln!(
                script,
                "add rule inet {TABLE} out udp sport {port} counter name udp_sport_{port}\n\
                 add rule inet {TABLE} out tcp sport {port} counter name tcp_sport_{port}\n\
                 add rule inet {TABLE} out tcp dport {port} counter name tcp_dport_{port}"
            );
        }
        let path = std::env::temp_dir().join(format!("mobbench-{}.nft", std::process::id()));
        std::fs::write(&path, script)?;
        let out = Command::new("nft").arg("-f").arg(&path).output();
        let _ = std::fs::remove_file(&path);
        let out = out.context("nft is not installed (apt-get install nftables)")?;
        if !out.status.success() {
            bail!(
                "nft: {} (the footprint part needs root)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self {
            ports: ports.to_vec(),
        })
    }

    /// Bytes by counter name.
    fn read(&self) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let text = nft(&format!("-j list counters table inet {TABLE}"))?;
        let json: serde_json::Value = serde_json::from_str(&text)?;
        let mut bytes = std::collections::BTreeMap::new();
        for item in json["nftables"].as_array().into_iter().flatten() {
            let counter = &item["counter"];
            if let (Some(name), Some(b)) = (counter["name"].as_str(), counter["bytes"].as_u64()) {
                bytes.insert(name.to_owned(), b);
            }
        }
        if bytes.len() < self.ports.len() * 3 {
            bail!("nft listed {} counters", bytes.len());
        }
        Ok(bytes)
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {TABLE}"));
    }
}

fn nft(args: &str) -> anyhow::Result<String> {
    let out = Command::new("nft")
        .args(args.split_whitespace())
        .output()
        .context("nft is not installed (apt-get install nftables)")?;
    if !out.status.success() {
        bail!(
            "nft {args}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// CPU seconds and RSS (KiB) of a process.
pub fn proc_stat(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(") ").context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after ") ".
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    // The kernel's USER_HZ is 100 on Linux.
    Ok((ticks as f64 / 100.0, rss_kib))
}

/// One system's cluster: pids and gossip ports of its agents.
struct Watched {
    label: &'static str,
    pids: Vec<u32>,
    ports: Vec<u16>,
}

/// A sample of one system: CPU seconds and RSS per agent, and counters.
struct Sample {
    cpu: Vec<f64>,
    rss_kib: Vec<u64>,
}

fn sample(w: &Watched) -> anyhow::Result<Sample> {
    let mut s = Sample {
        cpu: Vec::new(),
        rss_kib: Vec::new(),
    };
    for pid in &w.pids {
        let (cpu, rss) = proc_stat(*pid)?;
        s.cpu.push(cpu);
        s.rss_kib.push(rss);
    }
    Ok(s)
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// mob's own byte counters (sent: datagrams, stream frames).
fn mob_counters(agents: &[Agent]) -> anyhow::Result<Vec<(u64, u64)>> {
    agents
        .iter()
        .map(|a| {
            let s = a.stats()?;
            Ok((
                s["bytes_sent"].as_u64().unwrap_or(0),
                s["stream_bytes_sent"].as_u64().unwrap_or(0),
            ))
        })
        .collect()
}

/// Runs the part.
pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let secs = mode.pick(3, 60);
    let dir = tempfile::tempdir()?;
    let (mob_base, serf_base, sealed_base) = (21_000u16, 19_946u16, 20_946u16);
    let mob_root = dir.path().join("mob");
    std::fs::create_dir_all(&mob_root)?;
    let mob = local_cluster_on(&mob_root, 5, Some(mob_base), &[])?;
    let serf_root = dir.path().join("serf");
    std::fs::create_dir_all(&serf_root)?;
    let plain: Vec<SerfAgent> = serf::cluster(&serf_root, 5, serf_base, None)?;
    let key = serf::keygen()?;
    let sealed_root = dir.path().join("serf-sealed");
    std::fs::create_dir_all(&sealed_root)?;
    let sealed: Vec<SerfAgent> = serf::cluster(&sealed_root, 5, sealed_base, Some(&key))?;
    let ports = |base: u16| (0..5).map(|i| base + i).collect::<Vec<u16>>();
    let watched = [
        Watched {
            label: "mob (sealed)",
            pids: mob.iter().filter_map(Agent::pid).collect(),
            ports: ports(mob_base),
        },
        Watched {
            label: "Serf",
            pids: plain.iter().filter_map(SerfAgent::pid).collect(),
            ports: ports(serf_base),
        },
        Watched {
            label: "Serf -encrypt",
            pids: sealed.iter().filter_map(SerfAgent::pid).collect(),
            ports: ports(sealed_base),
        },
    ];
    let all_ports: Vec<u16> = watched.iter().flat_map(|w| w.ports.clone()).collect();
    let counters = Counters::new(&all_ports)?;
    // Past the joins' push-pulls and the first anti-entropy rounds.
    std::thread::sleep(Duration::from_secs(mode.pick(2, 10)));
    let before: Vec<Sample> = watched.iter().map(sample).collect::<Result<_, _>>()?;
    let bytes_before = counters.read()?;
    let mob_before = mob_counters(&mob)?;
    std::thread::sleep(Duration::from_secs(secs));
    let after: Vec<Sample> = watched.iter().map(sample).collect::<Result<_, _>>()?;
    let bytes_after = counters.read()?;
    let mob_after = mob_counters(&mob)?;
    let rate = |name: &str| {
        let delta = bytes_after.get(name).copied().unwrap_or(0)
            - bytes_before.get(name).copied().unwrap_or(0);
        delta as f64 / secs as f64
    };
    let mut body = String::from(
        "| system | RSS per agent (MiB) | CPU per agent (%) | UDP sent per agent (B/s, wire) | TCP per agent (B/s, wire) | total sent per agent (B/s, wire) |\n\
         |---|---|---|---|---|---|\n",
    );
    for ((w, b), a) in watched.iter().zip(&before).zip(&after) {
        let rss = mean(a.rss_kib.iter().map(|k| *k as f64 / 1024.0));
        let cpu = mean(
            a.cpu
                .iter()
                .zip(&b.cpu)
                .map(|(x, y)| 100.0 * (x - y) / secs as f64),
        );
        let udp = mean(w.ports.iter().map(|p| rate(&format!("udp_sport_{p}"))));
        // A connection's two directions, summed over the cluster, per agent.
        let tcp: f64 = w
            .ports
            .iter()
            .map(|p| rate(&format!("tcp_sport_{p}")) + rate(&format!("tcp_dport_{p}")))
            .sum::<f64>()
            / w.ports.len() as f64;
        let _ = writeln!(
            body,
            "| {} | {rss:.1} | {cpu:.2} | {udp:.0} | {tcp:.0} | {:.0} |",
            w.label,
            udp + tcp
        );
    }
    let per_agent = |i: usize| {
        mean(
            mob_after
                .iter()
                .zip(&mob_before)
                .map(|(a, b)| [a.0 - b.0, a.1 - b.1][i] as f64 / secs as f64),
        )
    };
    let _ = writeln!(
        body,
        "\nOver {secs} s, 5 agents each, the three clusters side by side. \
         mob's own count of what it sends, per agent: {:.0} B/s of sealed datagrams \
         (envelope included, no IP or UDP header) and {:.0} B/s of stream frames. \
         Wire: IP packets as nftables counts them on the loopback (UDP: 28 bytes of \
         headers per datagram; TCP: headers and acks of both directions).",
        per_agent(0),
        per_agent(1)
    );
    drop(counters);
    Ok(Section {
        part: "footprint".into(),
        title: "Footprint of an idle 5-node cluster: mob and Serf".into(),
        body,
    })
}
