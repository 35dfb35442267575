//! Serf agents, the peer mob's membership is measured against: a cluster
//! of `serf agent` processes on loopback, and a client of Serf's RPC that
//! reads each agent's member list.
//!
//! Serf's event handlers are coalesced (member events wait for a second
//! of quiet), so a handler's timestamp is late by about a second; its
//! log lines have whole seconds. The member list over RPC is neither:
//! the benchmark polls it every [`POLL`].

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::wait_until;

/// How often a member list is read while waiting for a state.
pub const POLL: Duration = Duration::from_millis(10);

/// One `serf agent` process.
#[derive(Debug)]
pub struct SerfAgent {
    /// Its node name.
    pub name: String,
    /// Its gossip address.
    pub bind: SocketAddr,
    /// Its RPC address.
    pub rpc: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
}

/// What a Serf agent is started with.
#[derive(Debug, Clone)]
pub struct SerfSpec<'a> {
    /// Node name.
    pub name: &'a str,
    /// Gossip address.
    pub bind: SocketAddr,
    /// RPC address.
    pub rpc: SocketAddr,
    /// An agent to join.
    pub join: Option<SocketAddr>,
    /// The base64 key of `-encrypt`, if any.
    pub encrypt: Option<&'a str>,
}

impl SerfAgent {
    /// Starts an agent (default LAN profile), its log in `dir`.
    pub fn start(dir: &Path, spec: &SerfSpec<'_>) -> anyhow::Result<Self> {
        let log = dir.join(format!("{}.serf.log", spec.name));
        let out = std::fs::File::create(&log)?;
        let mut command = Command::new(binary()?);
        command
            .arg("agent")
            .arg(format!("-node={}", spec.name))
            .arg(format!("-bind={}", spec.bind))
            .arg(format!("-rpc-addr={}", spec.rpc))
            .arg("-log-level=info");
        if let Some(join) = spec.join {
            command.arg(format!("-join={join}"));
        }
        if let Some(key) = spec.encrypt {
            command.arg(format!("-encrypt={key}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting serf agent")?;
        Ok(Self {
            name: spec.name.to_owned(),
            bind: spec.bind,
            rpc: spec.rpc,
            child: Some(child),
            log,
        })
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` to the agent (SIGSTOP, SIGCONT, SIGINT).
    pub fn signal(&mut self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = self.pid().context("serf agent not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(())
    }

    /// kill -9.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGINT: a Serf agent leaves the cluster gracefully on it (its
    /// default), then exits; waits for the exit.
    pub fn leave(&mut self) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGINT)?;
        if let Some(mut child) = self.child.take() {
            child.wait()?;
        }
        Ok(())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SerfAgent {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// The `serf` binary: `$SERF_BIN`, or `serf` on the PATH.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SERF_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("serf"))
        .find(|p| p.is_file())
        .context("serf is not installed (apt-get install serf, or set SERF_BIN)")
}

/// `serf version`'s first line, e.g. `Serf v0.8.2-dev`.
pub fn version() -> anyhow::Result<String> {
    let out = Command::new(binary()?).arg("version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("serf").trim().to_owned())
}

/// A fresh key for `-encrypt`, from `serf keygen`.
pub fn keygen() -> anyhow::Result<String> {
    let out = Command::new(binary()?).arg("keygen").output()?;
    if !out.status.success() {
        bail!("serf keygen failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `n` agents on 127.0.0.1 (gossip from `base_port`, RPC from
/// `base_port + 100`), every one joining the first; returns once each
/// sees all `n` alive.
pub fn cluster(
    dir: &Path,
    n: usize,
    base_port: u16,
    encrypt: Option<&str>,
) -> anyhow::Result<Vec<SerfAgent>> {
    let at = |port: usize| -> anyhow::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], u16::try_from(port)?)))
    };
    let mut agents = Vec::new();
    for i in 0..n {
        let name = format!("s{}", i + 1);
        let spec = SerfSpec {
            name: &name,
            bind: at(usize::from(base_port) + i)?,
            rpc: at(usize::from(base_port) + 100 + i)?,
            join: (i > 0).then_some(at(usize::from(base_port))?),
            encrypt,
        };
        agents.push(SerfAgent::start(dir, &spec)?);
        if i == 0 {
            // The others join it: its RPC must be up first.
            wait_until("the first serf agent", Duration::from_secs(10), || {
                Ok(Rpc::connect(agents[0].rpc).is_ok())
            })?;
        }
    }
    for agent in &agents {
        wait_until(
            &format!("{} to see {n} serf members alive", agent.name),
            Duration::from_secs(20),
            || {
                let Ok(mut rpc) = Rpc::connect(agent.rpc) else {
                    return Ok(false);
                };
                Ok(rpc
                    .members()?
                    .iter()
                    .filter(|m| m.status == "alive")
                    .count()
                    == n)
            },
        )?;
    }
    Ok(agents)
}

/// A member as Serf's RPC lists it (the fields read here).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SerfMember {
    /// Node name.
    pub name: String,
    /// `alive`, `leaving`, `left` or `failed`.
    pub status: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Header<'a> {
    command: &'a str,
    seq: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Response {
    seq: u64,
    error: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Members {
    members: Vec<SerfMember>,
}

/// A connection to one agent's RPC (msgpack: a header, then a body).
pub struct Rpc {
    stream: TcpStream,
    seq: u64,
}

impl Rpc {
    /// Connects and shakes hands.
    pub fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        let mut rpc = Self { stream, seq: 0 };
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Handshake {
            version: u32,
        }
        rpc.request("handshake", Some(&Handshake { version: 1 }))?;
        Ok(rpc)
    }

    fn request<B: Serialize>(&mut self, command: &str, body: Option<&B>) -> anyhow::Result<()> {
        let seq = self.seq;
        self.seq += 1;
        let mut bytes = rmp_serde::to_vec_named(&Header { command, seq })?;
        if let Some(body) = body {
            bytes.extend(rmp_serde::to_vec_named(body)?);
        }
        self.stream.write_all(&bytes)?;
        let response: Response = rmp_serde::from_read(&mut self.stream)?;
        if response.seq != seq {
            bail!("serf rpc: answer {} to request {seq}", response.seq);
        }
        if !response.error.is_empty() {
            bail!("serf rpc {command}: {}", response.error);
        }
        Ok(())
    }

    /// The agent's member list.
    pub fn members(&mut self) -> anyhow::Result<Vec<SerfMember>> {
        self.request::<()>("members", None)?;
        let members: Members = rmp_serde::from_read(&mut self.stream)?;
        Ok(members.members)
    }

    /// The status this agent gives `node`, if it lists it.
    pub fn status_of(&mut self, node: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .members()?
            .into_iter()
            .find(|m| m.name == node)
            .map(|m| m.status))
    }
}
