//! Connection floods: idle TCP connections without the key on a member's
//! gossip port, and idle and following connections on its control socket,
//! well past every cap. Members still exchange tables and fetch logs, and
//! the CLI still answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Keeps `n` idle connections from `source` to `target` open until
/// `stop`, opening a new one whenever the agent closes one.
fn flood(
    source: std::net::IpAddr,
    target: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let open = || async move {
                let socket = tokio::net::TcpSocket::new_v4().ok()?;
                socket.bind(SocketAddr::new(source, 0)).ok()?;
                socket.connect(target).await.ok()
            };
            let mut held = Vec::new();
            let mut opened = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Drop the ones the agent closed.
                held.retain(|c: &tokio::net::TcpStream| {
                    let mut buf = [0u8; 16];
                    matches!(c.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                while held.len() < n {
                    match open().await {
                        Some(c) => {
                            held.push(c);
                            opened += 1;
                        }
                        None => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            opened
        })
    })
}

fn counter(agent: &Agent, name: &str) -> u64 {
    let stats = agent.stats().unwrap();
    stats[name]
        .as_u64()
        .or_else(|| stats["membership"][name].as_u64())
        .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

#[test]
fn members_keep_syncing_and_fetching_logs_through_a_flood_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 3).unwrap();
    let spec = r#"{"name": "ticker", "provider": "shell", "params": {"command": "while true; do echo tick; sleep 0.2; done"}}"#;
    agents[0].deploy(spec).unwrap();
    let mut owner = String::new();
    wait_until("ticker runs", Duration::from_secs(15), || {
        owner = slots(&agents[0], "ticker")?
            .iter()
            .find(|s| s["state"] == "running")
            .and_then(|s| s["node"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Ok(!owner.is_empty())
    })
    .unwrap();
    let target = agents.iter().find(|a| a.name() == owner).unwrap();
    let others: Vec<&Agent> = agents.iter().filter(|a| a.name() != owner).collect();

    // 100 idle connections from another address, kept renewed.
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(
        std::net::IpAddr::from([127, 0, 0, 9]),
        target.addr,
        100,
        stop.clone(),
    );
    wait_until("the flood to be refused", Duration::from_secs(10), || {
        Ok(counter(target, "connections_refused") > 0)
    })
    .unwrap();
    let before: Vec<(u64, u64)> = others
        .iter()
        .map(|a| {
            (
                counter(a, "anti_entropy_rounds"),
                counter(a, "anti_entropy_failures"),
            )
        })
        .collect();
    // Log fetches from the other members, over streams to the flooded one.
    let mut fetched = 0;
    for _ in 0..10 {
        for a in &others {
            let out = a.cli(&["logs", "ticker", "-n", "1"]).unwrap();
            assert!(out.contains("tick"), "{out}");
            fetched += 1;
        }
    }
    // Anti-entropy rounds go on: wait for a few more, all of them good.
    wait_until(
        "anti-entropy rounds during the flood",
        Duration::from_secs(20),
        || {
            Ok(others
                .iter()
                .zip(&before)
                .all(|(a, (rounds, _))| counter(a, "anti_entropy_rounds") >= rounds + 3))
        },
    )
    .unwrap();
    let failed: u64 = others
        .iter()
        .zip(&before)
        .map(|(a, (_, failures))| counter(a, "anti_entropy_failures") - failures)
        .sum();
    stop.store(true, Ordering::Relaxed);
    let opened = flooder.join().unwrap();
    eprintln!(
        "flood: {opened} connections opened, {} refused; {fetched} log fetches good; {failed} anti-entropy rounds failed",
        counter(target, "connections_refused")
    );
    assert_eq!(failed, 0, "anti-entropy rounds failed during the flood");
}

#[test]
fn the_cli_answers_with_100_followers_and_100_idle_connections_open() {
    let dir = tempfile::tempdir().unwrap();
    let agents = local_cluster(dir.path(), 1).unwrap();
    let agent = &agents[0];
    let spec = r#"{"name": "ticker", "provider": "shell", "params": {"command": "while true; do echo tick; sleep 0.2; done"}}"#;
    agent.deploy(spec).unwrap();
    wait_until("ticker runs", Duration::from_secs(15), || {
        Ok(slots(agent, "ticker")?
            .iter()
            .any(|s| s["state"] == "running"))
    })
    .unwrap();
    let idle: Vec<std::os::unix::net::UnixStream> = (0..100)
        .map(|_| std::os::unix::net::UnixStream::connect(&agent.socket).unwrap())
        .collect();
    let mut followers: Vec<std::process::Child> = (0..100)
        .map(|_| {
            std::process::Command::new(mob_integration::binary())
                .args(["logs", "ticker", "-f", "-n", "1", "--agent"])
                .arg(&agent.socket)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Every follower streams: its first line has come.
    let mut outputs = Vec::new();
    for f in &mut followers {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(f.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.contains("tick"), "a follower got {line:?}");
        outputs.push(out);
    }
    for _ in 0..5 {
        let asked = Instant::now();
        agent.cli(&["services"]).unwrap();
        agent.cli(&["members"]).unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "the CLI waited {:?}",
            asked.elapsed()
        );
    }
    let still_following = followers
        .iter_mut()
        .filter_map(|f| f.try_wait().ok())
        .filter(Option::is_none)
        .count();
    assert_eq!(still_following, 100, "followers were cut off");
    for mut f in followers {
        let _ = f.kill();
        let _ = f.wait();
    }
    drop(idle);
}
