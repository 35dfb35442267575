//! The `docker` provider, driving the `docker` CLI.
//!
//! Why the CLI and not the Engine API (`bollard`): an attached `docker run`
//! is one child process that streams the container's stdout and stderr and
//! exits with its exit code, so a container is supervised by exactly the
//! same code path as a process (own session, parent-death signal, log
//! pumps, wait), with no extra dependency tree. The cost is a `docker`
//! binary on the node and a process per container.
//!
//! Containers are named `mob-<service>-<slot>` and labelled `mob.service`,
//! `mob.slot`, `mob.node`, and `mob.agent` (the agent's identity on the
//! host, its control socket: node names need not be unique across agents
//! sharing one engine). Killing the client does not stop a container
//! (dockerd owns it), so stop is `docker stop -t <stop_timeout>` and then
//! `docker rm -f`; a stale container of the same name is removed before a
//! start; and at agent start every container labelled with this agent is
//! removed ([`DockerProvider::remove_agent_containers`]) before the node's
//! instances start again. While an agent is dead (kill -9), its containers
//! keep running until it returns or they are removed by hand: the cluster
//! may meanwhile start a replacement elsewhere.

use std::process::Stdio;
use std::time::Duration;

use mob_scheduler::spec::{Params, ProviderKind};
use tokio::process::Command;
use tracing::{info, warn};

use crate::error::ProviderError;
use crate::exec::{kill_group, spawn_supervised};
use crate::logs::LogSink;
use crate::provider::{InstanceSpec, Provider, Spawned, bad_params, exit_of};
use crate::restart::Exit;

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// `docker`.
#[derive(Debug)]
pub struct DockerProvider {
    available: bool,
}

/// The container name of an instance: `mob-<service>-<slot>-<agent>`, the
/// last part a hash of the agent's identity, so that two agents on one
/// Docker Engine (two clusters, or a handover between two agents of one
/// host) never take each other's containers for stale ones.
pub fn container_name(instance: &InstanceSpec) -> String {
    let agent = mob_scheduler::hash::stable_hash(instance.agent.as_bytes()) as u32;
    format!("mob-{}-{}-{agent:08x}", instance.service(), instance.slot)
}

/// Runs `docker args...` to completion within `timeout`; stdout on success.
async fn docker(args: &[&str], timeout: Duration) -> Result<String, String> {
    let run = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(format!(
            "docker {} timed out",
            args.first().copied().unwrap_or("")
        )),
        Ok(Err(e)) => Err(format!("cannot run docker: {e}")),
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
    }
}

impl DockerProvider {
    /// Probes the Docker Engine; unavailable (with a log line saying why)
    /// when the CLI is missing or the engine doesn't answer.
    pub async fn probe() -> Self {
        match docker(
            &["version", "--format", "{{.Server.Version}}"],
            PROBE_TIMEOUT,
        )
        .await
        {
            Ok(version) => {
                info!(
                    provider = "docker",
                    version = version.trim(),
                    "docker engine available"
                );
                Self { available: true }
            }
            Err(e) => {
                warn!(provider = "docker", error = %e, "docker engine not reachable; this node will not offer docker");
                Self { available: false }
            }
        }
    }

    /// Removes every container labelled as this agent's (left from an
    /// earlier run). Returns their names.
    pub async fn remove_agent_containers(&self, agent: &str) -> Vec<String> {
        if !self.available {
            return Vec::new();
        }
        let filter = format!("label=mob.agent={agent}");
        let names = match docker(
            &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
            CLI_TIMEOUT,
        )
        .await
        {
            Ok(out) => out
                .lines()
                .map(str::to_owned)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>(),
            Err(e) => {
                warn!(provider = "docker", error = %e, "cannot list this node's containers");
                return Vec::new();
            }
        };
        for name in &names {
            if let Err(e) = docker(&["rm", "-f", name], CLI_TIMEOUT).await {
                warn!(provider = "docker", container = %name, error = %e, "cannot remove a leftover container");
            }
        }
        names
    }

    fn argv(instance: &InstanceSpec) -> Result<Vec<String>, ProviderError> {
        let Params::Docker {
            image,
            args,
            ports,
            volumes,
        } = &instance.spec.params
        else {
            return Err(bad_params(instance, "not docker parameters"));
        };
        let mut argv: Vec<String> = ["docker", "run", "--name"].map(str::to_owned).to_vec();
        argv.push(container_name(instance));
        for (k, v) in [
            ("mob.service", instance.service().to_owned()),
            ("mob.slot", instance.slot.to_string()),
            ("mob.node", instance.node.clone()),
            ("mob.agent", instance.agent.clone()),
        ] {
            argv.push("--label".into());
            argv.push(format!("{k}={v}"));
        }
        for (k, v) in instance.spec.env.iter().chain(&instance.vars()) {
            argv.push("--env".into());
            argv.push(format!("{k}={v}"));
        }
        // Named ports: the host port to the container port (by default
        // the same number).
        for (name, host) in &instance.ports {
            let to = instance
                .spec
                .ports
                .get(name)
                .and_then(|p| p.to)
                .unwrap_or(*host);
            argv.push("--publish".into());
            argv.push(format!("{host}:{to}"));
        }
        for p in ports {
            argv.push("--publish".into());
            argv.push(p.clone());
        }
        for v in volumes {
            argv.push("--volume".into());
            argv.push(v.clone());
        }
        argv.push(image.clone());
        argv.extend(args.iter().cloned());
        Ok(argv)
    }
}

impl Provider for DockerProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Docker
    }

    fn available(&self) -> bool {
        self.available
    }

    fn check(&self, instance: &InstanceSpec) -> Result<(), ProviderError> {
        match &instance.spec.params {
            Params::Docker { image, .. } if !image.trim().is_empty() => Ok(()),
            Params::Docker { .. } => Err(bad_params(instance, "params.image is missing or empty")),
            other => Err(bad_params(
                instance,
                format!("docker cannot run {} parameters", other.provider()),
            )),
        }
    }

    async fn start(
        &self,
        instance: &InstanceSpec,
        logs: &LogSink,
    ) -> Result<Spawned, ProviderError> {
        self.check(instance)?;
        if !self.available {
            return Err(ProviderError::Unavailable("docker".into()));
        }
        let name = container_name(instance);
        // A stale container of this name (agent killed, crash) goes first.
        let _ = docker(&["rm", "-f", &name], CLI_TIMEOUT).await;
        let argv = Self::argv(instance)?;
        let mut spawned = spawn_supervised(instance, &argv, None, None, logs)?;
        // Report the container's init pid once it runs; the client's pid
        // until then.
        for _ in 0..50 {
            if let Ok(Some(_)) = spawned.child.try_wait() {
                break;
            }
            if let Ok(pid) = docker(
                &["inspect", "--format", "{{.State.Pid}}", &name],
                CLI_TIMEOUT,
            )
            .await
                && let Ok(pid) = pid.trim().parse::<u32>()
                && pid > 0
            {
                spawned.pid = pid;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(spawned)
    }

    async fn stop(
        &self,
        instance: &InstanceSpec,
        spawned: &mut Spawned,
        timeout: Duration,
    ) -> Exit {
        let name = container_name(instance);
        let secs = timeout.as_secs().max(1).to_string();
        if let Err(e) = docker(&["stop", "-t", &secs, &name], timeout + CLI_TIMEOUT).await {
            warn!(service = %instance.service(), slot = instance.slot, error = %e, "docker stop failed");
        }
        let exit = match tokio::time::timeout(CLI_TIMEOUT, spawned.child.wait()).await {
            Ok(Ok(status)) => exit_of(status),
            _ => Exit::Signal(9),
        };
        self.reap(instance, spawned).await;
        exit
    }

    async fn reap(&self, instance: &InstanceSpec, spawned: &Spawned) {
        let name = container_name(instance);
        let _ = docker(&["rm", "-f", &name], CLI_TIMEOUT).await;
        kill_group(spawned);
    }
}

impl DockerProvider {
    /// A docker provider turned off by configuration.
    pub fn disabled() -> Self {
        Self { available: false }
    }
}
