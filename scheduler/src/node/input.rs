//! What a [`Node`](super::Node) is told: the inputs of its state machine.

use std::net::SocketAddr;

use crate::record::{Records, Status};
use crate::spec::ServiceSpec;

/// Numbers a request, so its [`Reply`](super::Reply) can be matched.
pub type RequestId = u64;

/// One thing that happened to the node.
#[derive(Debug, Clone)]
pub enum Input {
    /// An operator's request. Answered by one
    /// [`Effect::Reply`](super::Effect::Reply) with the same id, once the
    /// write is saved (or the save is overdue).
    Request(RequestId, Request),
    /// Records from a peer.
    Records(Source, Records),
    /// The member list, after every change (this node may be in it).
    Members(Vec<Peer>),
    /// An instance on this node changed state.
    Instance(InstanceReport),
    /// Time passed; do what is due. Call it at
    /// [`Node::next_deadline`](super::Node::next_deadline) at the latest.
    Tick,
    /// An anti-entropy round this node began with `peer` (a member's
    /// gossip address) completed: the table has caught up with it. Any
    /// other address is ignored.
    Synced(SocketAddr),
    /// An anti-entropy round this node began with `peer` (an
    /// [`Effect::Sync`](super::Effect::Sync)) failed.
    SyncFailed(SocketAddr),
    /// How far this node's clock seems off from its peers' (ms, positive:
    /// ahead), or `None`: while it is, operator writes are refused (peers
    /// would refuse them, or they would drag every clock along).
    ClockSkew(Option<i64>),
    /// The [`Effect::Save`](super::Effect::Save) numbered `seq` is done:
    /// the table as of that effect (and every earlier save) is on disk, or
    /// the write failed with the given message.
    Saved {
        /// Number of the save.
        seq: u64,
        /// What the disk said.
        result: Result<(), String>,
    },
}

/// An operator's write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Add or update services; all or nothing.
    Deploy(Vec<ServiceSpec>),
    /// Remove a live service.
    Remove(String),
    /// Set a live service's replicas.
    Scale(String, u32),
    /// Stop every instance of a live service, keeping its spec.
    Stop(String),
    /// Run a stopped service again.
    Start(String),
    /// Restart every instance, by the update policy, or one slot's.
    Restart(String, Option<u32>),
    /// Write a kept version (by default the one before the current) again
    /// as a new version.
    Rollback(String, Option<u64>),
    /// Mark this node draining (`true`) or eligible again (`false`).
    Drain(bool),
    /// `drain --node NODE`: mark another node draining (`true`) or
    /// eligible again. Written in its node record; that node takes it up
    /// when the record reaches it, and writes its record again itself.
    DrainNode(String, bool),
    /// `force-leave NODE`: forget a down or left node now. Its node and
    /// status records become tombstones, and every agent drops it from
    /// its member list until it starts again (and writes a record).
    ForceLeave(String),
    /// The agent stops gracefully: hand this node's slots over like a
    /// drain, but don't remember it when the agent starts again.
    Leave,
    /// `keys install`: every agent accepts the key.
    KeyInstall(super::keyring::RingKey),
    /// `keys use`: every agent seals with the key of this fingerprint.
    KeyUse(String),
    /// `keys remove`: no agent accepts the key of this fingerprint.
    KeyRemove(String),
}

/// How records from a peer arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A delta on the gossip broadcast.
    Delta,
    /// An anti-entropy round (periodic or newcomer), or a push of records
    /// that peer learned that way: what is new here is pushed on.
    AntiEntropy,
    /// A push from the node that wrote them, which pushed them to every
    /// member: not pushed on.
    Pushed,
}

impl Source {
    /// How records of an [`Effect::Push`](super::Effect::Push) with this
    /// `forward` are merged where they arrive.
    pub fn of_push(forward: bool) -> Self {
        if forward {
            Self::AntiEntropy
        } else {
            Self::Pushed
        }
    }
}

/// One member as membership sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Incarnation (a restart is a new one).
    pub incarnation: u64,
    /// Liveness.
    pub state: PeerState,
}

/// A member's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Answering probes.
    Alive,
    /// A probe failed; still counted as a member.
    Suspect,
    /// Down or left.
    Gone,
}

impl PeerState {
    /// Alive or suspect.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

/// The state of one instance on this node, as its supervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReport {
    /// Service.
    pub service: String,
    /// Slot.
    pub slot: u32,
    /// What the `status/` record says from now on.
    pub status: Status,
}
