//! The agent's side of supervision: the task that owns the providers'
//! [`Supervisor`]. It carries out the node core's starts and stops (a
//! start waits for a stop of the same slot to finish; a new version of a
//! running instance replaces it, a scale only restamps it), and turns each
//! [`Report`] into the [`InstanceReport`] the node records, once.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mob_providers::Report;
use mob_providers::Supervisor;
use mob_providers::restart::Exit;
use mob_scheduler::ServiceSpec;
use mob_scheduler::node::InstanceReport;
use mob_scheduler::record::{InstanceState, MAX_ERROR_LEN, Status};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::events::Events;
use crate::wall_clock::ms_of;

/// What the table task asks of the supervisor.
#[derive(Debug)]
pub(crate) enum SupervisorCmd {
    /// Run the slot with this spec version (no-op if it runs already;
    /// restarted if it runs another version).
    Start {
        spec: Box<ServiceSpec>,
        slot: u32,
        version: u64,
    },
    /// Stop the slot's instance (reports `stopped` even if none ran).
    Stop { service: String, slot: u32 },
    /// A stop finished (sent by the task to itself).
    Stopped { service: String, slot: u32 },
    /// How many instances are held.
    Count(oneshot::Sender<usize>),
    /// Stop everything, then answer.
    StopAll(oneshot::Sender<()>),
}

fn status_of(report: &Report, (version, started_ms): (u64, u64), ip: IpAddr) -> Status {
    let (last_exit, last_signal) = match report.exit {
        Some(Exit::Code(c)) => (Some(c), None),
        Some(Exit::Signal(s)) => (None, Some(s)),
        Some(Exit::StartFailed) | None => (None, None),
    };
    Status {
        state: report.state,
        pid: report.pid,
        restarts: report.restarts,
        since_ms: ms_of(report.at),
        last_exit,
        last_signal,
        last_error: report.error.as_ref().map(|e| {
            let mut e = e.clone();
            // (On a character boundary.)
            while e.len() > MAX_ERROR_LEN {
                e.pop();
            }
            e
        }),
        version,
        started_ms,
        // (The node core judges it from the reports.)
        proven: false,
        ip: Some(ip),
        ports: report.ports.clone(),
    }
}

/// Runs the supervisor task.
pub(crate) async fn run(
    supervisor: Supervisor,
    mut cmds: mpsc::Receiver<SupervisorCmd>,
    self_cmds: mpsc::Sender<SupervisorCmd>,
    mut reports: mpsc::Receiver<Report>,
    statuses: mpsc::Sender<InstanceReport>,
    events: Arc<Events>,
) {
    let mut task = SupervisionTask {
        events,
        states: HashMap::new(),
        ip: supervisor.ip(),
        supervisor,
        self_cmds,
        statuses,
        versions: HashMap::new(),
        last: HashMap::new(),
        stopping: HashSet::new(),
        pending: HashMap::new(),
        shutting_down: false,
    };
    loop {
        tokio::select! {
            Some(report) = reports.recv() => {
                if !task.forward(&report).await {
                    return;
                }
            }
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(SupervisorCmd::Start { spec, slot, version }) => task.start(*spec, slot, version).await,
                Some(SupervisorCmd::Stop { service, slot }) => {
                    // An outside stop cancels a start waiting for a restart.
                    task.pending.remove(&(service.clone(), slot));
                    if !task.stopping.contains(&(service.clone(), slot)) {
                        task.stop(service, slot).await;
                    }
                }
                Some(SupervisorCmd::Stopped { service, slot }) => {
                    let key = (service, slot);
                    task.stopping.remove(&key);
                    if let Some((spec, version)) = task.pending.remove(&key) {
                        task.start(spec, key.1, version).await;
                    } else if task.supervisor.spec_of(&key.0, key.1).is_none() {
                        // Gone for good: forget it, so services deployed and
                        // removed over months don't grow these maps.
                        task.versions.remove(&key);
                        task.last.remove(&key);
                        task.states.remove(&key);
                        task.supervisor.forget(&key.0, key.1);
                    }
                }
                Some(SupervisorCmd::Count(reply)) => {
                    let _ = reply.send(task.supervisor.instances().len() + task.stopping.len());
                }
                Some(SupervisorCmd::StopAll(done)) => {
                    // The agent is exiting: nothing starts any more.
                    task.shutting_down = true;
                    task.pending.clear();
                    let stopping = tokio::time::timeout(Duration::from_secs(60), task.supervisor.stop_all());
                    let _ = stopping.await;
                    // Let the final reports through before answering.
                    while let Ok(report) = reports.try_recv() {
                        task.forward(&report).await;
                    }
                    let _ = done.send(());
                }
            }
        }
    }
}

/// The supervisor and what the task tracks around it.
struct SupervisionTask {
    supervisor: Supervisor,
    self_cmds: mpsc::Sender<SupervisorCmd>,
    statuses: mpsc::Sender<InstanceReport>,
    /// Spec version each held instance runs and when that instance spec
    /// first started, to stamp its reports.
    versions: HashMap<(String, u32), (u64, u64)>,
    /// Each held instance's latest status, to restamp when only the
    /// version changes (a scale).
    last: HashMap<(String, u32), Status>,
    /// Slots whose instance is stopping: nothing starts there until it has
    /// stopped (a docker container name is per slot).
    stopping: HashSet<(String, u32)>,
    /// Starts that wait for a stop to finish.
    pending: HashMap<(String, u32), (ServiceSpec, u64)>,
    /// Set by `StopAll`: the agent exits, nothing starts again.
    shutting_down: bool,
    /// The IP this node advertises (status records carry it).
    ip: IpAddr,
    /// Where instance events go.
    events: Arc<Events>,
    /// Each slot's state last sent: an event is a change of it.
    states: HashMap<(String, u32), InstanceState>,
}

impl SupervisionTask {
    /// Turns a report into a status record; `false` once the table task is gone.
    async fn forward(&mut self, report: &Report) -> bool {
        let key = (report.service.clone(), report.slot);
        let version = self.versions.get(&key).copied().unwrap_or((0, 0));
        let status = status_of(report, version, self.ip);
        self.last.insert(key, status.clone());
        self.send(&report.service, report.slot, status).await
    }

    async fn send(&mut self, service: &str, slot: u32, status: Status) -> bool {
        let key = (service.to_owned(), slot);
        if self.states.get(&key) != Some(&status.state) {
            self.states.insert(key, status.state);
            let detail = match (&status.last_error, status.last_exit, status.last_signal) {
                (Some(e), ..) => Some(e.clone()),
                (None, Some(code), _) => Some(format!("exit code {code}")),
                (None, None, Some(signal)) => Some(format!("signal {signal}")),
                _ => None,
            };
            let detail = detail.filter(|_| !status.state.is_active() || status.restarts > 0);
            self.events
                .instance(service, slot, status.state.as_str(), detail);
        }
        let report = InstanceReport {
            service: service.to_owned(),
            slot,
            status,
        };
        self.statuses.send(report).await.is_ok()
    }

    async fn start(&mut self, spec: ServiceSpec, slot: u32, version: u64) {
        if self.shutting_down {
            return;
        }
        let key = (spec.name.clone(), slot);
        if self.stopping.contains(&key) {
            self.pending.insert(key, (spec, version));
            return;
        }
        let held = self.versions.get(&key).copied();
        let held_version = held.map(|(v, _)| v);
        let ended = self.supervisor.has_ended(&spec.name, slot);
        match self.supervisor.spec_of(&spec.name, slot) {
            // Scaling bumps the version without touching the instance.
            Some(running)
                if running.same_instance_of_slot(&spec, slot)
                    && (!ended || held_version == Some(version)) =>
            {
                let started_ms = held.map_or(0, |(_, at)| at);
                self.versions.insert(key.clone(), (version, started_ms));
                // The status says which version runs (`deploy --wait` reads it).
                if held_version != Some(version)
                    && let Some(mut status) = self.last.get(&key).cloned()
                {
                    status.version = version;
                    self.send(&key.0, key.1, status).await;
                }
                return;
            }
            // Another spec, or a new version of an instance that ended:
            // stop the old one first.
            Some(_) => {
                self.pending.insert(key.clone(), (spec, version));
                self.stop(key.0, key.1).await;
                return;
            }
            None => {}
        }
        let started_ms = ms_of(std::time::SystemTime::now());
        self.versions.insert(key, (version, started_ms));
        if let Err(e) = self.supervisor.start(spec.clone(), slot) {
            warn!(service = %spec.name, slot, error = %e, "cannot start instance");
            let mut report = report_now(&spec.name, slot, InstanceState::Failed);
            report.error = Some(format!("cannot start: {e}"));
            let failed = status_of(&report, (version, started_ms), self.ip);
            // (A stop that follows keeps the reason.)
            self.last.insert((spec.name.clone(), slot), failed.clone());
            self.send(&spec.name, slot, failed).await;
        }
    }

    async fn stop(&mut self, service: String, slot: u32) {
        match self.supervisor.stop(&service, slot) {
            Some(stopping) if !stopping.is_finished() => {
                // Its final report arrives on the report channel.
                self.stopping.insert((service.clone(), slot));
                let done = self.self_cmds.clone();
                tokio::spawn(async move {
                    let _ = stopping.await;
                    let _ = done.send(SupervisorCmd::Stopped { service, slot }).await;
                });
            }
            _ => {
                // Nothing ran (any more): say so, so the status is not left
                // active, keeping how its last run ended (why it failed).
                let stopped = match self.last.get(&(service.clone(), slot)) {
                    Some(last) => Status {
                        state: InstanceState::Stopped,
                        pid: None,
                        since_ms: ms_of(std::time::SystemTime::now()),
                        ..last.clone()
                    },
                    None => status_of(
                        &report_now(&service, slot, InstanceState::Stopped),
                        (0, 0),
                        self.ip,
                    ),
                };
                self.send(&service, slot, stopped).await;
                if let Some((spec, version)) = self.pending.remove(&(service, slot)) {
                    Box::pin(self.start(spec, slot, version)).await;
                }
            }
        }
    }
}

/// A report made here rather than by the supervisor: an instance that
/// could not start, or a stop of an instance the supervisor doesn't hold.
fn report_now(service: &str, slot: u32, state: InstanceState) -> Report {
    Report {
        service: service.to_owned(),
        slot,
        state,
        pid: None,
        restarts: 0,
        exit: None,
        error: None,
        at: std::time::SystemTime::now(),
        ports: Default::default(),
    }
}
