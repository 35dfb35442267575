//! A hybrid logical clock: timestamps that follow wall time but never go
//! backwards, and that order every write in the cluster totally.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point in hybrid logical time. Ordered by `(wall_ms, counter, node)`,
/// so two writes by different nodes never compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Wall clock of the writer, milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Writes within the same millisecond, or after seeing a clock ahead.
    pub counter: u32,
    /// Name of the writer.
    pub node: String,
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.counter, self.node)
    }
}

/// One node's clock. Time comes in from the caller (`now_ms`).
#[derive(Debug, Clone)]
pub struct Clock {
    node: String,
    wall_ms: u64,
    counter: u32,
}

impl Clock {
    /// A clock for `node` that has seen nothing yet.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            wall_ms: 0,
            counter: 0,
        }
    }

    /// A timestamp for a local write: greater than every timestamp this
    /// clock issued or observed.
    pub fn tick(&mut self, now_ms: u64) -> Timestamp {
        if now_ms > self.wall_ms {
            self.wall_ms = now_ms;
            self.counter = 0;
        } else if let Some(next) = self.counter.checked_add(1) {
            self.counter = next;
        } else {
            // 4 billion writes in one millisecond: borrow the next one.
            self.wall_ms = self.wall_ms.saturating_add(1);
            self.counter = 0;
        }
        Timestamp {
            wall_ms: self.wall_ms,
            counter: self.counter,
            node: self.node.clone(),
        }
    }

    /// Takes a remote timestamp into account, so the next local write
    /// orders after it.
    pub fn observe(&mut self, seen: &Timestamp) {
        if (seen.wall_ms, seen.counter) > (self.wall_ms, self.counter) {
            self.wall_ms = seen.wall_ms;
            self.counter = seen.counter;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_wall_time_stalls_or_goes_back() {
        let mut c = Clock::new("a");
        let t1 = c.tick(100);
        let t2 = c.tick(100);
        let t3 = c.tick(50);
        let t4 = c.tick(200);
        assert!(t1 < t2 && t2 < t3 && t3 < t4);
        assert_eq!((t4.wall_ms, t4.counter), (200, 0));
    }

    #[test]
    fn a_write_after_observing_orders_after_what_was_observed() {
        let mut a = Clock::new("a");
        let mut b = Clock::new("b");
        let remote = b.tick(10_000);
        a.observe(&remote);
        let local = a.tick(5_000);
        assert!(local > remote);
    }

    #[test]
    fn the_end_of_time_does_not_panic() {
        let mut c = Clock::new("a");
        c.observe(&Timestamp {
            wall_ms: u64::MAX,
            counter: u32::MAX,
            node: "broken".into(),
        });
        let t = c.tick(1);
        assert_eq!(t.wall_ms, u64::MAX);
    }

    #[test]
    fn ties_are_broken_by_node() {
        let x = Clock::new("a").tick(1);
        let y = Clock::new("b").tick(1);
        assert!(x < y);
    }
}
