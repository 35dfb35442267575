//! At-most-once slots: a service with `partition = "at-most-once"` never
//! runs on two nodes at once, across any partition, at the price of not
//! running at all where no majority is in sight.
//!
//! # The rule
//! - A node runs (claims, starts, keeps) such a slot only while it sees a
//!   **majority** of the nodes in the table as alive: more than half of
//!   the `node/` records not marked leaving, counting itself, where a
//!   suspect member does not count. A node that loses the majority stops
//!   the slot.
//! - A node starts such a slot only when no other live member reports an
//!   instance of it active, at least the **margin** after it last saw a
//!   member go (down or left), measured on its own clock, and once it
//!   **caught up** with every member that came up or back since (an
//!   anti-entropy round with each): after a heal, the side that had lost
//!   the majority learns that the other side took the slot over before
//!   it could start it again on its stale table.
//! - A node starts such a slot only once its claim is **settled**: an
//!   anti-entropy round it began after the claim has completed with every
//!   live member. A claim another live member wrote at about the same time
//!   (two views of an unowned slot) has then reached it, and the later
//!   claim won before either started; and every live member's last status
//!   of the slot is in its table. (Time alone settles nothing: deltas can
//!   be lost, and rounds go to random peers.) The node begins the rounds it
//!   lacks itself.
//! - Handovers are stop-first: a node that no longer owns the slot stops
//!   at once, and it is never moved to even out the load.
//!
//! # Why the margin suffices
//! Say a partition starts at time 0, cutting node O (running the slot)
//! off from the majority side, of `n` nodes in the table.
//! - The majority side marks O down no sooner than `suspect_to_down_after`
//!   (a probe must fail first, at 0 at the earliest, then the suspicion
//!   times out). Every node of that side sees O go at `S` or later.
//! - O probes every member it can't reach within two rounds of its
//!   shuffled round-robin, so by `2 (n - 1) probe_period + probe_rtt` it
//!   suspects them all and has lost the majority; its stop then takes at
//!   most the service's `stop_timeout` (SIGKILL after).
//! - So the margin is `2 (n - 1) probe_period + probe_rtt - S` (at least
//!   0) plus `stop_timeout` and [`SLACK_MS`], times [`RATE_MARGIN`]: a
//!   node of the majority side starts the slot after O's instance is gone.
//!
//! The assumption is a **bounded clock rate**, not synchronized clocks:
//! each side measures only its own intervals, and two hosts' clocks may
//! run at rates up to [`RATE_MARGIN`] apart (crystals drift by parts per
//! million). A node frozen longer than the margin (a paused VM) breaks
//! it, as it breaks any lease.

use crate::hlc::Timestamp;
use crate::spec::ServiceSpec;

/// A reading of a node's hybrid clock, without the node: `(wall_ms,
/// counter)`. A reading taken after a record was written or received
/// here is greater than the record's.
pub type Reading = (u64, u32);

/// Added to every margin: scheduling and reaction delays on both sides.
pub const SLACK_MS: u64 = 1_000;
/// Factor that covers two clocks running at different rates.
pub const RATE_MARGIN: f64 = 1.05;

/// How fast membership notices a node is gone: what the margin is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    /// Period of one probe.
    pub probe_period_ms: u64,
    /// Wait for a direct ack.
    pub probe_rtt_ms: u64,
    /// Time from suspect to down.
    pub suspect_to_down_ms: u64,
}

impl Detection {
    /// How much longer than the majority side the minority side may take
    /// to know of a partition, with `nodes` nodes in the table.
    pub fn lag_ms(&self, nodes: usize) -> u64 {
        let probes = 2 * (nodes.max(1) as u64 - 1);
        (probes * self.probe_period_ms + self.probe_rtt_ms).saturating_sub(self.suspect_to_down_ms)
    }
}

/// What one node knows of the majority, at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    majority: bool,
    caught_up: bool,
    settled_before: Reading,
    lost_at_ms: u64,
    lag_ms: u64,
}

impl Default for Quorum {
    /// A node that knows nothing better: a majority, nothing lost.
    fn default() -> Self {
        Self {
            majority: true,
            caught_up: true,
            settled_before: (u64::MAX, u32::MAX),
            lost_at_ms: 0,
            lag_ms: 0,
        }
    }
}

impl Quorum {
    /// `alive` of the `nodes` in the table are alive (this node included);
    /// this node last saw a member go at `lost_at_ms`, and `caught_up`
    /// with every member that came up since; a round begun at
    /// `settled_before` or later completed with every live member (so
    /// claims older than that are settled).
    pub fn new(
        nodes: usize,
        alive: usize,
        caught_up: bool,
        lost_at_ms: u64,
        settled_before: Reading,
        detection: &Detection,
    ) -> Self {
        Self {
            majority: 2 * alive > nodes,
            caught_up,
            settled_before,
            lost_at_ms,
            lag_ms: detection.lag_ms(nodes),
        }
    }

    /// Whether this node sees a majority alive.
    pub fn majority(&self) -> bool {
        self.majority
    }

    /// Whether this node caught up with every member that came up since
    /// it last did.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// The margin of `spec` after a member goes.
    pub fn margin_ms(&self, spec: &ServiceSpec) -> u64 {
        let base = self.lag_ms + spec.stop_timeout.as_millis() as u64 + SLACK_MS;
        (base as f64 * RATE_MARGIN).ceil() as u64
    }

    /// From when this node may start an at-most-once slot of `spec`.
    pub fn start_at(&self, spec: &ServiceSpec) -> u64 {
        self.lost_at_ms.saturating_add(self.margin_ms(spec))
    }

    /// Whether a claim written at `claimed` is settled: a round begun
    /// after it completed with every live member.
    pub fn settled(&self, claimed: &Timestamp) -> bool {
        (claimed.wall_ms, claimed.counter) < self.settled_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec_file::parse_specs;

    const FOCA: Detection = Detection {
        probe_period_ms: 500,
        probe_rtt_ms: 150,
        suspect_to_down_ms: 1_500,
    };

    #[test]
    fn majority_is_more_than_half_of_the_table() {
        assert!(Quorum::new(5, 3, true, 0, (0, 0), &FOCA).majority());
        assert!(!Quorum::new(4, 2, true, 0, (0, 0), &FOCA).majority());
        assert!(!Quorum::new(5, 2, true, 0, (0, 0), &FOCA).majority());
        assert!(Quorum::new(1, 1, true, 0, (0, 0), &FOCA).majority());
    }

    #[test]
    fn the_margin_covers_the_minority_noticing_and_stopping() {
        let spec = &parse_specs(
            r#"{"name": "a", "provider": "exec", "stop_timeout": "10s", "params": {"command": "x"}}"#,
        )
        .unwrap()[0];
        let q = Quorum::new(5, 5, true, 7_000, (9_000, 2), &FOCA);
        // 2 x 4 probes of 500 ms + 150 ms rtt - 1.5 s down = 2.65 s lag.
        assert_eq!(FOCA.lag_ms(5), 2_650);
        let margin = q.margin_ms(spec);
        assert!(margin >= 2_650 + 10_000 + SLACK_MS, "{margin}");
        assert_eq!(q.start_at(spec), 7_000 + margin);
        // Settled: claims before the oldest of the last rounds' beginnings.
        let at = |wall_ms, counter| Timestamp {
            wall_ms,
            counter,
            node: "b".into(),
        };
        assert!(q.settled(&at(8_000, 7)));
        assert!(q.settled(&at(9_000, 1)));
        assert!(!q.settled(&at(9_000, 2)));
        assert!(!q.settled(&at(12_000, 0)));
        // More nodes, longer to probe them all.
        assert!(FOCA.lag_ms(100) > FOCA.lag_ms(5));
        assert_eq!(FOCA.lag_ms(1), 0);
    }
}
