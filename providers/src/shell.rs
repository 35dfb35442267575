//! The `shell` provider (the seed's `bash`): `sh -c <command>`, supervised
//! exactly like `exec`.

use std::time::Duration;

use mob_scheduler::spec::{Params, ProviderKind};

use crate::error::ProviderError;
use crate::exec::{kill_group, spawn_supervised, stop_group};
use crate::logs::LogSink;
use crate::provider::{InstanceSpec, Provider, Spawned, bad_params};
use crate::restart::Exit;

/// `shell`.
#[derive(Debug, Default)]
pub struct ShellProvider;

impl Provider for ShellProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Shell
    }

    fn available(&self) -> bool {
        std::path::Path::new("/bin/sh").exists()
    }

    fn check(&self, instance: &InstanceSpec) -> Result<(), ProviderError> {
        match &instance.spec.params {
            Params::Shell { command, user, .. } if !command.trim().is_empty() => {
                crate::exec::lookup_user(instance, user.as_deref()).map(|_| ())
            }
            Params::Shell { .. } => Err(bad_params(instance, "params.command is missing or empty")),
            other => Err(bad_params(
                instance,
                format!("shell cannot run {} parameters", other.provider()),
            )),
        }
    }

    async fn start(
        &self,
        instance: &InstanceSpec,
        logs: &LogSink,
    ) -> Result<Spawned, ProviderError> {
        self.check(instance)?;
        let Params::Shell { command, cwd, user } = &instance.spec.params else {
            return Err(bad_params(instance, "not shell parameters"));
        };
        let argv = ["/bin/sh".to_owned(), "-c".to_owned(), command.clone()];
        spawn_supervised(instance, &argv, cwd.as_deref(), user.as_deref(), logs)
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
