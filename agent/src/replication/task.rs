//! The table task: I/O around the node core. One select loop turns
//! commands, deltas, instance reports, member changes, file results and
//! the node's deadline into [`Input`]s, and carries out the [`Effect`]s:
//! broadcasts, anti-entropy rounds, supervisor commands, saves, answers
//! and log lines. No rule lives here; every decision is `Node::handle`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mob_membership::{Channel, MemberState, MemberView, Membership};
use mob_scheduler::node::{
    ChangeKind, Effect, Event, Input, InstanceReport, Peer, PeerState, Reply, RequestId, Source,
};
use mob_scheduler::{Node, Records};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};

use super::handle::{Cmd, TableHandle};
use super::{anti_entropy, store};
use crate::supervisor_task::SupervisorCmd;
use crate::wall_clock::now_ms;

const STREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before each attempt of a push (the first at once).
const PUSH_PAUSES_MS: [u64; 3] = [0, 150, 400];

/// A delta on the membership broadcast: records just written.
#[derive(Debug, Serialize, Deserialize)]
struct Delta(Records);

/// The agent's side of the table task's channels.
pub(crate) struct TableInputs {
    pub(crate) broadcasts: mpsc::Receiver<Vec<u8>>,
    pub(crate) reports: mpsc::Receiver<InstanceReport>,
    pub(crate) supervisor: mpsc::Sender<SupervisorCmd>,
    /// Where the node core's events go.
    pub(crate) events: Arc<crate::events::Events>,
}

/// A save for the writer: its number and the encoded table.
type Snapshot = Option<(u64, Arc<Vec<u8>>)>;

struct TableTask {
    node: Node,
    membership: Membership,
    handle: TableHandle,
    supervisor: mpsc::Sender<SupervisorCmd>,
    data_dir: PathBuf,
    /// The latest table to save; one writer task writes it.
    saver: watch::Sender<Snapshot>,
    replies: HashMap<RequestId, oneshot::Sender<Reply>>,
    next_request: RequestId,
    /// The skew last given to the node.
    clock_skew: Option<i64>,
    events: Arc<crate::events::Events>,
}

/// Starts the table task around `node`.
pub(crate) fn spawn(
    node: Node,
    membership: Membership,
    inputs: TableInputs,
    data_dir: PathBuf,
) -> TableHandle {
    let (cmds, rx) = mpsc::channel(256);
    let handle = TableHandle {
        cmds,
        stats: Arc::default(),
    };
    let (saver, saves) = watch::channel(None);
    let (saved_tx, saved) = mpsc::channel(64);
    tokio::spawn(write_saves(data_dir.clone(), saves, saved_tx));
    let task = TableTask {
        node,
        membership,
        handle: handle.clone(),
        supervisor: inputs.supervisor,
        data_dir,
        saver,
        replies: HashMap::new(),
        next_request: 0,
        clock_skew: None,
        events: inputs.events,
    };
    tokio::spawn(task.run(rx, inputs.broadcasts, inputs.reports, saved));
    handle
}

/// Writes the latest encoded table whenever it changes: one write at a
/// time (so an older snapshot never lands after a newer one), and a burst
/// of saves coalesces into one write. Reports each number written.
async fn write_saves(
    dir: PathBuf,
    mut saves: watch::Receiver<Snapshot>,
    saved: mpsc::Sender<(u64, Result<(), String>)>,
) {
    while saves.changed().await.is_ok() {
        let Some((seq, bytes)) = saves.borrow_and_update().clone() else {
            continue;
        };
        let dir = dir.clone();
        let result = match tokio::task::spawn_blocking(move || store::save(&dir, &bytes)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("save task failed: {e}")),
        };
        if saved.send((seq, result)).await.is_err() {
            return;
        }
    }
}

/// The member list as the node core sees it.
fn peers(members: &[MemberView]) -> Vec<Peer> {
    members
        .iter()
        .map(|m| Peer {
            name: m.id.name.clone(),
            addr: m.id.addr,
            incarnation: m.id.epoch,
            state: match m.state {
                MemberState::Alive => PeerState::Alive,
                MemberState::Suspect => PeerState::Suspect,
                MemberState::Down | MemberState::Left => PeerState::Gone,
            },
        })
        .collect()
}

impl TableTask {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut broadcasts: mpsc::Receiver<Vec<u8>>,
        mut reports: mpsc::Receiver<InstanceReport>,
        mut saved: mpsc::Receiver<(u64, Result<(), String>)>,
    ) {
        let mut members = self.membership.watch();
        let first = peers(&members.borrow_and_update());
        self.feed(Input::Members(first)).await;
        loop {
            let wait = self.node.next_deadline().saturating_sub(now_ms());
            let deadline = Instant::now() + Duration::from_millis(wait);
            let input = tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Request(request, reply)) => {
                        // Whether peers would take a write from this clock.
                        let skew = self.membership.own_clock_skew();
                        if skew != self.clock_skew {
                            self.clock_skew = skew;
                            if let Some(ms) = skew {
                                error!(node = self.node.name(), offset_ms = ms, "this agent's clock is far off from its peers'; operator writes are refused");
                            }
                            self.feed(Input::ClockSkew(skew)).await;
                        }
                        self.next_request += 1;
                        self.replies.insert(self.next_request, reply);
                        Input::Request(self.next_request, request)
                    }
                    Some(Cmd::Read(read)) => {
                        read(&self.node);
                        continue;
                    }
                    Some(Cmd::Merge(source, records, done)) => {
                        self.feed(Input::Records(source, records)).await;
                        let _ = done.send(());
                        continue;
                    }
                    Some(Cmd::Synced(peer)) => Input::Synced(peer),
                    Some(Cmd::SyncFailed(peer)) => Input::SyncFailed(peer),
                    Some(Cmd::Shutdown(done)) => {
                        let bytes = store::encode(self.node.table());
                        let dir = self.data_dir.clone();
                        match tokio::task::spawn_blocking(move || store::save(&dir, &bytes)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => error!(error = %e, "cannot save the table"),
                            Err(e) => error!(error = %e, "table save task failed"),
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                Some((seq, result)) = saved.recv() => {
                    if result.is_ok() {
                        self.handle.stats.saves.fetch_add(1, Ordering::Relaxed);
                    }
                    Input::Saved { seq, result }
                }
                Some(report) = reports.recv() => Input::Instance(report),
                Some(bytes) = broadcasts.recv() => match postcard::from_bytes::<Delta>(&bytes) {
                    Ok(Delta(records)) => {
                        self.handle.stats.deltas_received.fetch_add(1, Ordering::Relaxed);
                        Input::Records(Source::Delta, records)
                    }
                    Err(e) => {
                        self.handle.stats.deltas_rejected.fetch_add(1, Ordering::Relaxed);
                        debug!(error = %e, "undecodable delta dropped");
                        continue;
                    }
                },
                Ok(()) = members.changed() => Input::Members(peers(&members.borrow_and_update())),
                _ = sleep_until(deadline) => Input::Tick,
            };
            self.feed(input).await;
        }
    }

    /// Hands one input to the node and carries out its effects.
    async fn feed(&mut self, input: Input) {
        let effects = self.node.handle(input, now_ms());
        let stats = self.node.stats();
        let counters = &self.handle.stats;
        counters.records.store(stats.records, Ordering::Relaxed);
        counters
            .records_rejected
            .store(stats.records_rejected, Ordering::Relaxed);
        counters.forgotten.store(stats.forgotten, Ordering::Relaxed);
        counters
            .save_failures
            .store(stats.save_failures, Ordering::Relaxed);
        for effect in effects {
            self.apply(effect).await;
        }
    }

    async fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Broadcast(records) => {
                for record in records {
                    let Ok(bytes) = postcard::to_stdvec(&Delta(vec![record])) else {
                        continue;
                    };
                    // Too big for a datagram: anti-entropy carries it.
                    if bytes.len() <= mob_membership::MAX_BROADCAST
                        && let Err(e) = self.membership.broadcast(bytes).await
                    {
                        debug!(error = %e, "delta not broadcast");
                    }
                }
            }
            Effect::Sync(peer) => self.start_anti_entropy(peer),
            Effect::Push {
                peer,
                records,
                forward,
            } => self.start_push(peer, records, forward),
            Effect::Start {
                spec,
                slot,
                version,
            } => {
                let service = spec.name.clone();
                let start = SupervisorCmd::Start {
                    spec,
                    slot,
                    version,
                };
                if self.supervisor.try_send(start).is_err() {
                    warn!(service = %service, slot, "supervisor busy; start retried by the next full pass");
                }
            }
            Effect::Stop { service, slot } => {
                if self
                    .supervisor
                    .try_send(SupervisorCmd::Stop {
                        service: service.clone(),
                        slot,
                    })
                    .is_err()
                {
                    warn!(service = %service, slot, "supervisor busy; stop retried later");
                }
            }
            Effect::Save { seq } => {
                let bytes = Arc::new(store::encode(&self.node.to_save()));
                let _ = self.saver.send(Some((seq, bytes)));
            }
            Effect::Reply(id, reply) => {
                if let Some(tx) = self.replies.remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            Effect::Log(event) => {
                self.events.node_event(&event);
                log_event(self.node.name(), event);
            }
            Effect::Forgotten(names) => {
                // Only fails once membership stopped: nothing to forget then.
                let _ = self.membership.forget(names).await;
            }
            Effect::Keyring(ring) => {
                crate::keys::apply(&ring, &self.membership, &self.data_dir).await;
            }
        }
    }

    /// Pushes `records` to `peer` (see [`Effect::Push`]).
    fn start_push(&self, peer: SocketAddr, records: Records, forward: bool) {
        let membership = self.membership.clone();
        tokio::spawn(async move {
            // A bulk write keeps every agent busy for a moment, and a busy
            // peer may refuse the stream (its hello is timed): try again a
            // little later, then leave it to the periodic rounds.
            for (attempt, pause_ms) in PUSH_PAUSES_MS.into_iter().enumerate() {
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                let push = async {
                    let stream = membership
                        .open_stream(peer, Channel::AntiEntropy, STREAM_TIMEOUT)
                        .await?;
                    anti_entropy::push(stream, records.clone(), forward).await
                };
                match push.await {
                    Ok(()) => return,
                    Err(e) if e.is_rejected_frame() => return,
                    Err(e) => {
                        debug!(peer = %peer, error = %e, attempt, "push of records failed")
                    }
                }
            }
        });
    }

    fn start_anti_entropy(&self, peer: SocketAddr) {
        let (membership, handle) = (self.membership.clone(), self.handle.clone());
        tokio::spawn(async move {
            let round = async {
                let stream = membership
                    .open_stream(peer, Channel::AntiEntropy, STREAM_TIMEOUT)
                    .await?;
                anti_entropy::initiate(stream, &handle).await
            };
            match round.await {
                Ok(received) => {
                    handle.synced(peer).await;
                    handle
                        .stats
                        .anti_entropy_rounds
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %peer, received, "anti-entropy round done");
                }
                Err(e) => {
                    handle.sync_failed(peer).await;
                    handle
                        .stats
                        .anti_entropy_failures
                        .fetch_add(1, Ordering::Relaxed);
                    if !e.is_rejected_frame() {
                        debug!(peer = %peer, error = %e, "anti-entropy round failed");
                    }
                }
            }
        });
    }
}

/// One log line per event.
fn log_event(node: &str, event: Event) {
    match event {
        Event::Service(change) => {
            let (service, version, origin) = (&change.name, change.version, &change.origin);
            match change.kind {
                ChangeKind::Deployed => {
                    info!(service = %service, version, origin = %origin, "service deployed")
                }
                ChangeKind::Updated => {
                    info!(service = %service, version, origin = %origin, "service updated")
                }
                ChangeKind::Removed => {
                    info!(service = %service, version, origin = %origin, "service removed")
                }
            }
        }
        Event::SlotClaimed { service, slot } => {
            info!(service = %service, slot, node, reason = "unowned", "slot claimed")
        }
        Event::SlotMoved {
            service,
            slot,
            from,
        } => {
            info!(service = %service, slot, node, from = %from, reason = "previous owner down, left or ineligible", "slot moved")
        }
        Event::SlotHandedOver { service, slot, to } => {
            info!(service = %service, slot, node, to = %to, reason = "over the load cap", "slot handed over")
        }
        Event::SlotReleased {
            service,
            slot,
            reason,
        } => info!(service = %service, slot, node, reason = reason.as_str(), "slot released"),
        Event::SlotLost { service, slot } => {
            info!(service = %service, slot, node, reason = "owned by another node", "slot lost")
        }
        Event::UpdateProgressed {
            service,
            version,
            slot,
        } => info!(service = %service, version, slot, node, "update progressed"),
        Event::UpdateFailed {
            service,
            version,
            slot,
            why,
        } => warn!(service = %service, version, slot, node, error = %why, "update failed"),
        Event::UpdateReverted {
            service,
            version,
            failed,
            to,
            slot,
        } => warn!(service = %service, version, failed, to, slot, node, "update reverted"),
        Event::Draining => info!(node, "draining: slots move to other nodes"),
        Event::DrainUndone => info!(node, "drain undone: eligible again"),
        Event::DrainRequested { node: peer, on } => {
            info!(node, peer = %peer, draining = on, "drain of another node requested")
        }
        Event::NodeForgotten { node: peer } => {
            info!(node, peer = %peer, "member forgotten by force-leave")
        }
        Event::CaughtUp => debug!(node, "table caught up with a peer; claiming enabled"),
        Event::MajorityLost => {
            warn!(
                node,
                "majority of the nodes out of sight; at-most-once services stop here"
            )
        }
        Event::MajorityRegained => {
            info!(
                node,
                "majority of the nodes in sight again; at-most-once services may run here"
            )
        }
        Event::RecordsRejected { count } => {
            debug!(
                node,
                records = count,
                "malformed records from a peer dropped"
            )
        }
        Event::FutureRecordsDropped { count } => warn!(
            node,
            records = count,
            "records stamped over an hour ahead of this clock dropped from the saved table (its clock ran ahead)"
        ),
        Event::Forgot { count } => debug!(node, records = count, "forgot old records"),
        Event::SaveFailed { error, failures } => error!(
            node,
            error = %error,
            failures,
            "cannot save the table; operator writes are refused until a save succeeds"
        ),
        Event::SaveRecovered { failures } => {
            info!(node, failures, "table saved again")
        }
        Event::SaveSlow => {
            warn!(
                node,
                "table file write is slow; the write waiting for it was refused"
            )
        }
    }
}
