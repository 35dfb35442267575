//! One probe of a health check ([`mob_scheduler::check`]): an HTTP GET, a
//! TCP connect, or a command, each bounded by the check's timeout. What
//! the results mean is [`mob_scheduler::check::Health`]'s to decide.

use std::process::Stdio;
use std::time::Duration;

use mob_scheduler::check::{Check, Probe};
use mob_scheduler::spec::{Params, ProviderKind};
use tokio::process::Command;

use crate::docker::container_name;
use crate::provider::InstanceSpec;

/// Runs one probe of `check` against `instance`: `Ok` if it passed, else
/// why not (shown in the agent's log).
pub async fn probe(check: &Check, instance: &InstanceSpec) -> Result<(), String> {
    let timeout = check.timeout;
    let run = async {
        match &check.probe {
            Probe::Http(url) => http(url.clone(), timeout).await,
            Probe::Tcp(addr) => tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map(drop)
                .map_err(|e| format!("connect to {addr}: {e}")),
            Probe::Command(argv) => command(argv, instance).await,
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| {
            let what = match &check.probe {
                Probe::Http(url) => format!("GET {url}"),
                Probe::Tcp(addr) => format!("connect to {addr}"),
                Probe::Command(argv) => format!("{:?}", argv.join(" ")),
            };
            Err(format!(
                "{what}: no answer within {} ms",
                timeout.as_millis()
            ))
        })
}

/// A GET of `url`: a 2xx or 3xx status passes (redirects are not
/// followed: the answer itself counts).
async fn http(url: String, timeout: Duration) -> Result<(), String> {
    let get = move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        match agent.get(&url).call() {
            Ok(response) if matches!(response.status().as_u16(), 200..=399) => Ok(()),
            Ok(response) => Err(format!("GET {url}: status {}", response.status())),
            Err(e) => Err(format!("GET {url}: {e}")),
        }
    };
    tokio::task::spawn_blocking(get)
        .await
        .unwrap_or_else(|e| Err(format!("probe task failed: {e}")))
}

/// Runs `argv` beside the instance (inside its container for docker):
/// exit status 0 passes. Killed if the probe times out.
async fn command(argv: &[String], instance: &InstanceSpec) -> Result<(), String> {
    let mut command = if instance.spec.params.provider() == ProviderKind::Docker {
        let mut c = Command::new("docker");
        c.arg("exec")
            .arg(container_name(instance.service(), instance.slot))
            .args(argv);
        c
    } else {
        let (program, args) = argv.split_first().ok_or("the command is empty")?;
        let mut c = Command::new(program);
        // The instance's environment, as the instance gets it.
        if !instance.spec.inherit_env {
            c.env_clear().envs(crate::exec::clean_env(None));
        }
        c.args(args)
            .envs(&instance.spec.env)
            .env("MOB_SERVICE", instance.service())
            .env("MOB_SLOT", instance.slot.to_string())
            .env("MOB_NODE", &instance.node)
            .env_remove("MOB_KEY");
        if let Params::Exec { cwd: Some(cwd), .. } | Params::Shell { cwd: Some(cwd), .. } =
            &instance.spec.params
        {
            c.current_dir(cwd);
        }
        c
    };
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("cannot run {:?}: {e}", argv.first()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{:?} exited with {status}", argv.join(" ")))
    }
}
