//! Measures membership figures on real agents (run through
//! `scripts/bench.sh`, release build):
//!
//! - `detection [TRIALS]`: kill -9 of one of 5 agents until the first and
//!   until all survivors log `member down`; SIGTERM of another until all
//!   log `member left`; fresh cluster per trial, victims rotate.
//! - `idle [SECS]`: RSS, CPU and gossip bytes/s of agents in an idle
//!   5-node cluster.
//! - `spread [TRIALS]`: deploy on one of 5 agents until every other agent
//!   logs `service deployed`.
//! - `big [COUNT]`: a table of COUNT services: file size, load time at
//!   start, and time until a newly started agent holds all of it.
//!
//! Times come from the agents' own JSON log timestamps, compared with the
//! wall clock at the kill, so polling does not blur them.

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use mob_integration::{Agent, AgentSpec, local_cluster, wait_until};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i)
            .map_or(Ok(default), |a| a.parse().context("a number"))
    };
    match args.first().map(String::as_str) {
        Some("detection") => detection(number(1, 10)?),
        Some("idle") => idle(number(1, 60)?),
        Some("spread") => spread(number(1, 20)?),
        Some("big") => big(number(1, 10_000)?),
        _ => bail!(
            "usage: mob-bench detection [TRIALS] | idle [SECS] | spread [TRIALS] | big [COUNT]"
        ),
    }
}

/// Seconds from `since` to the log timestamp of each survivor's first
/// `message` line about `node`; `None` for a survivor without one yet.
fn event_delays(
    agents: &[Agent],
    message: &str,
    node: &str,
    since: SystemTime,
) -> Vec<Option<f64>> {
    field_delays(agents, message, "node", node, since)
}

/// Like [`event_delays`], matching any field.
fn field_delays(
    agents: &[Agent],
    message: &str,
    field: &str,
    value: &str,
    since: SystemTime,
) -> Vec<Option<f64>> {
    agents
        .iter()
        .map(|a| {
            a.log_events(message)
                .iter()
                .filter(|e| e[field] == value)
                .filter_map(|e| humantime::parse_rfc3339(e["timestamp"].as_str()?).ok())
                .filter_map(|t| t.duration_since(since).ok())
                .map(|d| d.as_secs_f64())
                .next()
        })
        .collect()
}

fn wait_all(
    agents: &[Agent],
    message: &str,
    node: &str,
    since: SystemTime,
) -> anyhow::Result<Vec<f64>> {
    let mut delays = Vec::new();
    wait_until(
        &format!("all survivors to log {message} {node}"),
        Duration::from_secs(30),
        || {
            let found = event_delays(agents, message, node, since);
            delays = found.iter().flatten().copied().collect();
            Ok(delays.len() == agents.len())
        },
    )?;
    Ok(delays)
}

fn summary(name: &str, values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    let pick = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} |",
        values.len(),
        pick(0.0),
        pick(0.5),
        pick(1.0)
    )
}

fn detection(trials: u64) -> anyhow::Result<()> {
    let (mut first, mut all, mut left) = (Vec::new(), Vec::new(), Vec::new());
    for trial in 0..trials {
        let dir = tempfile::tempdir()?;
        let mut agents = local_cluster(dir.path(), 5)?;
        // Let the cluster settle into steady probing before the kill.
        std::thread::sleep(Duration::from_millis(2000 + 250 * (trial % 4)));
        let victim_index = usize::try_from(trial % 5)?;
        let mut victim = agents.remove(victim_index);
        let name = victim.name().to_owned();
        let killed_at = SystemTime::now();
        victim.kill9()?;
        let delays = wait_all(&agents, "member down", &name, killed_at)?;
        let f = delays.iter().copied().fold(f64::MAX, f64::min);
        let a = delays.iter().copied().fold(0.0, f64::max);
        eprintln!("trial {trial}: killed {name}: first down {f:.2}s, all down {a:.2}s");
        first.push(f);
        all.push(a);

        let mut leaver = agents.remove(0);
        let name = leaver.name().to_owned();
        let stopped_at = SystemTime::now();
        leaver.terminate()?;
        let delays = wait_all(&agents, "member left", &name, stopped_at)?;
        let downs: usize = event_delays(&agents, "member down", &name, stopped_at)
            .iter()
            .flatten()
            .count();
        if downs > 0 {
            eprintln!("trial {trial}: graceful stop of {name} reported down by {downs}");
        }
        left.push(delays.iter().copied().fold(0.0, f64::max));
    }
    println!("| measure (s) | trials | min | median | max |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        summary("kill -9 → first survivor says down", &mut first)
    );
    println!("{}", summary("kill -9 → all survivors say down", &mut all));
    println!("{}", summary("SIGTERM → all survivors say left", &mut left));
    Ok(())
}

fn proc_stat(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(") ").context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ") ".
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
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

fn idle(secs: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let agents = local_cluster(dir.path(), 5)?;
    std::thread::sleep(Duration::from_secs(5));
    let before: Vec<_> = agents
        .iter()
        .map(|a| -> anyhow::Result<_> {
            let pid = a.pid().context("pid")?;
            let s = a.stats()?;
            Ok((
                proc_stat(pid)?,
                s["bytes_sent"].as_u64().unwrap_or(0) + s["bytes_received"].as_u64().unwrap_or(0),
                s["bytes_sent"].as_u64().unwrap_or(0),
            ))
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(secs));
    println!("| agent | RSS (MiB) | CPU (%) | gossip sent (B/s) | gossip sent+received (B/s) |");
    println!("|---|---|---|---|---|");
    for (a, ((cpu0, _), total0, sent0)) in agents.iter().zip(before) {
        let pid = a.pid().context("pid")?;
        let (cpu1, rss) = proc_stat(pid)?;
        let s = a.stats()?;
        let total1 =
            s["bytes_sent"].as_u64().unwrap_or(0) + s["bytes_received"].as_u64().unwrap_or(0);
        let sent1 = s["bytes_sent"].as_u64().unwrap_or(0);
        println!(
            "| {} | {:.1} | {:.2} | {:.0} | {:.0} |",
            a.name(),
            rss as f64 / 1024.0,
            100.0 * (cpu1 - cpu0) / secs as f64,
            (sent1 - sent0) as f64 / secs as f64,
            (total1 - total0) as f64 / secs as f64,
        );
    }
    Ok(())
}

fn spread(trials: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let agents = local_cluster(dir.path(), 5)?;
    let mut all = Vec::new();
    for trial in 0..trials {
        let name = format!("svc-{trial}");
        let origin = usize::try_from(trial % 5)?;
        let others: Vec<&Agent> = agents
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != origin)
            .map(|(_, a)| a)
            .collect();
        let spec =
            format!(r#"{{"name":"{name}","provider":"shell","params":{{"command":"sleep 1"}}}}"#);
        let started = SystemTime::now();
        agents[origin].deploy(&spec)?;
        let mut delays = Vec::new();
        wait_until(
            "every agent to log the deploy",
            Duration::from_secs(10),
            || {
                delays = others
                    .iter()
                    .filter_map(|a| {
                        field_delays(
                            std::slice::from_ref(*a),
                            "service deployed",
                            "service",
                            &name,
                            started,
                        )[0]
                    })
                    .collect();
                Ok(delays.len() == others.len())
            },
        )?;
        let slowest = delays.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "trial {trial}: {name} on all agents after {:.1} ms",
            slowest * 1000.0
        );
        all.push(slowest);
    }
    println!("| measure (s) | trials | min | median | max |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        summary("deploy (CLI) → visible on all 5 agents", &mut all)
    );
    Ok(())
}

fn records(agent: &Agent) -> anyhow::Result<u64> {
    agent.stats()?["table_records"]
        .as_u64()
        .context("table_records")
}

fn big(count: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut agents = local_cluster(dir.path(), 1)?;
    let specs: Vec<String> = (0..count)
        .map(|i| format!(r#"{{"name":"svc-{i:05}","provider":"exec","replicas":1,"params":{{"command":["sleep","100"]}}}}"#))
        .collect();
    let deploy_started = std::time::Instant::now();
    agents[0].deploy(&format!("[{}]", specs.join(",")))?;
    eprintln!(
        "deployed {count} services in {:?}",
        deploy_started.elapsed()
    );
    wait_until(
        "the seed to hold every service",
        Duration::from_secs(60),
        || Ok(records(&agents[0])? == count),
    )?;
    let file = agents[0].spec.data_dir.join("table");
    let mut size = 0;
    wait_until(
        "the table file to be saved",
        Duration::from_secs(30),
        || {
            let now = std::fs::metadata(&file).map_or(0, |m| m.len());
            let done = now > 0 && now == size;
            size = now;
            std::thread::sleep(Duration::from_millis(300));
            Ok(done)
        },
    )?;

    let key = dir.path().join("cluster.key");
    let mut spec = AgentSpec::local("newcomer", dir.path(), &key);
    spec.join.push(agents[0].addr);
    let started = std::time::Instant::now();
    let newcomer = Agent::start(spec)?;
    wait_until(
        "the newcomer to hold every service",
        Duration::from_secs(120),
        || Ok(records(&newcomer)? == count),
    )?;
    let converge = started.elapsed();
    drop(newcomer);

    agents[0].terminate()?;
    let mut alone = agents.remove(0).spec.clone();
    alone.join.clear();
    let restarted = Agent::start(alone)?;
    let line = restarted
        .log_events("agent started")
        .pop()
        .context("start line")?;
    let load_ms = line["table_load_ms"].as_f64().context("table_load_ms")?;
    println!("| measure | value |");
    println!("|---|---|");
    println!("| services | {count} |");
    println!(
        "| table file size | {:.2} MiB ({size} bytes) |",
        size as f64 / 1048576.0
    );
    println!("| table load at start | {load_ms:.1} ms |");
    println!(
        "| new agent start → holds the whole table | {:.2} s |",
        converge.as_secs_f64()
    );
    Ok(())
}
