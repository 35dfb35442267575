//! The task that owns the [`Supervisor`]: executes the Start and Stop
//! actions of reconcile, and turns the supervisor's reports into status
//! records (via the table task).

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use mob_providers::Report;
use mob_providers::Supervisor;
use mob_providers::restart::Exit;
use mob_scheduler::ServiceSpec;
use mob_scheduler::record::{InstanceState, Status};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

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
    /// How many instances are held.
    Count(oneshot::Sender<usize>),
    /// Stop everything, then answer.
    StopAll(oneshot::Sender<()>),
}

/// A status record to write, from a report.
#[derive(Debug, Clone)]
pub(crate) struct StatusUpdate {
    pub(crate) service: String,
    pub(crate) slot: u32,
    pub(crate) status: Status,
}

fn status_of(report: &Report, version: u64) -> Status {
    let (last_exit, last_signal) = match report.exit {
        Some(Exit::Code(c)) => (Some(c), None),
        Some(Exit::Signal(s)) => (None, Some(s)),
        Some(Exit::StartFailed) | None => (None, None),
    };
    Status {
        state: report.state,
        pid: report.pid,
        restarts: report.restarts,
        since_ms: report
            .at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        last_exit,
        last_signal,
        version,
    }
}

/// Runs the supervisor task.
pub(crate) async fn run(
    mut supervisor: Supervisor,
    mut cmds: mpsc::Receiver<SupervisorCmd>,
    self_cmds: mpsc::Sender<SupervisorCmd>,
    mut reports: mpsc::Receiver<Report>,
    statuses: mpsc::Sender<StatusUpdate>,
) {
    // Version each held instance runs, to stamp its reports.
    let mut versions: HashMap<(String, u32), u64> = HashMap::new();
    loop {
        tokio::select! {
            Some(report) = reports.recv() => {
                let key = (report.service.clone(), report.slot);
                let version = versions.get(&key).copied().unwrap_or(0);
                let update = StatusUpdate { service: report.service.clone(), slot: report.slot, status: status_of(&report, version) };
                if statuses.send(update).await.is_err() {
                    return;
                }
            }
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(SupervisorCmd::Start { spec, slot, version }) => {
                    let spec = *spec;
                    let key = (spec.name.clone(), slot);
                    match supervisor.spec_of(&spec.name, slot) {
                        Some(running) if same_instance(running, &spec) => continue,
                        Some(_) => {
                            // A new version: stop the old instance, then start again.
                            if let Some(stopping) = supervisor.stop(&spec.name, slot) {
                                let again = self_cmds.clone();
                                tokio::spawn(async move {
                                    let _ = stopping.await;
                                    let _ = again.send(SupervisorCmd::Start { spec: Box::new(spec), slot, version }).await;
                                });
                            }
                            continue;
                        }
                        None => {}
                    }
                    versions.insert(key, version);
                    if let Err(e) = supervisor.start(spec.clone(), slot) {
                        warn!(service = %spec.name, slot, error = %e, "cannot start instance");
                        let failed = status_of(&report_now(&spec.name, slot, InstanceState::Failed), version);
                        let _ = statuses.send(StatusUpdate { service: spec.name.clone(), slot, status: failed }).await;
                    }
                }
                Some(SupervisorCmd::Stop { service, slot }) => {
                    match supervisor.stop(&service, slot) {
                        // Its final report arrives on the report channel.
                        Some(stopping) => { tokio::spawn(stopping); }
                        None => {
                            let stopped = status_of(&report_now(&service, slot, InstanceState::Stopped), 0);
                            let _ = statuses.send(StatusUpdate { service, slot, status: stopped }).await;
                        }
                    }
                }
                Some(SupervisorCmd::Count(reply)) => {
                    let _ = reply.send(supervisor.instances().len());
                }
                Some(SupervisorCmd::StopAll(done)) => {
                    let stopping = tokio::time::timeout(Duration::from_secs(60), supervisor.stop_all());
                    let _ = stopping.await;
                    // Let the final reports through before answering.
                    while let Ok(report) = reports.try_recv() {
                        let version = versions.get(&(report.service.clone(), report.slot)).copied().unwrap_or(0);
                        let update = StatusUpdate { service: report.service.clone(), slot: report.slot, status: status_of(&report, version) };
                        let _ = statuses.send(update).await;
                    }
                    let _ = done.send(());
                }
            }
        }
    }
}

/// Whether an instance running `a` can keep running for `b`: the specs
/// differ at most in `replicas` (scaling doesn't restart the survivors).
fn same_instance(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    a == &ServiceSpec {
        replicas: a.replicas,
        ..b.clone()
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
        at: std::time::SystemTime::now(),
    }
}
