//! What a [`Node`](super::Node) asks its caller to do: the effects of its
//! state machine, and the events an operator sees in the logs.

use std::net::SocketAddr;

use super::input::RequestId;
use super::ops::{Deployed, OpError, ServiceChange};
use crate::reconcile::Reason;
use crate::record::Records;
use crate::spec::ServiceSpec;

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send each record as a delta on the gossip broadcast (best effort;
    /// a record too big for a datagram is left to anti-entropy).
    Broadcast(Records),
    /// Run an anti-entropy round with this peer: periodic, a newcomer, or
    /// the push of a bulk write.
    Sync(SocketAddr),
    /// Send these records to this peer on a stream, to merge as records
    /// of anti-entropy: a bulk write, or records learned that way, pushed
    /// on. (A round's digest exchange would move every record of every
    /// bucket the new ones fall in, both ways: the whole table, for a
    /// write that touches all buckets.)
    Push {
        /// A member's gossip address.
        peer: SocketAddr,
        /// The records.
        records: Records,
        /// Whether the peer pushes on what is new to it (merges them as
        /// [`Source::AntiEntropy`](super::Source::AntiEntropy)), or this
        /// push went to every member ([`Source::Pushed`](super::Source::Pushed)).
        forward: bool,
    },
    /// Run a slot here (no-op if it runs already with this spec).
    Start {
        /// The spec.
        spec: Box<ServiceSpec>,
        /// Slot.
        slot: u32,
        /// Version of the spec.
        version: u64,
    },
    /// Stop this node's instance of a slot (no-op if none).
    Stop {
        /// Service.
        service: String,
        /// Slot.
        slot: u32,
    },
    /// Write [`Node::table`](super::Node::table), as it is right after this
    /// call, to disk; then report [`Input::Saved`](super::Input::Saved)
    /// with this number. Saves may be coalesced: writing a later one
    /// answers the earlier ones too.
    Save {
        /// Number of the save, growing.
        seq: u64,
    },
    /// The answer to a request.
    Reply(RequestId, Reply),
    /// Something an operator cares about.
    Log(Event),
    /// The keys the agent holds changed: seal and open with these from
    /// now on, and save them.
    Keyring(super::keyring::Ring),
    /// The nodes forgotten by `force-leave` changed: membership leaves
    /// these out of the member list (and stops calling them) while they
    /// are down or left.
    Forgotten(std::collections::BTreeSet<String>),
}

/// The answer to a [`Request`](super::Request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Of a deploy: per service, what was written.
    Deployed(Result<Vec<Deployed>, OpError>),
    /// Of a remove or a scale: the version written.
    Written(Result<u64, OpError>),
    /// Of a drain or a leave.
    Done(Result<(), OpError>),
}

impl Reply {
    /// The same kind of answer, refusing with `error`.
    pub(crate) fn refused(&self, error: OpError) -> Reply {
        match self {
            Reply::Deployed(_) => Reply::Deployed(Err(error)),
            Reply::Written(_) => Reply::Written(Err(error)),
            Reply::Done(_) => Reply::Done(Err(error)),
        }
    }
}

/// One line in the agent's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A service was deployed, updated or removed, here or by a peer.
    Service(ServiceChange),
    /// This node claimed an unowned slot.
    SlotClaimed {
        /// Service.
        service: String,
        /// Slot.
        slot: u32,
    },
    /// This node took over a slot whose owner is down, left or ineligible.
    SlotMoved {
        /// Service.
        service: String,
        /// Slot.
        slot: u32,
        /// The owner before.
        from: String,
    },
    /// This node, over the load cap, handed a running slot to another
    /// node (it keeps its instance until the new one runs).
    SlotHandedOver {
        /// Service.
        service: String,
        /// Slot.
        slot: u32,
        /// The new owner.
        to: String,
    },
    /// This node gave a slot up.
    SlotReleased {
        /// Service.
        service: String,
        /// Slot.
        slot: u32,
        /// Why.
        reason: Reason,
    },
    /// Another node owns a slot this node ran (a lost race, a heal).
    SlotLost {
        /// Service.
        service: String,
        /// Slot.
        slot: u32,
    },
    /// This node replaced its instance of a slot with the new version: a
    /// step of a rolling update.
    UpdateProgressed {
        /// Service.
        service: String,
        /// The version it runs now.
        version: u64,
        /// Slot.
        slot: u32,
    },
    /// This node's instance of a slot failed its update: the update stops.
    UpdateFailed {
        /// Service.
        service: String,
        /// The service version whose update failed.
        version: u64,
        /// Slot.
        slot: u32,
        /// Why.
        why: String,
    },
    /// This node wrote a healthy version back after an update failed.
    UpdateReverted {
        /// Service.
        service: String,
        /// The version written.
        version: u64,
        /// The version that failed.
        failed: u64,
        /// The healthy version it restores.
        to: u64,
        /// The slot whose failure this node saw.
        slot: u32,
    },
    /// An operator drained this node.
    Draining,
    /// An operator undid the drain.
    DrainUndone,
    /// An operator asked another node to drain (`on`) or to take slots
    /// again; that node does it when its record reaches it.
    DrainRequested {
        /// The node.
        node: String,
        /// Draining or not.
        on: bool,
    },
    /// An operator made this agent forget a down or left node.
    NodeForgotten {
        /// The node.
        node: String,
    },
    /// The table caught up with a peer: claiming is enabled.
    CaughtUp,
    /// This node no longer sees a majority of the nodes alive: it stops
    /// its at-most-once slots.
    MajorityLost,
    /// This node sees a majority again.
    MajorityRegained,
    /// Records from a peer that this version would not write were dropped.
    RecordsRejected {
        /// How many.
        count: usize,
    },
    /// Records of the saved table stamped more than
    /// [`MAX_CLOCK_AHEAD_MS`](super::admission::MAX_CLOCK_AHEAD_MS) ahead
    /// of the clock were dropped at start.
    FutureRecordsDropped {
        /// How many.
        count: usize,
    },
    /// Garbage collection forgot records.
    Forgot {
        /// How many.
        count: usize,
    },
    /// Saves fail (logged once a minute while they do).
    SaveFailed {
        /// The OS error.
        error: String,
        /// Saves failed since the last success.
        failures: u64,
    },
    /// A save succeeded after failures.
    SaveRecovered {
        /// Saves that had failed.
        failures: u64,
    },
    /// An operator's write was refused: its save did not finish in time.
    SaveSlow,
}
