//! What the rest of the agent sees of membership: member views and events.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A member's state as an operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// A probe failed; declared down unless it refutes in time.
    Suspect,
    /// Declared failed.
    Down,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// Alive or suspect: still counted as a member.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }

    /// The lowercase name used in logs and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Down => "down",
            Self::Left => "left",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the member list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Identity, latest epoch known.
    pub id: NodeId,
    /// Current state.
    pub state: MemberState,
    /// When this agent saw it enter that state (unix ms; for this agent
    /// itself, its epoch).
    #[serde(default)]
    pub since_ms: u64,
}

/// A membership change, published once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// A new member, or a new epoch of a known one, is alive.
    Up(NodeId),
    /// A member failed a probe.
    Suspect(NodeId),
    /// A member was declared failed.
    Down(NodeId),
    /// A member left gracefully.
    Left(NodeId),
}

impl MemberEvent {
    /// The member the event is about.
    pub fn id(&self) -> &NodeId {
        match self {
            Self::Up(id) | Self::Suspect(id) | Self::Down(id) | Self::Left(id) => id,
        }
    }
}
