//! The `Provider` trait: how a kind of service is started and stopped.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use mob_scheduler::ServiceSpec;
use mob_scheduler::spec::ProviderKind;
use tokio::process::Child;

use crate::error::ProviderError;
use crate::logs::LogSink;
use crate::restart::Exit;

/// One instance to run: a slot of a service on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// This node's name (labels containers).
    pub node: String,
    /// This agent's identity on the host (see [`crate::leftovers`]).
    pub agent: String,
    /// Slot number.
    pub slot: u32,
    /// The service, its `${…}` interpolated for this instance.
    pub spec: ServiceSpec,
    /// The IP this node advertises.
    pub ip: IpAddr,
    /// Host ports by name.
    pub ports: BTreeMap<String, u16>,
}

impl InstanceSpec {
    /// Service name.
    pub fn service(&self) -> &str {
        &self.spec.name
    }

    /// `MOB_*` variables of the instance: its node, slot, IP and ports.
    pub fn vars(&self) -> mob_scheduler::interpolate::Vars {
        mob_scheduler::interpolate::vars(&self.spec, &self.node, self.slot, self.ip, &self.ports)
    }
}

/// A started instance: the process the supervisor waits on.
#[derive(Debug)]
pub struct Spawned {
    /// The process (for docker, the attached `docker run` client).
    pub child: Child,
    /// Pid reported for the instance (for docker, the container's init).
    pub pid: u32,
    /// Process group of the spawned process (its own pid: it called
    /// `setsid`); what stop signals.
    pub group: u32,
}

/// Starts and stops instances of one kind.
pub trait Provider: Send + Sync {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// Whether it can run anything on this node.
    fn available(&self) -> bool;

    /// Checks the parameters without starting anything.
    fn check(&self, instance: &InstanceSpec) -> Result<(), ProviderError>;

    /// Starts the instance, its output going to `logs`.
    fn start(
        &self,
        instance: &InstanceSpec,
        logs: &LogSink,
    ) -> impl Future<Output = Result<Spawned, ProviderError>> + Send;

    /// Stops a running instance: gently, then by force after `timeout`.
    /// Returns how it ended.
    fn stop(
        &self,
        instance: &InstanceSpec,
        spawned: &mut Spawned,
        timeout: Duration,
    ) -> impl Future<Output = Exit> + Send;

    /// Cleans up after an instance whose process ended by itself (stray
    /// processes of its group, a stopped container).
    fn reap(&self, instance: &InstanceSpec, spawned: &Spawned) -> impl Future<Output = ()> + Send;
}

/// A [`ProviderError::BadParams`] for `instance`.
pub(crate) fn bad_params(instance: &InstanceSpec, message: impl Into<String>) -> ProviderError {
    ProviderError::BadParams {
        service: instance.service().to_owned(),
        message: message.into(),
    }
}

/// The exit of a finished process.
pub fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(-1),
    }
}
