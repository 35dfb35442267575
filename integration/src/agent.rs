//! One real `mob-agent run` process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::poll::wait_until;

/// The `mob-agent` binary: `$MOB_AGENT_BIN`, or the workspace's debug
/// build, built once per test process.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("MOB_AGENT_BIN") {
            return PathBuf::from(bin);
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "mob-agent"])
            .current_dir(&workspace)
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => panic!("cargo build -p mob-agent failed: {other:?}"),
        }
        workspace.join("target/debug/mob-agent")
    })
    .clone()
}

/// A row of `members --json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// Epoch.
    pub epoch: u64,
    /// alive, suspect, down or left.
    pub state: String,
    /// Slots it holds, in the answering agent's table.
    pub slots: usize,
}

/// How to start an agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// `--name`.
    pub name: String,
    /// `--bind`; `127.0.0.1:0` picks a free port.
    pub bind: SocketAddr,
    /// `--join` seeds.
    pub join: Vec<SocketAddr>,
    /// Where the test keeps the agent's log and ready file; also its
    /// `--data-dir` unless `state_dir` is given.
    pub data_dir: PathBuf,
    /// `--data-dir`, when it is not `data_dir` (a small tmpfs, say).
    pub state_dir: Option<PathBuf>,
    /// `--key-file`.
    pub key_file: PathBuf,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Extra arguments to `run`.
    pub extra: Vec<String>,
    /// Extra environment of the agent.
    pub env: Vec<(String, String)>,
    /// `--dns`: by default a free port on loopback (agents share hosts).
    pub dns: String,
    /// `--http`: by default a free port on loopback.
    pub http: String,
}

impl AgentSpec {
    /// An agent on loopback with a free port, data dir `<root>/<name>`.
    pub fn local(name: &str, root: &Path, key_file: &Path) -> Self {
        Self {
            name: name.to_owned(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            join: Vec::new(),
            data_dir: root.join(name),
            state_dir: None,
            key_file: key_file.to_owned(),
            netns: None,
            extra: Vec::new(),
            env: Vec::new(),
            dns: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
        }
    }
}

/// A running agent; killed (SIGKILL) on drop. When dropped during a panic
/// its log is printed, so a failing test shows what every agent saw.
pub struct Agent {
    /// How it was started.
    pub spec: AgentSpec,
    /// Its advertised gossip address, from the ready file.
    pub addr: SocketAddr,
    /// Its control socket.
    pub socket: PathBuf,
    /// Where its DNS listens, from the ready file.
    pub dns: Option<SocketAddr>,
    /// Where its HTTP API listens, from the ready file.
    pub http: Option<SocketAddr>,
    child: Option<Child>,
}

#[derive(Deserialize)]
struct Ready {
    addr: SocketAddr,
    socket: PathBuf,
    dns: Option<SocketAddr>,
    #[serde(default)]
    http: Option<SocketAddr>,
}

impl Agent {
    /// Starts the agent and waits (10 s at most) for its ready file.
    pub fn start(spec: AgentSpec) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&spec.data_dir)?;
        let ready = spec.data_dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.data_dir.join("agent.log"))?;
        let mut command = match &spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        command
            .arg("run")
            .args(["--name", &spec.name])
            .args(["--bind", &spec.bind.to_string()])
            .arg("--data-dir")
            .arg(spec.state_dir.as_ref().unwrap_or(&spec.data_dir))
            .arg("--key-file")
            .arg(&spec.key_file)
            .arg("--ready-file")
            .arg(&ready)
            .args(["--log-format", "json"])
            .args(["--dns", &spec.dns])
            .args(["--http", &spec.http]);
        for seed in &spec.join {
            command.args(["--join", &seed.to_string()]);
        }
        command
            .args(&spec.extra)
            .env(
                "RUST_LOG",
                std::env::var("MOB_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("MOB_KEY")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command.spawn().context("spawning mob-agent")?;
        let mut agent = Self {
            spec,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            socket: PathBuf::new(),
            dns: None,
            http: None,
            child: Some(child),
        };
        let mut parsed = None;
        let mut exited = None;
        let waited = wait_until("the ready file", Duration::from_secs(10), || {
            if let Some(child) = agent.child.as_mut() {
                exited = child.try_wait()?;
            }
            if exited.is_some() {
                return Ok(true);
            }
            let Ok(text) = std::fs::read_to_string(&ready) else {
                return Ok(false);
            };
            parsed = Some(serde_json::from_str::<Ready>(&text)?);
            Ok(true)
        });
        let waited = match exited {
            Some(status) => Err(anyhow::anyhow!("mob-agent exited with {status}")),
            None => waited,
        };
        if let Err(e) = waited {
            agent.dump_log();
            return Err(e);
        }
        let ready = parsed.context("ready file")?;
        agent.addr = ready.addr;
        agent.socket = ready.socket;
        agent.dns = ready.dns;
        agent.http = ready.http;
        Ok(agent)
    }

    /// Name of the node.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs a CLI subcommand against this agent's socket; stdout on success.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(binary())
            .args(args)
            .arg("--agent")
            .arg(&self.socket)
            .output()?;
        if !out.status.success() {
            bail!(
                "mob-agent {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Runs a CLI subcommand with `input` on stdin; the whole output,
    /// whatever the exit status.
    pub fn cli_with_input(
        &self,
        args: &[&str],
        input: &str,
    ) -> anyhow::Result<std::process::Output> {
        use std::io::Write;
        let mut child = Command::new(binary())
            .args(args)
            .arg("--agent")
            .arg(&self.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// `deploy -` with `spec` on stdin; stdout on success.
    pub fn deploy(&self, spec: &str) -> anyhow::Result<String> {
        let out = self.cli_with_input(&["deploy", "-"], spec)?;
        if !out.status.success() {
            bail!(
                "deploy failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `services --json`.
    pub fn services(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(serde_json::from_str(&self.cli(&["services", "--json"])?)?)
    }

    /// Names of the services this agent lists.
    pub fn service_names(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .services()?
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// `members --json`.
    pub fn members(&self) -> anyhow::Result<Vec<Member>> {
        Ok(serde_json::from_str(&self.cli(&["members", "--json"])?)?)
    }

    /// The state this agent reports for `name`, if listed.
    pub fn state_of(&self, name: &str) -> anyhow::Result<Option<Member>> {
        Ok(self.members()?.into_iter().find(|m| m.name == name))
    }

    /// `stats --json`.
    pub fn stats(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.cli(&["stats", "--json"])?)?)
    }

    /// Whether this agent lists exactly `names`, all alive.
    pub fn sees_alive(&self, names: &[&str]) -> anyhow::Result<bool> {
        let members = self.members()?;
        Ok(members.len() == names.len()
            && names
                .iter()
                .all(|n| members.iter().any(|m| m.name == *n && m.state == "alive")))
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then wait (5 s at most) for a clean exit.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        kill(pid, Signal::SIGTERM)?;
        let mut status = None;
        wait_until("the agent to exit", Duration::from_secs(5), || {
            status = child.try_wait()?;
            Ok(status.is_some())
        })?;
        match status {
            Some(s) if s.success() => Ok(()),
            other => bail!("agent exited with {other:?}"),
        }
    }

    /// Starts the agent again with the same spec (same data dir); binds the
    /// same address it had, so peers see the same member.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9()?;
        let mut spec = self.spec.clone();
        spec.bind = self.addr;
        let fresh = Agent::start(spec)?;
        *self = fresh;
        Ok(())
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.spec.data_dir.join("agent.log")).unwrap_or_default()
    }

    /// Log lines (JSON objects) whose `message` is `message`.
    pub fn log_events(&self, message: &str) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Prints the log to stderr.
    pub fn dump_log(&self) {
        eprintln!(
            "===== log of {} ({}) =====\n{}",
            self.spec.name,
            self.addr,
            self.log()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // MOB_DUMP_LOGS keeps the logs of a passing run too, to read its timing.
        if std::thread::panicking() || std::env::var_os("MOB_DUMP_LOGS").is_some() {
            self.dump_log();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether every agent lists exactly `names`, all alive.
pub fn all_see_alive(agents: &[Agent], names: &[&str]) -> anyhow::Result<bool> {
    for agent in agents {
        if !agent.sees_alive(names)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes a fresh key (from `mob-agent keygen`) to `path`.
pub fn new_key_file(path: &Path) -> anyhow::Result<PathBuf> {
    let out = Command::new(binary()).arg("keygen").output()?;
    if !out.status.success() {
        bail!(
            "mob-agent keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(path, &out.stdout)?;
    Ok(path.to_owned())
}

/// Starts `n` agents `n1..=n` on loopback with one key; all join `n1`.
/// Returns once every agent lists all `n` as alive (20 s at most).
pub fn local_cluster(root: &Path, n: usize) -> anyhow::Result<Vec<Agent>> {
    local_cluster_with(root, n, &[])
}

/// [`local_cluster`] with extra `run` arguments for every agent.
pub fn local_cluster_with(root: &Path, n: usize, extra: &[String]) -> anyhow::Result<Vec<Agent>> {
    local_cluster_on(root, n, None, extra)
}

/// [`local_cluster_with`], agent `i` (from 0) bound to port `base + i` when
/// `base` is given: below 32768, the kernel's ephemeral range, which the
/// agents' outgoing connections take ports from (a large cluster on port
/// 0 would sometimes collide with them).
pub fn local_cluster_on(
    root: &Path,
    n: usize,
    base: Option<u16>,
    extra: &[String],
) -> anyhow::Result<Vec<Agent>> {
    let key = new_key_file(&root.join("cluster.key"))?;
    let mut agents: Vec<Agent> = Vec::with_capacity(n);
    for i in 1..=n {
        let mut spec = AgentSpec::local(&format!("n{i}"), root, &key);
        if let Some(base) = base {
            let port = u16::try_from(i - 1).ok().and_then(|i| base.checked_add(i));
            let port = port.ok_or_else(|| anyhow::anyhow!("port {base} + {i} is out of range"))?;
            spec.bind = SocketAddr::from(([127, 0, 0, 1], port));
        }
        if let Some(seed) = agents.first() {
            spec.join.push(seed.addr);
        }
        spec.extra = extra.to_vec();
        agents.push(Agent::start(spec)?);
    }
    let names: Vec<String> = agents.iter().map(|a| a.name().to_owned()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_until(
        "every agent to see every agent alive",
        Duration::from_secs(20 + n as u64 / 2),
        || all_see_alive(&agents, &names),
    )?;
    Ok(agents)
}

/// Pids of live processes whose argv contains `arg` (the whole machine:
/// agents in network namespaces share the pid namespace).
pub fn processes_with_arg(arg: &str) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|(_, argv)| argv.iter().any(|a| a == arg.as_bytes()))
        .map(|(pid, _)| pid)
        .collect()
}

/// For each of `args`, how many live processes have it in their argv: one
/// scan of `/proc` for all of them.
pub fn count_processes_with_args(args: &[String]) -> Vec<usize> {
    pids_with_args(args).iter().map(Vec::len).collect()
}

/// For each of `args`, the pids of the live processes that have it in
/// their argv: one scan of `/proc` for all of them.
pub fn pids_with_args(args: &[String]) -> Vec<Vec<u32>> {
    let mut pids = vec![Vec::new(); args.len()];
    for (pid, argv) in live_processes() {
        for (found, arg) in pids.iter_mut().zip(args) {
            if argv.iter().any(|a| a == arg.as_bytes()) {
                found.push(pid);
            }
        }
    }
    pids
}

/// Every live (not zombie) process with its argv.
fn live_processes() -> Vec<(u32, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(true);
        if !zombie {
            out.push((
                pid,
                cmdline.split(|b| *b == 0).map(<[u8]>::to_vec).collect(),
            ));
        }
    }
    out
}
