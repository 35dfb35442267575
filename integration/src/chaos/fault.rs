//! The faults the harness injects, each begun and ended on the real
//! cluster: processes killed, stopped, wiped or frozen; links cut one way
//! or both; both cores saturated; a gossip port flooded.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::Cluster;

/// libfaketime, as Debian's `faketime` installs it.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// One fault, as drawn from the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of an agent; it starts again on the same data dir.
    Kill {
        /// Its host (0-based).
        host: usize,
    },
    /// A graceful stop (SIGTERM); it starts again on the same data dir.
    Stop {
        /// Its host.
        host: usize,
    },
    /// `kill -9`, and the data dir wiped: the node is replaced under the
    /// same name, with an empty table.
    Wipe {
        /// Its host.
        host: usize,
    },
    /// SIGSTOP, then SIGCONT `ms` later.
    Freeze {
        /// Its host.
        host: usize,
        /// How long it is frozen.
        ms: u64,
    },
    /// The hosts of `side` cut off from the others, both ways.
    Partition {
        /// One side (0-based hosts).
        side: Vec<usize>,
    },
    /// What the hosts of `side` send to the others is dropped; the other
    /// way still works.
    OneWay {
        /// The side whose packets are lost.
        side: Vec<usize>,
    },
    /// The agent started again with its wall clock moved by `offset_s`
    /// seconds (libfaketime; within the ±30 s the wire accepts), then
    /// again with the real one.
    Skew {
        /// Its host.
        host: usize,
        /// How far its clock is moved, in seconds.
        offset_s: i64,
    },
    /// The agent's data dir (a tmpfs of its own) filled up, then freed.
    DiskFull {
        /// Its host.
        host: usize,
    },
    /// Busy loops on every core (two per core) for `secs`.
    Cpu {
        /// How long.
        secs: u64,
    },
    /// Garbage datagrams and idle connections on a host's gossip port,
    /// from another host, for `secs`.
    Flood {
        /// The host flooded.
        host: usize,
        /// How long.
        secs: u64,
    },
}

impl Fault {
    /// Its kind, for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kill { .. } => "kill -9",
            Self::Stop { .. } => "graceful stop",
            Self::Wipe { .. } => "data dir wiped",
            Self::Freeze { .. } => "SIGSTOP",
            Self::Partition { .. } => "partition",
            Self::OneWay { .. } => "one-way loss",
            Self::Skew { .. } => "clock skew",
            Self::DiskFull { .. } => "disk full",
            Self::Cpu { .. } => "CPU saturation",
            Self::Flood { .. } => "flood",
        }
    }

    /// A fault drawn from `rng` for `hosts` hosts; `cpu_secs` bounds the
    /// saturation and the flood.
    pub fn pick(rng: &mut StdRng, hosts: usize, cpu_secs: u64) -> Self {
        let host = rng.random_range(0..hosts);
        let side = |rng: &mut StdRng| {
            // A minority side of 1 or 2 hosts, at random.
            let mut all: Vec<usize> = (0..hosts).collect();
            let n = rng.random_range(1..=(hosts - 1) / 2);
            let mut side = Vec::new();
            for _ in 0..n {
                side.push(all.swap_remove(rng.random_range(0..all.len())));
            }
            side.sort_unstable();
            side
        };
        match rng.random_range(0..12) {
            0 | 1 => Self::Kill { host },
            2 => Self::Stop { host },
            3 => Self::Wipe { host },
            4 | 5 => Self::Freeze {
                host,
                ms: rng.random_range(500..=3_000),
            },
            6 => Self::Partition { side: side(rng) },
            7 => Self::OneWay { side: side(rng) },
            8 => Self::Cpu { secs: cpu_secs },
            9 => Self::Skew {
                host,
                offset_s: rng.random_range(1..=5) * if rng.random() { 1 } else { -1 },
            },
            10 => Self::DiskFull { host },
            _ => Self::Flood {
                host,
                secs: cpu_secs,
            },
        }
    }
}

/// A fault in progress: what it takes to end it.
pub enum Ongoing {
    /// An agent to start again.
    Down(usize),
    /// A frozen agent, to wake at `until`.
    Frozen {
        /// The agent's process.
        pid: Pid,
        /// When to send SIGCONT.
        until: Instant,
    },
    /// Routes to take back.
    Cut(Fault),
    /// Busy processes to kill at `until`.
    Busy {
        /// The loops.
        children: Vec<Child>,
        /// When they end.
        until: Instant,
    },
    /// A skewed agent, to start again with the real clock.
    Skewed(usize),
    /// A file filling a data dir, to remove.
    Filling(std::path::PathBuf),
    /// A flood to stop.
    Flooding {
        /// Tells the flooding thread to stop.
        stop: Arc<AtomicBool>,
        /// The thread: datagrams sent, connections opened.
        thread: std::thread::JoinHandle<(u64, u64)>,
        /// When it ends.
        until: Instant,
    },
}

/// Begins `fault` on `cluster`.
pub fn begin(cluster: &mut Cluster, fault: &Fault, seed: u64) -> anyhow::Result<Ongoing> {
    Ok(match fault {
        Fault::Kill { host } => {
            cluster.agents[*host].kill9()?;
            Ongoing::Down(*host)
        }
        Fault::Stop { host } => {
            cluster.agents[*host].terminate()?;
            Ongoing::Down(*host)
        }
        Fault::Wipe { host } => {
            let agent = &mut cluster.agents[*host];
            agent.kill9()?;
            let dir = agent
                .spec
                .state_dir
                .as_ref()
                .unwrap_or(&agent.spec.data_dir);
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                // (The log stays: it is the record of the run.)
                if entry.file_name() == "agent.log" {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
            Ongoing::Down(*host)
        }
        Fault::Freeze { host, ms } => {
            let pid = cluster.agents[*host]
                .pid()
                .context("a running agent to freeze")?;
            let pid = Pid::from_raw(i32::try_from(pid)?);
            kill(pid, Signal::SIGSTOP)?;
            Ongoing::Frozen {
                pid,
                until: Instant::now() + Duration::from_millis(*ms),
            }
        }
        Fault::Partition { side } => {
            cluster.net.split(&netns_hosts(side))?;
            Ongoing::Cut(fault.clone())
        }
        Fault::OneWay { side } => {
            cluster.net.block_from(&netns_hosts(side))?;
            Ongoing::Cut(fault.clone())
        }
        Fault::Skew { host, offset_s } => {
            let agent = &mut cluster.agents[*host];
            agent.kill9()?;
            agent.spec.env = vec![
                ("LD_PRELOAD".into(), LIBFAKETIME.into()),
                // (libfaketime's units are s, m, h, d and y: "+3s".)
                ("FAKETIME".into(), format!("{offset_s:+}s")),
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ];
            agent.restart()?;
            Ongoing::Skewed(*host)
        }
        Fault::DiskFull { host } => {
            let agent = &cluster.agents[*host];
            let dir = agent
                .spec
                .state_dir
                .as_ref()
                .unwrap_or(&agent.spec.data_dir);
            let path = dir.join("filler");
            let mut file = std::fs::File::create(&path)?;
            let chunk = vec![0u8; 64 * 1024];
            // Until the disk says no.
            while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
            Ongoing::Filling(path)
        }
        Fault::Cpu { secs } => {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let children = (0..2 * cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .spawn()
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ongoing::Busy {
                children,
                until: Instant::now() + Duration::from_secs(*secs),
            }
        }
        Fault::Flood { host, secs } => {
            let from = cluster.net.ns((host + 1) % cluster.agents.len() + 1);
            let target = cluster.agents[*host].addr;
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::spawn(move || flood(&from, target, &flag, seed));
            Ongoing::Flooding {
                stop,
                thread,
                until: Instant::now() + Duration::from_secs(*secs),
            }
        }
    })
}

/// Ends a fault: waits out its time, then undoes it.
pub fn end(cluster: &mut Cluster, ongoing: Ongoing) -> anyhow::Result<()> {
    let wait = |until: Instant| {
        if let Some(left) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
    };
    match ongoing {
        Ongoing::Down(host) => cluster.agents[host].restart()?,
        Ongoing::Frozen { pid, until } => {
            wait(until);
            kill(pid, Signal::SIGCONT)?;
        }
        Ongoing::Skewed(host) => {
            let agent = &mut cluster.agents[host];
            agent.spec.env.clear();
            agent.restart()?;
        }
        Ongoing::Filling(path) => std::fs::remove_file(path)?,
        Ongoing::Cut(Fault::Partition { side }) => cluster.net.unsplit(&netns_hosts(&side))?,
        Ongoing::Cut(Fault::OneWay { side }) => cluster.net.unblock_from(&netns_hosts(&side))?,
        Ongoing::Cut(_) => {}
        Ongoing::Busy {
            mut children,
            until,
        } => {
            wait(until);
            for child in &mut children {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        Ongoing::Flooding {
            stop,
            thread,
            until,
        } => {
            wait(until);
            stop.store(true, Ordering::Relaxed);
            let (datagrams, connections) = thread
                .join()
                .map_err(|_| anyhow::anyhow!("the flooding thread panicked"))?;
            cluster.note(&format!(
                "flood sent {datagrams} garbage datagrams and opened {connections} idle connections"
            ));
        }
    }
    Ok(())
}

fn netns_hosts(side: &[usize]) -> Vec<usize> {
    side.iter().map(|h| h + 1).collect()
}

/// Floods `target` from inside the namespace `ns` until `stop`: garbage
/// datagrams (about 2,000 a second) and up to 50 idle connections, opened
/// again as the agent closes them. Returns what it sent and opened.
fn flood(ns: &str, target: SocketAddr, stop: &AtomicBool, seed: u64) -> (u64, u64) {
    if crate::netns::enter(ns).is_err() {
        return (0, 0);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(socket) = UdpSocket::bind("0.0.0.0:0") else {
        return (0, 0);
    };
    let (mut datagrams, mut connections) = (0, 0);
    let mut idle: Vec<TcpStream> = Vec::new();
    let mut buf = vec![0u8; 1_400];
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..20 {
            let len = rng.random_range(1..=buf.len());
            rng.fill(&mut buf[..len]);
            if socket.send_to(&buf[..len], target).is_ok() {
                datagrams += 1;
            }
        }
        // A connection the agent closed reads as the end of the stream.
        idle.retain_mut(|c| {
            matches!(c.read(&mut [0u8; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        if idle.len() < 50
            && let Ok(c) = TcpStream::connect_timeout(&target, Duration::from_millis(200))
            && c.set_nonblocking(true).is_ok()
        {
            connections += 1;
            idle.push(c);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (datagrams, connections)
}
