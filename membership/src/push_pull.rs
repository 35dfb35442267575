//! Membership push-pull over a sealed stream: both sides send their full
//! member list and apply the other's. SWIM gossip alone can take minutes to
//! merge two halves of a healed partition; this takes one round trip.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Most members taken from one push-pull message; the rest are ignored.
pub(crate) const MAX_MEMBERS: usize = 4096;

/// One side's membership.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PushPull {
    /// foca's membership state, plus the sender itself as alive.
    pub(crate) members: Vec<foca::Member<NodeId>>,
}

impl PushPull {
    /// Caps what a peer can make us apply.
    pub(crate) fn into_bounded(mut self) -> Vec<foca::Member<NodeId>> {
        self.members.truncate(MAX_MEMBERS);
        self.members
    }
}
