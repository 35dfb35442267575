//! Replay: every datagram and TCP stream sent to one agent is recorded on
//! the way (the agent advertises a tap's address), and played again, with
//! no key, after a service was removed and its tombstone collected.
//! Nothing changes, and every replayed datagram and stream is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the tap saw going to the agent.
#[derive(Default)]
struct Recorded {
    datagrams: Vec<Vec<u8>>,
    /// Client-to-agent bytes, per connection.
    streams: Vec<Arc<Mutex<Vec<u8>>>>,
}

/// Relays UDP and TCP to `target` for as long as the test runs, recording
/// what goes to it while `recording`.
fn tap(
    udp: UdpSocket,
    tcp: TcpListener,
    target: SocketAddr,
    recorded: Arc<Mutex<Recorded>>,
    recording: Arc<AtomicBool>,
) {
    let (rec, on) = (recorded.clone(), recording.clone());
    std::thread::spawn(move || {
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let out = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 2048];
        loop {
            if let Ok((n, _)) = udp.recv_from(&mut buf) {
                if on.load(Ordering::Relaxed) {
                    rec.lock().unwrap().datagrams.push(buf[..n].to_vec());
                }
                let _ = out.send_to(&buf[..n], target);
            }
        }
    });
    std::thread::spawn(move || {
        for client in tcp.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            let bytes = Arc::new(Mutex::new(Vec::new()));
            if recording.load(Ordering::Relaxed) {
                recorded.lock().unwrap().streams.push(bytes.clone());
            }
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// A port free for both UDP and TCP on loopback, bound.
fn tap_sockets() -> (UdpSocket, TcpListener, u16) {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            return (udp, tcp, port);
        }
    }
}

/// A loopback port free now (for the agent behind the tap).
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn counter(agent: &Agent, path: &[&str]) -> u64 {
    let stats = agent.stats().unwrap();
    path.iter()
        .fold(&stats, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_else(|| panic!("no {path:?} in {stats}"))
}

#[test]
fn recorded_traffic_played_again_changes_nothing_and_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let extra = fast_gc(dir.path());
    let key = new_key_file(&dir.path().join("cluster.key")).unwrap();

    let (udp, tcp, tap_port) = tap_sockets();
    let bind = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let recording = Arc::new(AtomicBool::new(true));
    tap(udp, tcp, bind, recorded.clone(), recording.clone());

    let mut spec = AgentSpec::local("n1", dir.path(), &key);
    spec.bind = bind;
    spec.extra = extra.clone();
    spec.extra
        .extend(["--advertise".into(), format!("127.0.0.1:{tap_port}")]);
    let tapped = Agent::start(spec).unwrap();
    let mut agents = vec![tapped];
    for i in 2..=3 {
        let mut spec = AgentSpec::local(&format!("n{i}"), dir.path(), &key);
        spec.join.push(agents[0].addr);
        spec.extra = extra.clone();
        agents.push(Agent::start(spec).unwrap());
    }
    wait_until("the cluster", Duration::from_secs(20), || {
        all_see_alive(&agents, &["n1", "n2", "n3"])
    })
    .unwrap();

    // A deploy and a remove from another agent reach the tapped one
    // through the tap: deltas and anti-entropy.
    let m = marker(31);
    agents[1].deploy(&sleeper("victim", 3, &m)).unwrap();
    wait_until("victim on 3 nodes", Duration::from_secs(20), || {
        Ok(processes_with_arg(&m).len() == 3)
    })
    .unwrap();
    agents[1].cli(&["remove", "victim"]).unwrap();
    let forgotten = |a: &Agent| counter(a, &["table_records"]) == 3;
    wait_until(
        "the tombstone collected everywhere",
        Duration::from_secs(30),
        || Ok(agents.iter().all(forgotten) && processes_with_arg(&m).is_empty()),
    )
    .unwrap();
    recording.store(false, Ordering::Relaxed);
    let (datagrams, streams): (Vec<Vec<u8>>, Vec<Vec<u8>>) = {
        let r = recorded.lock().unwrap();
        (
            r.datagrams.clone(),
            r.streams
                .iter()
                .map(|s| s.lock().unwrap().clone())
                .collect(),
        )
    };
    let streams: Vec<Vec<u8>> = streams.into_iter().filter(|s| !s.is_empty()).collect();
    assert!(
        !datagrams.is_empty() && !streams.is_empty(),
        "nothing recorded"
    );

    // Played again, straight to the agent, without the key.
    let before = counter(&agents[0], &["packets_rejected"]);
    let player = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in &datagrams {
        player.send_to(d, bind).unwrap();
    }
    for s in &streams {
        let Ok(mut conn) = TcpStream::connect(bind) else {
            continue;
        };
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = conn.write_all(s);
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = conn.read_to_end(&mut sink);
    }
    let replayed = (datagrams.len() + streams.len()) as u64;
    wait_until("every replay refused", Duration::from_secs(10), || {
        Ok(counter(&agents[0], &["packets_rejected"]) >= before + replayed)
    })
    .unwrap();
    eprintln!(
        "replay: {} datagrams and {} streams played again, {} refused",
        datagrams.len(),
        streams.len(),
        counter(&agents[0], &["packets_rejected"]) - before
    );
    // Nothing came back, for a while.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for a in &agents {
            assert!(forgotten(a), "{} holds records again", a.name());
            assert!(!a.service_names().unwrap().contains(&"victim".to_owned()));
        }
        assert!(processes_with_arg(&m).is_empty(), "victim runs again");
        std::thread::sleep(Duration::from_millis(200));
    }
}
