//! The agent's event stream: what `mob-agent events` prints and
//! `/v1/events` sends, one [`EventLine`] per event an operator cares
//! about (the same events as the log's info lines).
//!
//! Publishers (the table task, the supervisor task, the membership
//! watcher) never wait: a subscriber that falls behind by more than
//! [`CAPACITY`] events misses the oldest (and is told how many), and the
//! last [`RECENT`] events are kept for a subscriber that just came.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use mob_membership::{MemberState, MemberView};
use mob_scheduler::node::Event;
use mob_scheduler::node::ops::ChangeKind;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::wall_clock::now_ms;

/// Events a subscriber may fall behind by.
pub(crate) const CAPACITY: usize = 1024;
/// Events kept for subscribers that come later.
pub(crate) const RECENT: usize = 100;

/// One event. Every field is always present (`null` where it does not
/// apply), so consumers read one shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventLine {
    /// Number of the event on this agent, from 1.
    pub(crate) seq: u64,
    /// When this agent saw it (ms since the Unix epoch).
    pub(crate) time_ms: u64,
    /// The agent that saw it.
    pub(crate) node: String,
    /// What happened: `member.up`, `slot.moved`, `instance.running`, …
    pub(crate) kind: String,
    /// The member it is about (member events, handovers, moves).
    pub(crate) peer: Option<String>,
    /// The service it is about.
    pub(crate) service: Option<String>,
    /// The slot it is about.
    pub(crate) slot: Option<u32>,
    /// The service version it is about.
    pub(crate) version: Option<u64>,
    /// More: a reason, an error, an exit.
    pub(crate) detail: Option<String>,
}

/// What an event is about, besides its kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct About {
    pub(crate) peer: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) slot: Option<u32>,
    pub(crate) version: Option<u64>,
    pub(crate) detail: Option<String>,
}

impl About {
    fn slot(service: &str, slot: u32) -> Self {
        Self {
            service: Some(service.to_owned()),
            slot: Some(slot),
            ..Self::default()
        }
    }
}

/// The stream of one agent's events.
pub(crate) struct Events {
    node: String,
    tx: broadcast::Sender<EventLine>,
    seq: AtomicU64,
    recent: Mutex<VecDeque<EventLine>>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Events {
    /// The stream of node `node`'s events.
    pub(crate) fn new(node: String) -> Self {
        Self {
            node,
            tx: broadcast::channel(CAPACITY).0,
            seq: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sends an event to every subscriber.
    pub(crate) fn publish(&self, kind: &'static str, about: About) {
        // (A poisoned lock only means a panic elsewhere: keep going.)
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let line = EventLine {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time_ms: now_ms(),
            node: self.node.clone(),
            kind: kind.to_owned(),
            peer: about.peer,
            service: about.service,
            slot: about.slot,
            version: about.version,
            detail: about.detail,
        };
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(line.clone());
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
        // Sent under the lock, so a subscriber's recent events and its
        // stream neither overlap nor leave a gap.
        let _ = self.tx.send(line);
    }

    /// The recent events and a receiver of those to come.
    pub(crate) fn subscribe(&self) -> (Vec<EventLine>, broadcast::Receiver<EventLine>) {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        (recent.iter().cloned().collect(), self.tx.subscribe())
    }

    /// Events published so far, by kind.
    pub(crate) fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes the node core's event, if an operator cares about it.
    pub(crate) fn node_event(&self, event: &Event) {
        let (kind, about) = match event {
            Event::Service(change) => (
                match change.kind {
                    ChangeKind::Deployed => "service.deployed",
                    ChangeKind::Updated => "service.updated",
                    ChangeKind::Removed => "service.removed",
                },
                About {
                    service: Some(change.name.clone()),
                    version: Some(change.version),
                    detail: Some(format!("by {}", change.origin)),
                    ..About::default()
                },
            ),
            Event::SlotClaimed { service, slot } => ("slot.claimed", About::slot(service, *slot)),
            Event::SlotMoved {
                service,
                slot,
                from,
            } => (
                "slot.moved",
                About {
                    peer: Some(from.clone()),
                    ..About::slot(service, *slot)
                },
            ),
            Event::SlotHandedOver { service, slot, to } => (
                "slot.handed_over",
                About {
                    peer: Some(to.clone()),
                    ..About::slot(service, *slot)
                },
            ),
            Event::SlotReleased {
                service,
                slot,
                reason,
            } => (
                "slot.released",
                About {
                    detail: Some(reason.as_str().to_owned()),
                    ..About::slot(service, *slot)
                },
            ),
            Event::SlotLost { service, slot } => ("slot.lost", About::slot(service, *slot)),
            Event::UpdateProgressed {
                service,
                version,
                slot,
            } => (
                "update.progressed",
                About {
                    version: Some(*version),
                    ..About::slot(service, *slot)
                },
            ),
            Event::UpdateFailed {
                service,
                version,
                slot,
                why,
            } => (
                "update.failed",
                About {
                    version: Some(*version),
                    detail: Some(why.clone()),
                    ..About::slot(service, *slot)
                },
            ),
            Event::UpdateReverted {
                service,
                version,
                failed,
                to,
                slot,
            } => (
                "update.reverted",
                About {
                    version: Some(*version),
                    detail: Some(format!("version {failed} failed; back to {to}")),
                    ..About::slot(service, *slot)
                },
            ),
            Event::Draining => ("node.draining", About::default()),
            Event::DrainUndone => ("node.drain_undone", About::default()),
            Event::DrainRequested { node, on } => (
                if *on {
                    "node.drain_requested"
                } else {
                    "node.undrain_requested"
                },
                About {
                    peer: Some(node.clone()),
                    ..About::default()
                },
            ),
            Event::NodeForgotten { node } => (
                "member.force_left",
                About {
                    peer: Some(node.clone()),
                    ..About::default()
                },
            ),
            Event::MajorityLost => ("node.majority_lost", About::default()),
            Event::MajorityRegained => ("node.majority_regained", About::default()),
            Event::SaveFailed { error, .. } => (
                "node.save_failed",
                About {
                    detail: Some(error.clone()),
                    ..About::default()
                },
            ),
            Event::SaveRecovered { .. } => ("node.save_recovered", About::default()),
            Event::CaughtUp
            | Event::RecordsRejected { .. }
            | Event::FutureRecordsDropped { .. }
            | Event::Forgot { .. }
            | Event::SaveSlow => return,
        };
        self.publish(kind, about);
    }

    /// Publishes an instance's new state.
    pub(crate) fn instance(&self, service: &str, slot: u32, state: &str, detail: Option<String>) {
        let kind = match state {
            "starting" => "instance.starting",
            "running" => "instance.running",
            "backoff" => "instance.exited",
            "failed" => "instance.failed",
            "stopped" => "instance.stopped",
            "unhealthy" => "instance.unhealthy",
            _ => return,
        };
        self.publish(
            kind,
            About {
                detail,
                ..About::slot(service, slot)
            },
        );
    }
}

/// Publishes member events as membership's view changes, until it ends.
pub(crate) async fn watch_members(
    events: std::sync::Arc<Events>,
    mut members: tokio::sync::watch::Receiver<Vec<MemberView>>,
    me: String,
) {
    let mut known: BTreeMap<String, MemberState> = BTreeMap::new();
    loop {
        let now: BTreeMap<String, MemberState> = members
            .borrow_and_update()
            .iter()
            .filter(|m| m.id.name != me)
            .map(|m| (m.id.name.clone(), m.state))
            .collect();
        for (name, state) in &now {
            if known.get(name) == Some(state) {
                continue;
            }
            let kind = match state {
                MemberState::Alive => "member.up",
                MemberState::Suspect => "member.suspect",
                MemberState::Down => "member.down",
                MemberState::Left => "member.left",
            };
            events.publish(
                kind,
                About {
                    peer: Some(name.clone()),
                    ..About::default()
                },
            );
        }
        for name in known.keys().filter(|n| !now.contains_key(*n)) {
            events.publish(
                "member.forgotten",
                About {
                    peer: Some(name.clone()),
                    ..About::default()
                },
            );
        }
        known = now;
        if members.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_gets_the_recent_events_then_the_new_ones_with_no_gap() {
        let events = Events::new("n1".into());
        for i in 0..(RECENT + 5) {
            events.publish("slot.claimed", About::slot("web", i as u32));
        }
        let (recent, mut rx) = events.subscribe();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].seq, 6);
        events.publish("slot.lost", About::slot("web", 0));
        let next = rx.try_recv().unwrap();
        assert_eq!(next.seq, recent[RECENT - 1].seq + 1);
        assert_eq!(next.kind, "slot.lost");
        assert_eq!(events.counts()["slot.claimed"], RECENT as u64 + 5);
    }

    #[test]
    fn every_field_is_in_the_json_shape() {
        let events = Events::new("n1".into());
        events.publish("member.up", About::default());
        let (recent, _) = events.subscribe();
        let json = serde_json::to_value(&recent[0]).unwrap();
        for field in [
            "seq", "time_ms", "node", "kind", "peer", "service", "slot", "version", "detail",
        ] {
            assert!(json.get(field).is_some(), "{field} missing from {json}");
        }
    }
}
