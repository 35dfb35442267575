//! The `exec` provider: a program run directly, as its own session and
//! process group, killed if the agent dies.
//!
//! # The one `unsafe` block
//!
//! Between fork and exec the child calls `setsid` (own session and process
//! group, so stop reaches every process it spawned) and
//! `prctl(PR_SET_PDEATHSIG, SIGKILL)` (so an agent crash leaves no orphan),
//! then checks that its parent is still the agent (the agent may have died
//! before the prctl). `pre_exec` is `unsafe` because the closure runs in
//! the forked child of a multi-threaded process; it only makes
//! async-signal-safe system calls and allocates nothing.
//!
//! It also marks every file descriptor above 2 close-on-exec
//! (`close_range`, or `fcntl` one by one on kernels without it): the
//! agent's own parent may have left descriptors open that no workload
//! should hold.
//!
//! PDEATHSIG fires when the *thread* that forked dies, so instances are
//! only ever spawned from the runtime's long-lived worker threads, never
//! from `spawn_blocking`.
//!
//! # The environment
//!
//! Like systemd's services, an instance starts from a clean environment:
//! `PATH` (the agent's, or a default), `HOME`, `LANG`, `LANGUAGE`, `LC_*`
//! and `TZ` (the agent's), `USER` and `LOGNAME` (and `HOME`) of
//! `params.user` when given, then the spec's `env`, then the `MOB_*`
//! variables. `inherit_env = true` gives it the agent's whole environment
//! instead, less `MOB_KEY`. (The docker client always gets the agent's:
//! the container's environment is the spec's `env` and the `MOB_*`
//! variables of the instance.)

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use mob_scheduler::spec::{Params, ProviderKind};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::error::ProviderError;
use crate::logs::{LogSink, Stream};
use crate::provider::{InstanceSpec, Provider, Spawned, bad_params, exit_of};
use crate::restart::Exit;

/// Runs `argv` as a supervised child: own session, parent-death signal,
/// stdout and stderr into `logs`. Shared by `exec`, `shell` and `docker`.
pub(crate) fn spawn_supervised(
    instance: &InstanceSpec,
    argv: &[String],
    cwd: Option<&str>,
    user: Option<&str>,
    logs: &LogSink,
) -> Result<Spawned, ProviderError> {
    let service = instance.service().to_owned();
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| bad_params(instance, "params.command is empty"))?;
    let account = lookup_user(instance, user)?;
    let mut command = Command::new(program);
    set_instance_env(&mut command, instance, account.as_ref());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    if let Some(found) = &account {
        command.uid(found.uid.as_raw()).gid(found.gid.as_raw());
    }
    let agent = nix::unistd::getpid();
    #[expect(
        unsafe_code,
        reason = "setsid and PR_SET_PDEATHSIG between fork and exec; see the module docs"
    )]
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe functions (setsid, prctl, getppid,
    // close_range, fcntl); it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || {
            // (stdin, stdout and stderr are in place already.)
            let marked = nix::libc::close_range(3, u32::MAX, nix::libc::CLOSE_RANGE_CLOEXEC as i32);
            if marked != 0 {
                for fd in 3..MAX_FD_WITHOUT_CLOSE_RANGE {
                    nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC);
                }
            }
            nix::unistd::setsid()?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != agent {
                // The agent died before the prctl: don't outlive it.
                return Err(std::io::Error::other("agent exited during spawn"));
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| ProviderError::Spawn {
        service: service.clone(),
        program: program.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(logs.clone().pump(Stream::Stdout, out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(logs.clone().pump(Stream::Stderr, err));
    }
    Ok(Spawned {
        child,
        pid,
        group: pid,
    })
}

/// Descriptors marked close-on-exec one by one where `close_range` is
/// missing (kernels before 5.11).
const MAX_FD_WITHOUT_CLOSE_RANGE: i32 = 4096;

/// Where `PATH` comes from when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Gives `command` the environment of `instance` (run as `account`): a
/// clean one unless the spec inherits the agent's (docker passes the
/// spec's through `docker run`), then the spec's `env` and the `MOB_*`
/// variables, never `MOB_KEY`. Instances and their check commands get it.
pub(crate) fn set_instance_env(
    command: &mut Command,
    instance: &InstanceSpec,
    account: Option<&nix::unistd::User>,
) {
    let clean =
        !instance.spec.inherit_env && instance.spec.params.provider() != ProviderKind::Docker;
    if clean {
        command.env_clear().envs(clean_env(account));
    }
    command
        .envs(&instance.spec.env)
        .envs(instance.vars())
        .env("MOB_AGENT", &instance.agent)
        .env(crate::leftovers::MARKER_ENV, &instance.agent)
        // The agent may have its cluster key from the environment: no
        // workload gets it.
        .env_remove("MOB_KEY");
}

/// The clean environment of an instance (see the module docs).
fn clean_env(account: Option<&nix::unistd::User>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            matches!(&*k, "HOME" | "LANG" | "LANGUAGE" | "TZ") || k.starts_with("LC_")
        })
        .collect();
    env.push((
        "PATH".into(),
        std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    ));
    if let Some(account) = account {
        env.retain(|(k, _)| k != "HOME");
        env.push(("HOME".into(), account.dir.clone().into_os_string()));
        env.push(("USER".into(), account.name.clone().into()));
        env.push(("LOGNAME".into(), account.name.clone().into()));
    }
    env
}

/// The account `params.user` names, if any; a name with no account is a
/// bad parameter (checked before anything starts).
pub(crate) fn lookup_user(
    instance: &InstanceSpec,
    user: Option<&str>,
) -> Result<Option<nix::unistd::User>, ProviderError> {
    let Some(user) = user else {
        return Ok(None);
    };
    nix::unistd::User::from_name(user)
        .map_err(|e| bad_params(instance, format!("params.user {user:?}: {e}")))?
        .ok_or_else(|| bad_params(instance, format!("params.user {user:?}: no such user")))
        .map(Some)
}

/// SIGTERM to the group, SIGKILL after `timeout`; then SIGKILL to whatever
/// is left of the group (grandchildren that ignored TERM).
pub(crate) async fn stop_group(spawned: &mut Spawned, timeout: Duration) -> Exit {
    let group = group_of(spawned);
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGTERM);
    }
    let exit = match tokio::time::timeout(timeout, spawned.child.wait()).await {
        Ok(Ok(status)) => exit_of(status),
        _ => {
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            match spawned.child.wait().await {
                Ok(status) => exit_of(status),
                Err(_) => Exit::Signal(Signal::SIGKILL as i32),
            }
        }
    };
    kill_group(spawned);
    exit
}

/// SIGKILL to the instance's process group (stragglers after its leader
/// ended). A group that is gone already is fine.
pub(crate) fn kill_group(spawned: &Spawned) {
    if let Some(group) = group_of(spawned) {
        let _ = killpg(group, Signal::SIGKILL);
    }
}

fn group_of(spawned: &Spawned) -> Option<Pid> {
    i32::try_from(spawned.group)
        .ok()
        .filter(|p| *p > 0)
        .map(Pid::from_raw)
}

/// `exec`: `command` as argv.
#[derive(Debug, Default)]
pub struct ExecProvider;

impl Provider for ExecProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Exec
    }

    fn available(&self) -> bool {
        true
    }

    fn check(&self, instance: &InstanceSpec) -> Result<(), ProviderError> {
        match &instance.spec.params {
            Params::Exec { command, user, .. } if !command.is_empty() && !command[0].is_empty() => {
                lookup_user(instance, user.as_deref()).map(|_| ())
            }
            Params::Exec { .. } => Err(bad_params(instance, "params.command is missing or empty")),
            other => Err(bad_params(
                instance,
                format!("exec cannot run {} parameters", other.provider()),
            )),
        }
    }

    async fn start(
        &self,
        instance: &InstanceSpec,
        logs: &LogSink,
    ) -> Result<Spawned, ProviderError> {
        self.check(instance)?;
        let Params::Exec { command, cwd, user } = &instance.spec.params else {
            return Err(bad_params(instance, "not exec parameters"));
        };
        spawn_supervised(instance, command, cwd.as_deref(), user.as_deref(), logs)
    }

    async fn stop(
        &self,
        _instance: &InstanceSpec,
        spawned: &mut Spawned,
        timeout: Duration,
    ) -> Exit {
        stop_group(spawned, timeout).await
    }

    async fn reap(&self, _instance: &InstanceSpec, spawned: &Spawned) {
        kill_group(spawned);
    }
}
