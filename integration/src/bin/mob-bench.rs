//! The benchmark (run through `scripts/bench.sh`, release build).
//!
//! `all` or a part of [`mob_integration::bench`] (`--smoke`, `--write
//! FILE`) measures mob next to its peers and writes `BENCHMARKS.md`. The
//! single measurements below print their table only:
//!
//! - `idle [SECS]`: RSS, CPU and gossip bytes/s of agents in an idle
//!   5-node cluster.
//! - `spread [TRIALS]`: deploy on one of 5 agents until every other agent
//!   logs `service deployed`.
//! - `big [COUNT]`: a table of COUNT services: file size, load time at
//!   start, and time until a newly started agent holds all of it.
//! - `restart-alone [CRASHES]`: the supervisor alone, in this process: exit of a crashing process
//!   to the pid of its replacement.
//! - `deploy-run [TRIALS] [exec|docker]`: `deploy` through the CLI until the
//!   agent logs `instance started`.
//! - `rss [INSTANCES]`: agent RSS with that many supervised `sleep`s.
//! - `bulk [AGENTS] [SERVICES] [TRIALS]`: one file of SERVICES one-slot
//!   `sleep` services deployed on one agent, until every one runs (real
//!   processes counted). Agents bind ports from 20000 up (below the
//!   kernel's ephemeral range, which their outgoing connections use).
//!   Prints the spread too: slots per agent, min / mean / max.
//! - `join [AGENTS] [JOINERS] [SERVICES]`: SERVICES one-slot services
//!   running on AGENTS agents, then JOINERS more agents start: the time
//!   until rebalancing gave every joiner a slot, and until no agent is over
//!   the new load cap, with the joiners' slots.
//! - `dns [SERVICES] [QUERIES]`: one agent holding SERVICES services (and
//!   `web`, 3 instances with a port): latency of QUERIES sequential UDP
//!   queries (A, SRV, and A of random services), p50 / p99 / max; the
//!   time from `scale web 4` to the fourth SRV record; and the RSS of an
//!   agent serving DNS next to one with `--dns off`, both holding the table.
//!
//! Times come from the agents' own JSON log timestamps, compared with the
//! wall clock at the kill, so polling does not blur them.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use mob_integration::bench;
use mob_integration::{
    Agent, AgentSpec, local_cluster, local_cluster_on, processes_with_arg, wait_until,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i)
            .map_or(Ok(default), |a| a.parse().context("a number"))
    };
    if args.first().map(String::as_str) == Some("list") {
        for part in bench::PARTS {
            println!("{:<12} {}", part.name, part.about);
        }
        return Ok(());
    }
    if let Some(first) = args.first()
        && (first == "all" || mob_integration::bench::part(first).is_some())
    {
        return parts(&args);
    }
    match args.first().map(String::as_str) {
        Some("idle") => idle(number(1, 60)?),
        Some("dns") => dns(number(1, 10_000)?, number(2, 20_000)?),
        Some("idle-big") => idle_big(number(1, 10_000)?, number(2, 60)?),
        Some("spread") => spread(number(1, 20)?),
        Some("big") => big(number(1, 10_000)?),
        Some("restart-alone") => restart(number(1, 100)?),
        Some("deploy-run") => {
            deploy_run(number(1, 20)?, args.get(2).map_or("exec", String::as_str))
        }
        Some("rss") => rss(number(1, 100)?),
        Some("bulk") => bulk(number(1, 20)?, number(2, 1_000)?, number(3, 3)?),
        Some("join") => join(number(1, 40)?, number(2, 10)?, number(3, 300)?),
        Some("ack") => ack(number(1, 10)?, number(2, 100)?),
        _ => bail!(
            "usage: mob-bench list | all|PART [--smoke] [--write FILE], PART one of {}; or idle|idle-big|spread|big|restart-alone|deploy-run|rss|bulk|join|ack [N]",
            bench::PARTS
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join("|")
        ),
    }
}

/// `all` or one part: runs it (`--smoke`: one trial of each), prints the
/// sections, and with `--write FILE` (or `$MOB_BENCH_WRITE`, unless
/// `--smoke`) writes them to FILE (`all`: the whole file; a part: its
/// section, the others kept).
fn parts(args: &[String]) -> anyhow::Result<()> {
    let mode = if args.iter().any(|a| a == "--smoke") {
        bench::Mode::Smoke
    } else {
        bench::Mode::Full
    };
    let write = match args.iter().position(|a| a == "--write") {
        Some(i) => Some(args.get(i + 1).context("--write needs a file")?.clone()),
        // (scripts/bench.sh names the file; a smoke run writes nothing.)
        None if mode == bench::Mode::Full => std::env::var("MOB_BENCH_WRITE").ok(),
        None => None,
    };
    let chosen: Vec<&bench::Part> = if args[0] == "all" {
        bench::PARTS.iter().collect()
    } else {
        bench::part(&args[0]).into_iter().collect()
    };
    // A missing peer stops the run before anything is measured.
    let versions = bench::versions(&mob_integration::binary())?;
    let machine = bench::report::Machine::here();
    let mut sections = Vec::new();
    for part in chosen {
        eprintln!("== {}: {}", part.name, part.about);
        let section = (part.run)(mode).with_context(|| format!("part {}", part.name))?;
        println!("{}", section.render(&machine));
        sections.push(section);
    }
    if let Some(path) = write {
        let path = std::path::Path::new(&path);
        if args[0] == "all" {
            bench::report::write_all(path, &sections, &machine, &versions)?;
        } else {
            bench::report::replace_sections(path, &sections, &machine)?;
        }
        eprintln!("wrote {}", path.display());
    }
    Ok(())
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

fn idle(secs: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let agents = local_cluster(dir.path(), 5)?;
    std::thread::sleep(Duration::from_secs(5));
    let counter = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap_or(0);
    let sample = |a: &Agent| -> anyhow::Result<(f64, u64, [u64; 3])> {
        let (cpu, rss) = bench::footprint::proc_stat(a.pid().context("pid")?)?;
        let s = a.stats()?;
        let udp_sent = counter(&s, "bytes_sent");
        let udp_all = udp_sent + counter(&s, "bytes_received");
        let tcp_sent = counter(&s, "stream_bytes_sent");
        Ok((cpu, rss, [udp_sent, udp_all, tcp_sent]))
    };
    let before: Vec<_> = agents.iter().map(sample).collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(secs));
    println!(
        "| agent | RSS (MiB) | CPU (%) | gossip sent (B/s) | gossip sent+received (B/s) | streams sent (B/s) |"
    );
    println!("|---|---|---|---|---|---|");
    for (a, (cpu0, _, b0)) in agents.iter().zip(before) {
        let (cpu1, rss, b1) = sample(a)?;
        let rate = |i: usize| (b1[i] - b0[i]) as f64 / secs as f64;
        println!(
            "| {} | {:.1} | {:.2} | {:.0} | {:.0} | {:.0} |",
            a.name(),
            rss as f64 / 1024.0,
            100.0 * (cpu1 - cpu0) / secs as f64,
            rate(0),
            rate(1),
            rate(2),
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
                        bench::mob_delays(
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

/// CPU of idle agents holding `count` services: 3 agents, the services
/// constrained to a tag no node has (so they stay pending and no process
/// runs), measured over `secs` once every agent holds them all.
fn idle_big(count: u64, secs: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let agents = local_cluster(dir.path(), 3)?;
    let specs: Vec<String> = (0..count)
        .map(|i| format!(r#"{{"name":"svc-{i:05}","provider":"exec","constraints":{{"tags":{{"zone":"nowhere"}}}},"params":{{"command":["sleep","100"]}}}}"#))
        .collect();
    agents[0].deploy(&format!("[{}]", specs.join(",")))?;
    for agent in &agents {
        wait_until(
            "every agent to hold every service",
            Duration::from_secs(120),
            || Ok(records(agent)? >= count + agents.len() as u64),
        )?;
    }
    // Let the saves and the first full passes settle.
    std::thread::sleep(Duration::from_secs(15));
    let before: Vec<f64> = agents
        .iter()
        .map(|a| Ok(bench::footprint::proc_stat(a.pid().context("pid")?)?.0))
        .collect::<anyhow::Result<_>>()?;
    std::thread::sleep(Duration::from_secs(secs));
    println!("| agent | services held | RSS (MiB) | CPU (%) over {secs} s |");
    println!("|---|---|---|---|");
    for (a, cpu0) in agents.iter().zip(before) {
        let (cpu1, rss) = bench::footprint::proc_stat(a.pid().context("pid")?)?;
        println!(
            "| {} | {count} | {:.1} | {:.2} |",
            a.name(),
            rss as f64 / 1024.0,
            100.0 * (cpu1 - cpu0) / secs as f64
        );
    }
    Ok(())
}

/// One DNS query of `name` for `kind` to `server`: the answer records and
/// the round trip.
fn query(
    socket: &std::net::UdpSocket,
    server: std::net::SocketAddr,
    id: u16,
    name: &str,
    kind: hickory_proto::rr::RecordType,
) -> anyhow::Result<(usize, Duration)> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;
    let mut message = Message::new();
    message
        .set_id(id)
        .add_query(Query::query(Name::from_ascii(name)?, kind));
    let bytes = message.to_vec()?;
    let sent = std::time::Instant::now();
    socket.send_to(&bytes, server)?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = socket.recv_from(&mut buf)?;
        let answer = Message::from_vec(&buf[..n])?;
        if answer.id() == id {
            return Ok((answer.answers().len(), sent.elapsed()));
        }
    }
}

fn dns(services: u64, queries: u64) -> anyhow::Result<()> {
    use hickory_proto::rr::RecordType;
    let dir = tempfile::tempdir()?;
    let mut agents = local_cluster(dir.path(), 1)?;
    let specs: Vec<String> = (0..services)
        .map(|i| format!(r#"{{"name":"svc-{i:05}","provider":"exec","ports":{{"http":0}},"constraints":{{"tags":{{"zone":"nowhere"}}}},"params":{{"command":["sleep","100"]}}}}"#))
        .chain([r#"{"name":"web","provider":"exec","replicas":3,"ports":{"http":0},"params":{"command":["sleep","3300000"]}}"#.to_owned()])
        .collect();
    agents[0].deploy(&format!("[{}]", specs.join(",")))?;
    wait_until("web running", Duration::from_secs(120), || {
        Ok(processes_with_arg("3300000").len() == 3)
    })?;
    let server = agents[0].dns.context("the agent serves DNS")?;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    wait_until("web in DNS", Duration::from_secs(30), || {
        Ok(query(
            &socket,
            server,
            1,
            "_http._tcp.web.service.mob.",
            RecordType::SRV,
        )?
        .0 == 3)
    })?;
    let mut latencies = Vec::new();
    for i in 0..queries {
        let (name, kind) = match i % 3 {
            0 => ("web.service.mob.".to_owned(), RecordType::A),
            1 => ("_http._tcp.web.service.mob.".to_owned(), RecordType::SRV),
            _ => (
                format!("svc-{:05}.service.mob.", (i * 7919) % services.max(1)),
                RecordType::A,
            ),
        };
        latencies.push(query(&socket, server, (i % 60_000) as u16 + 2, &name, kind)?.1);
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    println!(
        "| DNS, {services} services in the table | queries | p50 (µs) | p99 (µs) | max (µs) |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| sequential UDP queries on loopback | {queries} | {:.0} | {:.0} | {:.0} |",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    // A change in the table: the fourth instance, until DNS lists it.
    let scaled = std::time::Instant::now();
    agents[0].cli(&["scale", "web", "4"])?;
    let acked = scaled.elapsed();
    wait_until("the fourth SRV record", Duration::from_secs(30), || {
        Ok(query(
            &socket,
            server,
            1,
            "_http._tcp.web.service.mob.",
            RecordType::SRV,
        )?
        .0 == 4)
    })?;
    println!(
        "scale web 4 -> the fourth SRV record: {:.0} ms (the CLI returned after {:.0} ms; the instance must start and report first)",
        scaled.elapsed().as_secs_f64() * 1e3,
        acked.as_secs_f64() * 1e3
    );
    // Memory: this agent next to one holding the same table with DNS off.
    let mut spec = AgentSpec::local("n2", dir.path(), &dir.path().join("cluster.key"));
    spec.join = vec![agents[0].addr];
    spec.dns = "off".into();
    agents.push(Agent::start(spec)?);
    let held = records(&agents[0])?;
    wait_until("n2 to hold the table", Duration::from_secs(120), || {
        Ok(records(&agents[1])? >= held)
    })?;
    std::thread::sleep(Duration::from_secs(10));
    for agent in &agents {
        let (_, rss) = bench::footprint::proc_stat(agent.pid().context("pid")?)?;
        println!(
            "{}: DNS {}, RSS {:.1} MiB",
            agent.name(),
            if agent.dns.is_some() {
                "on, after the queries"
            } else {
                "off"
            },
            rss as f64 / 1024.0
        );
    }
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

/// Deploy acknowledgement latency: `mob-agent deploy` of one service, from
/// spawning the CLI to its exit (the write saved with the whole table
/// first), on one agent whose table holds `services` others (placed on no
/// node, so nothing runs).
fn ack(services: u64, trials: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let agents = local_cluster(dir.path(), 1)?;
    let nowhere = |name: &str| {
        format!(
            r#"{{"name":"{name}","provider":"exec","constraints":{{"tags":{{"zone":"none"}}}},"params":{{"command":["sleep","100"]}}}}"#
        )
    };
    let specs: Vec<String> = (0..services)
        .map(|i| nowhere(&format!("bg-{i:05}")))
        .collect();
    agents[0].deploy(&format!("[{}]", specs.join(",")))?;
    let mut times = Vec::new();
    for i in 0..trials {
        let started = std::time::Instant::now();
        agents[0].deploy(&nowhere(&format!("ack-{i:04}")))?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    println!("| services in the table | trials | p50 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---|---|---|---|");
    let (p50, p99, max) = (
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
        percentile(&mut times, 1.0),
    );
    println!("| {services} | {trials} | {p50:.1} | {p99:.1} | {max:.1} |");
    Ok(())
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn restart(crashes: u64) -> anyhow::Result<()> {
    use mob_providers::logs::LogConfig;
    use mob_providers::{Providers, Supervisor};
    use mob_scheduler::record::InstanceState;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let mut latencies = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        let providers = std::sync::Arc::new(Providers::detect(&[mob_scheduler::spec::ProviderKind::Exec]).await);
        let mut supervisor = Supervisor::new("bench".into(), dir.path().display().to_string(), std::net::IpAddr::from([127, 0, 0, 1]), mob_providers::ports::DEFAULT_RANGE, providers, LogConfig::new(dir.path().to_owned()), tx);
        // Runs 20 ms and crashes; stable_after 10 ms keeps every restart immediate.
        let spec = mob_scheduler::spec_file::parse_specs(&format!(
            r#"{{"name":"crasher","provider":"exec","max_restarts":{},"stable_after":"10ms","params":{{"command":["sleep","0.02"]}}}}"#,
            crashes + 10
        ))?
        .remove(0);
        supervisor.start(spec, 0)?;
        let mut exited_at = None;
        let mut latencies = Vec::new();
        while latencies.len() < crashes as usize {
            let Some(report) = rx.recv().await else { break };
            match report.state {
                InstanceState::Starting if report.exit.is_some() => exited_at = Some(report.at),
                InstanceState::Running => {
                    if let Some(at) = exited_at.take() {
                        latencies.push(report.at.duration_since(at).unwrap_or_default().as_secs_f64() * 1000.0);
                    }
                }
                _ => {}
            }
        }
        supervisor.stop_all().await;
        anyhow::Ok(latencies)
    })?;
    println!("| measure (ms) | crashes | min | median | p99 | max |");
    println!("|---|---|---|---|---|---|");
    let (min, med, p99, max) = (
        percentile(&mut latencies, 0.0),
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99),
        percentile(&mut latencies, 1.0),
    );
    println!(
        "| crash (exit reaped) → new pid running | {} | {min:.2} | {med:.2} | {p99:.2} | {max:.2} |",
        latencies.len()
    );
    Ok(())
}

/// Seconds from `since` to `agent`'s first `instance started` of `service`.
fn started_after(agent: &Agent, service: &str, since: SystemTime) -> Option<f64> {
    bench::mob_delays(
        std::slice::from_ref(agent),
        "instance started",
        "service",
        service,
        since,
    )[0]
}

fn deploy_run(trials: u64, provider: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let agents = local_cluster(dir.path(), 1)?;
    let mut all = Vec::new();
    for trial in 0..trials {
        let name = format!("run-{trial}");
        let spec = match provider {
            "docker" => format!(
                r#"{{"name":"{name}","provider":"docker","stop_timeout":"1s","params":{{"image":"mob-test/busybox","args":["sleep","1000"]}}}}"#
            ),
            _ => format!(
                r#"{{"name":"{name}","provider":"exec","params":{{"command":["sleep","1000"]}}}}"#
            ),
        };
        let started = SystemTime::now();
        agents[0].deploy(&spec)?;
        let mut delay = None;
        wait_until("the instance to start", Duration::from_secs(30), || {
            delay = started_after(&agents[0], &name, started);
            Ok(delay.is_some())
        })?;
        all.push(delay.context("delay")?);
        agents[0].cli(&["remove", &name])?;
    }
    println!("| measure (s) | trials | min | median | max |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        summary(
            &format!("deploy (CLI) → {provider} instance running"),
            &mut all
        )
    );
    Ok(())
}

fn rss(instances: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let agents = local_cluster(dir.path(), 1)?;
    let specs: Vec<String> = (0..instances)
        .map(|i| format!(r#"{{"name":"sleep-{i:03}","provider":"exec","params":{{"command":["sleep","100000"]}}}}"#))
        .collect();
    let (_, rss_idle) = bench::footprint::proc_stat(agents[0].pid().context("pid")?)?;
    agents[0].deploy(&format!("[{}]", specs.join(",")))?;
    wait_until("every instance to run", Duration::from_secs(60), || {
        let running = agents[0]
            .services()?
            .iter()
            .filter(|s| s["slots"][0]["state"] == "running")
            .count();
        Ok(running as u64 == instances)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let (_, rss) = bench::footprint::proc_stat(agents[0].pid().context("pid")?)?;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| agent RSS, no instances | {:.1} MiB |",
        rss_idle as f64 / 1024.0
    );
    println!(
        "| agent RSS, {instances} supervised sleep instances | {:.1} MiB |",
        rss as f64 / 1024.0
    );
    Ok(())
}

fn settle(cluster: &[Agent]) -> anyhow::Result<()> {
    let cpu = || -> anyhow::Result<f64> {
        cluster
            .iter()
            .filter_map(Agent::pid)
            .map(|pid| bench::footprint::proc_stat(pid).map(|(secs, _)| secs))
            .sum()
    };
    let mut last = (cpu()?, std::time::Instant::now());
    wait_until("the agents to settle", Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = (cpu()?, std::time::Instant::now());
        let busy = (now.0 - last.0) / now.1.duration_since(last.1).as_secs_f64();
        last = now;
        let counts: BTreeSet<u64> = cluster.iter().map(records).collect::<Result<_, _>>()?;
        Ok(busy < 0.01 * cluster.len() as f64 && counts.len() == 1)
    })?;
    Ok(())
}

fn bulk(agents: u64, services: u64, trials: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = local_cluster_on(dir.path(), usize::try_from(agents)?, Some(20_000), &[])?;
    let mut all = Vec::new();
    for trial in 0..trials {
        let marker = format!("{}", 3_000_000 + trial);
        let specs: Vec<String> = (0..services)
            .map(|i| format!(r#"{{"name":"b{trial}-{i:05}","provider":"exec","stop_timeout":"1s","params":{{"command":["sleep","{marker}"]}}}}"#))
            .collect();
        let started = std::time::Instant::now();
        cluster[0].deploy(&format!("[{}]", specs.join(",")))?;
        wait_until("every service to run", Duration::from_secs(120), || {
            Ok(processes_with_arg(&marker).len() as u64 >= services)
        })?;
        let took = started.elapsed().as_secs_f64();
        // Where the time went, from the agents' own log timestamps: the
        // last agent to learn the services, the last claim, the last start.
        let since = SystemTime::now() - started.elapsed();
        // The latest `message` about this trial's services on `agents`.
        let latest = |agents: &[Agent], message: &str| -> f64 {
            agents
                .iter()
                .flat_map(|a| a.log_events(message))
                .filter(|e| {
                    e["service"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(&format!("b{trial}-")))
                })
                .filter_map(|e| humantime::parse_rfc3339(e["timestamp"].as_str()?).ok())
                .filter_map(|t| t.duration_since(since).ok())
                .map(|d| d.as_secs_f64())
                .fold(0.0, f64::max)
        };
        let last = |message: &str| latest(&cluster, message);
        // When each agent had learned them all: how the write spread.
        let mut learned: Vec<f64> = cluster
            .iter()
            .map(|a| latest(std::slice::from_ref(a), "service deployed"))
            .collect();
        learned.sort_by(f64::total_cmp);
        let learned: Vec<String> = learned.iter().map(|t| format!("{t:.2}")).collect();
        eprintln!(
            "trial {trial}: agents learned them at {}",
            learned.join(" ")
        );
        eprintln!(
            "trial {trial}: {services} services running on {agents} agents after {took:.2} s (last agent learned them at {:.2} s, last claim {:.2} s, last start {:.2} s); slots per agent {}",
            last("service deployed"),
            last("slot claimed"),
            last("instance started"),
            spread_of(&cluster[0], None)?
        );
        all.push(took);
        for i in 0..services {
            let name = format!("b{trial}-{i:05}");
            // A busy agent may time a request out: try again.
            let mut tries = 0;
            while let Err(e) = cluster[0].cli(&["remove", &name]) {
                tries += 1;
                // A retry of a remove that was applied but timed out.
                if tries > 1 && e.to_string().contains("no service named") {
                    break;
                }
                if tries == 3 {
                    return Err(e);
                }
            }
        }
        wait_until("the services to stop", Duration::from_secs(120), || {
            Ok(processes_with_arg(&marker).is_empty())
        })?;
        settle(&cluster)?;
    }
    all.sort_by(f64::total_cmp);
    println!("| measure (s) | agents | services | trials | min | median | max |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| deploy (one file) -> every service running | {agents} | {services} | {trials} | {:.2} | {:.2} | {:.2} |",
        all[0],
        all[all.len() / 2],
        all[all.len() - 1]
    );
    Ok(())
}

/// Slots per member in `agent`'s table (of `only`, if given): `min / mean /
/// max`.
fn spread_of(agent: &Agent, only: Option<&[String]>) -> anyhow::Result<String> {
    let mut loads: Vec<usize> = agent
        .members()?
        .iter()
        .filter(|m| m.state == "alive" && only.is_none_or(|o| o.contains(&m.name)))
        .map(|m| m.slots)
        .collect();
    loads.sort_unstable();
    let (Some(min), Some(max)) = (loads.first(), loads.last()) else {
        bail!("no members");
    };
    let mean = loads.iter().sum::<usize>() as f64 / loads.len() as f64;
    Ok(format!("{min} / {mean:.1} / {max}"))
}

fn join(agents: u64, joiners: u64, services: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = 20_000;
    let mut cluster = local_cluster_on(dir.path(), usize::try_from(agents)?, Some(base), &[])?;
    let marker = "3100000".to_owned();
    let specs: Vec<String> = (0..services)
        .map(|i| format!(r#"{{"name":"j-{i:05}","provider":"exec","stop_timeout":"1s","params":{{"command":["sleep","{marker}"]}}}}"#))
        .collect();
    cluster[0].deploy(&format!("[{}]", specs.join(",")))?;
    wait_until("every service to run", Duration::from_secs(120), || {
        Ok(processes_with_arg(&marker).len() as u64 >= services)
    })?;
    let before = spread_of(&cluster[0], None)?;
    let key = dir.path().join("cluster.key");
    let started = std::time::Instant::now();
    let mut names = Vec::new();
    for i in agents + 1..=agents + joiners {
        let name = format!("n{i}");
        let mut spec = AgentSpec::local(&name, dir.path(), &key);
        let port = u16::try_from(u64::from(base) + i - 1)?;
        spec.bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        spec.join.push(cluster[0].addr);
        cluster.push(Agent::start(spec)?);
        names.push(name);
    }
    let all = agents + joiners;
    let cap = (services as f64 * 1.25 / all as f64).ceil() as usize;
    let half = (services as f64 / all as f64 / 2.0) as usize;
    let (mut first, mut halfway) = (None, None);
    wait_until(
        "no agent over the new cap",
        Duration::from_secs(300),
        || {
            let members = cluster[0].members()?;
            let alive: Vec<_> = members.iter().filter(|m| m.state == "alive").collect();
            let joined_hold = names
                .iter()
                .all(|n| alive.iter().any(|m| &m.name == n && m.slots >= 1));
            if joined_hold && first.is_none() {
                first = Some(started.elapsed());
            }
            let joined_half = names
                .iter()
                .all(|n| alive.iter().any(|m| &m.name == n && m.slots >= half));
            if joined_half && halfway.is_none() {
                halfway = Some(started.elapsed());
            }
            Ok(alive.len() as u64 == all
                && joined_hold
                && alive.iter().all(|m| m.slots <= cap)
                && processes_with_arg(&marker).len() as u64 == services)
        },
    )?;
    let settled = started.elapsed();
    println!("| measure | agents | joiners | services | seconds |");
    println!("|---|---|---|---|---|");
    println!(
        "| joiners started -> every joiner holds a slot | {agents} | {joiners} | {services} | {:.1} |",
        first.unwrap_or(settled).as_secs_f64()
    );
    println!(
        "| joiners started -> every joiner holds half the mean ({half}) | {agents} | {joiners} | {services} | {:.1} |",
        halfway.unwrap_or(settled).as_secs_f64()
    );
    println!(
        "| joiners started -> no agent over the new cap {cap} | {agents} | {joiners} | {services} | {:.1} |",
        settled.as_secs_f64()
    );
    println!(
        "slots per agent before the join: {before}; after: {}; the joiners: {}",
        spread_of(&cluster[0], None)?,
        spread_of(&cluster[0], Some(&names))?
    );
    Ok(())
}
