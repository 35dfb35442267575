//! The supervisor: owns this node's instances, runs each through its
//! [`Lifecycle`], and reports every transition on a channel (for the
//! table's `status/` records).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mob_scheduler::ServiceSpec;
use mob_scheduler::check::{Health, Verdict};
use mob_scheduler::record::InstanceState;
use mob_scheduler::spec::ProviderKind;
use rand::RngExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::docker::DockerProvider;
use crate::error::ProviderError;
use crate::exec::ExecProvider;
use crate::lifecycle::{Lifecycle, Next};
use crate::logs::{LogConfig, LogSink};
use crate::ports::PortAllocator;
use crate::probe::probe;
use crate::provider::{InstanceSpec, Provider, exit_of};
use crate::restart::{Exit, RestartRules};
use crate::shell::ShellProvider;

/// One transition of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Service name.
    pub service: String,
    /// Slot.
    pub slot: u32,
    /// New state.
    pub state: InstanceState,
    /// Pid while running.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u32,
    /// How the last run ended.
    pub exit: Option<Exit>,
    /// Why the last start failed, while starts fail.
    pub error: Option<String>,
    /// When.
    pub at: SystemTime,
    /// Its host ports by name.
    pub ports: BTreeMap<String, u16>,
}

/// The providers of this node.
pub struct Providers {
    exec: ExecProvider,
    shell: ShellProvider,
    docker: DockerProvider,
    offered: Vec<ProviderKind>,
}

impl Providers {
    /// Finds what this node can run, limited to `allowed` (all when empty).
    pub async fn detect(allowed: &[ProviderKind]) -> Self {
        let wanted = |k: ProviderKind| allowed.is_empty() || allowed.contains(&k);
        let docker = if wanted(ProviderKind::Docker) {
            DockerProvider::probe().await
        } else {
            DockerProvider::disabled()
        };
        let (exec, shell) = (ExecProvider, ShellProvider);
        let offered = [
            (ProviderKind::Exec, exec.available()),
            (ProviderKind::Shell, shell.available()),
            (ProviderKind::Docker, docker.available()),
        ]
        .into_iter()
        .filter(|(k, available)| *available && wanted(*k))
        .map(|(k, _)| k)
        .collect();
        Self {
            exec,
            shell,
            docker,
            offered,
        }
    }

    /// Providers this node offers.
    pub fn offered(&self) -> &[ProviderKind] {
        &self.offered
    }

    /// The docker provider (for cleanup at start).
    pub fn docker(&self) -> &DockerProvider {
        &self.docker
    }

    /// Checks that `instance` can run here, starting nothing.
    pub fn check(&self, instance: &InstanceSpec) -> Result<(), ProviderError> {
        let kind = instance.spec.params.provider();
        if !self.offered.contains(&kind) {
            return Err(ProviderError::Unavailable(kind.to_string()));
        }
        match kind {
            ProviderKind::Exec => self.exec.check(instance),
            ProviderKind::Shell => self.shell.check(instance),
            ProviderKind::Docker => self.docker.check(instance),
        }
    }
}

struct Handle {
    /// As the table holds it, `${…}` and all.
    spec: ServiceSpec,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Runs and stops this node's instances.
pub struct Supervisor {
    node: String,
    agent: String,
    ip: IpAddr,
    ports: PortAllocator,
    providers: Arc<Providers>,
    logs: LogConfig,
    reports: mpsc::Sender<Report>,
    instances: HashMap<(String, u32), Handle>,
}

impl Supervisor {
    /// A supervisor reporting transitions on `reports`. `agent` is this
    /// agent's identity on the host, carried by every instance (see
    /// [`crate::leftovers`]); `ip` is the one this node advertises, and
    /// ports 0 are picked from `port_range`.
    pub fn new(
        node: String,
        agent: String,
        ip: IpAddr,
        port_range: RangeInclusive<u16>,
        providers: Arc<Providers>,
        logs: LogConfig,
        reports: mpsc::Sender<Report>,
    ) -> Self {
        Self {
            node,
            agent,
            ip,
            ports: PortAllocator::new(port_range),
            providers,
            logs,
            reports,
            instances: HashMap::new(),
        }
    }

    /// The providers.
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// The IP this node advertises.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The log settings.
    pub fn log_config(&self) -> &LogConfig {
        &self.logs
    }

    /// Starts slot `slot` of `spec`. An instance already there is left
    /// alone. Bad parameters, an unavailable provider, a fixed port in
    /// use: an error, and nothing started.
    pub fn start(&mut self, spec: ServiceSpec, slot: u32) -> Result<(), ProviderError> {
        let key = (spec.name.clone(), slot);
        if self.instances.contains_key(&key) {
            return Ok(());
        }
        let ports = self
            .ports
            .assign(&spec.name, slot, &spec.ports)
            .map_err(|source| ProviderError::Port {
                service: spec.name.clone(),
                source,
            })?;
        // The ports are held only once the instance runs.
        let (instance, logs) = match self.prepare(&spec, slot, ports) {
            Ok(prepared) => prepared,
            Err(e) => {
                self.ports.release(&spec.name, slot);
                return Err(e);
            }
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(
            self.providers.clone(),
            instance,
            logs,
            stopped,
            self.reports.clone(),
        ));
        self.instances.insert(
            key,
            Handle {
                spec,
                stop: Some(stop),
                task,
            },
        );
        Ok(())
    }

    /// The instance to run, with its `${…}` interpolated and its ports,
    /// checked by its provider, and its log.
    fn prepare(
        &self,
        spec: &ServiceSpec,
        slot: u32,
        ports: BTreeMap<String, u16>,
    ) -> Result<(InstanceSpec, LogSink), ProviderError> {
        let vars = mob_scheduler::interpolate::vars(spec, &self.node, slot, self.ip, &ports);
        let interpolated =
            spec.interpolated(&vars)
                .map_err(|message| ProviderError::Interpolate {
                    service: spec.name.clone(),
                    message,
                })?;
        let instance = InstanceSpec {
            node: self.node.clone(),
            agent: self.agent.clone(),
            slot,
            spec: interpolated,
            ip: self.ip,
            ports,
        };
        self.providers.check(&instance)?;
        let logs =
            LogSink::open(&self.logs, &spec.name, slot).map_err(|source| ProviderError::Log {
                service: spec.name.clone(),
                source,
            })?;
        Ok((instance, logs))
    }

    /// Stops an instance; the returned task ends once it has stopped.
    pub fn stop(&mut self, service: &str, slot: u32) -> Option<JoinHandle<()>> {
        self.ports.release(service, slot);
        let mut handle = self.instances.remove(&(service.to_owned(), slot))?;
        if let Some(stop) = handle.stop.take() {
            let _ = stop.send(());
        }
        Some(handle.task)
    }

    /// Stops every instance and waits for them.
    pub async fn stop_all(&mut self) {
        let keys: Vec<_> = self.instances.keys().cloned().collect();
        let tasks: Vec<_> = keys
            .iter()
            .filter_map(|(s, slot)| self.stop(s, *slot))
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Whether a held instance has ended for good (failed, or exited and
    /// not restarted by its policy).
    pub fn has_ended(&self, service: &str, slot: u32) -> bool {
        self.instances
            .get(&(service.to_owned(), slot))
            .is_some_and(|h| h.task.is_finished())
    }

    /// The spec an instance was started with.
    pub fn spec_of(&self, service: &str, slot: u32) -> Option<&ServiceSpec> {
        self.instances
            .get(&(service.to_owned(), slot))
            .map(|h| &h.spec)
    }

    /// Forgets the ports a slot last had: it is gone from this node.
    pub fn forget(&mut self, service: &str, slot: u32) {
        self.ports.forget(service, slot);
    }

    /// Instances this supervisor holds (running, restarting, or ended
    /// and not yet stopped), as `(service, slot)`.
    pub fn instances(&self) -> Vec<(String, u32)> {
        self.instances.keys().cloned().collect()
    }
}

fn rules(spec: &ServiceSpec) -> RestartRules {
    RestartRules {
        policy: spec.restart,
        max_restarts: spec.max_restarts,
        window: spec.restart_window,
        stable_after: spec.stable_after,
    }
}

async fn run(
    providers: Arc<Providers>,
    instance: InstanceSpec,
    logs: LogSink,
    stop: oneshot::Receiver<()>,
    reports: mpsc::Sender<Report>,
) {
    match instance.spec.params.provider() {
        ProviderKind::Exec => drive(&providers.exec, instance, logs, stop, reports).await,
        ProviderKind::Shell => drive(&providers.shell, instance, logs, stop, reports).await,
        ProviderKind::Docker => drive(&providers.docker, instance, logs, stop, reports).await,
    }
}

fn report(
    reports: &mpsc::Sender<Report>,
    instance: &InstanceSpec,
    life: &Lifecycle,
    error: &Option<String>,
) {
    let _ = reports.try_send(Report {
        service: instance.service().to_owned(),
        slot: instance.slot,
        state: life.state(),
        pid: life.pid(),
        restarts: life.restarts(),
        exit: life.last_exit(),
        error: error.clone(),
        at: SystemTime::now(),
        ports: instance.ports.clone(),
    });
}

fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(c) => format!("exit code {c}"),
        Exit::Signal(s) => format!("signal {s}"),
        Exit::StartFailed => "failed to start".into(),
    }
}

/// Runs one instance until it is stopped, fails, or ends for good.
async fn drive<P: Provider>(
    provider: &P,
    instance: InstanceSpec,
    logs: LogSink,
    mut stop: oneshot::Receiver<()>,
    reports: mpsc::Sender<Report>,
) {
    let (service, slot) = (instance.service().to_owned(), instance.slot);
    let mut life = Lifecycle::new(rules(&instance.spec));
    let mut error = None;
    loop {
        report(&reports, &instance, &life, &error);
        let next = match provider.start(&instance, &logs).await {
            Err(e) => {
                warn!(service = %service, slot, provider = %provider.kind(), error = %e, "instance failed to start");
                error = Some(format!("last start failed: {e}"));
                life.exited(
                    Exit::StartFailed,
                    Instant::now(),
                    rand::rng().random_range(0.8..1.2),
                )
            }
            Ok(mut spawned) => {
                let check = instance.spec.check.clone();
                let started = Instant::now();
                life.started(spawned.pid, started, check.is_some());
                error = None;
                info!(service = %service, slot, pid = spawned.pid, restarts = life.restarts(), "instance started");
                report(&reports, &instance, &life, &error);
                let mut health = check.as_ref().map(|c| Health::new(c, 0));
                // A probe every interval, one at a time: one still running
                // when the next is due delays it.
                let mut next_probe = started;
                loop {
                    let probing = async {
                        match &check {
                            Some(check) => {
                                next_probe += check.interval;
                                tokio::time::sleep_until(next_probe.into()).await;
                                probe(check, &instance).await
                            }
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        status = spawned.child.wait() => {
                            let exit = status.map_or(Exit::Code(-1), exit_of);
                            let now = Instant::now();
                            provider.reap(&instance, &spawned).await;
                            let next = life.exited(exit, now, rand::rng().random_range(0.8..1.2));
                            info!(service = %service, slot, pid = spawned.pid, how = %describe(exit), state = life.state().as_str(), "instance exited");
                            break next;
                        }
                        _ = &mut stop => {
                            let exit = provider.stop(&instance, &mut spawned, instance.spec.stop_timeout).await;
                            life.stopped(Some(exit));
                            info!(service = %service, slot, pid = spawned.pid, how = %describe(exit), "instance stopped");
                            report(&reports, &instance, &life, &error);
                            return;
                        }
                        result = probing => {
                            let Some(health) = health.as_mut() else { continue };
                            let at = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                            match health.observe(result.is_ok(), at) {
                                // (A pass after a failure or two, short of
                                // unhealthy, changes nothing to report.)
                                Verdict::Same => {}
                                Verdict::Healthy if life.state() == InstanceState::Running => {}
                                Verdict::Healthy => {
                                    life.healthy();
                                    info!(service = %service, slot, pid = spawned.pid, "instance healthy");
                                    report(&reports, &instance, &life, &error);
                                }
                                Verdict::Unhealthy => {
                                    let why = result.err().unwrap_or_default();
                                    warn!(service = %service, slot, pid = spawned.pid, failures = health.failed_in_a_row(), error = %why, "instance unhealthy");
                                    life.unhealthy(Instant::now(), health.passed());
                                    error = Some(format!("health check failed: {why}"));
                                    report(&reports, &instance, &life, &error);
                                    let exit = provider.stop(&instance, &mut spawned, instance.spec.stop_timeout).await;
                                    let next = life.exited(exit, Instant::now(), rand::rng().random_range(0.8..1.2));
                                    info!(service = %service, slot, pid = spawned.pid, how = %describe(exit), state = life.state().as_str(), "instance stopped: unhealthy");
                                    break next;
                                }
                            }
                        }
                    }
                }
            }
        };
        match next {
            Next::Start => {}
            Next::Wait(delay) => {
                report(&reports, &instance, &life, &error);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => life.restarting(),
                    _ = &mut stop => {
                        life.stopped(None);
                        report(&reports, &instance, &life, &error);
                        return;
                    }
                }
            }
            Next::Done => {
                if life.state() == InstanceState::Failed {
                    warn!(service = %service, slot, restarts = life.restarts(), "instance failed: restart budget spent");
                }
                report(&reports, &instance, &life, &error);
                return;
            }
        }
    }
}
