//! When the table forgets: the clock of garbage collection and who is gone
//! for good. What is garbage is decided by [`crate::gc`].

use std::collections::HashMap;

use crate::gc::{self, Horizon};
use crate::key::Key;
use crate::placement::Members;
use crate::table::Table;

/// Longest time between two collections.
const MAX_PERIOD_MS: u64 = 60_000;

/// Tracks when each node was last seen live and when to collect next.
#[derive(Debug, Clone)]
pub(crate) struct Collector {
    max_age_ms: u64,
    period_ms: u64,
    /// Next collection (unix ms).
    pub(crate) next_at: u64,
    /// When this node started: a node not seen since counts as last seen
    /// then, so a restarted node forgets nobody for `max_age`.
    started_ms: u64,
    /// When each node was last seen live.
    last_live: HashMap<String, u64>,
}

impl Collector {
    /// Collects what is older than `max_age_ms`, a few times per
    /// `max_age_ms`.
    pub(crate) fn new(max_age_ms: u64, now_ms: u64) -> Self {
        let period_ms = (max_age_ms / 4).clamp(1, MAX_PERIOD_MS);
        Self {
            max_age_ms,
            period_ms,
            next_at: now_ms.saturating_add(period_ms),
            started_ms: now_ms,
            last_live: HashMap::new(),
        }
    }

    /// Notes the members live at `now_ms`.
    pub(crate) fn saw(&mut self, members: &Members, now_ms: u64) {
        for name in members.names() {
            match self.last_live.get_mut(name) {
                Some(at) => *at = now_ms,
                None => {
                    self.last_live.insert(name.to_owned(), now_ms);
                }
            }
        }
    }

    fn gone(&self, members: &Members, node: &str, now_ms: u64) -> bool {
        let last = self.last_live.get(node).copied().unwrap_or(self.started_ms);
        !members.is_live(node) && now_ms.saturating_sub(last) > self.max_age_ms
    }

    /// The keys to forget now; schedules the next collection.
    pub(crate) fn collect(&mut self, table: &Table, members: &Members, now_ms: u64) -> Vec<Key> {
        self.next_at = now_ms.saturating_add(self.period_ms);
        self.saw(members, now_ms);
        // Nodes unseen for long are gone either way (unknown ones count from
        // the node's start): forget them, so churn doesn't grow the map.
        let horizon = now_ms.saturating_sub(self.max_age_ms.saturating_mul(2));
        if self.started_ms < horizon {
            self.last_live.retain(|_, at| *at >= horizon);
        }
        let gone = |node: &str| self.gone(members, node, now_ms);
        gc::garbage(
            table,
            &Horizon {
                before_ms: now_ms.saturating_sub(self.max_age_ms),
                gone: &gone,
            },
        )
    }

    /// Of `keys`, just merged in from a peer and new to this table, those
    /// this node would forget at once: keeping them would only send them
    /// back and forth. Judged on the table after the merge, so a claim
    /// that came with its service's record (a newcomer's first round)
    /// stays.
    pub(crate) fn refused(
        &self,
        table: &Table,
        members: &Members,
        keys: &[Key],
        now_ms: u64,
    ) -> Vec<Key> {
        let gone = |node: &str| self.gone(members, node, now_ms);
        let horizon = Horizon {
            before_ms: now_ms.saturating_sub(self.max_age_ms),
            gone: &gone,
        };
        keys.iter()
            .filter(|key| {
                table
                    .get(key)
                    .is_some_and(|record| gc::is_garbage(table, key, record, &horizon))
            })
            .cloned()
            .collect()
    }

    /// The age after which records can be garbage.
    pub(crate) fn max_age_ms(&self) -> u64 {
        self.max_age_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_gone_only_after_max_age_unseen() {
        let day = 86_400_000;
        let mut c = Collector::new(day, 0);
        let both = Members::new(["a".to_owned(), "b".to_owned()]);
        let only_a = Members::new(["a".to_owned()]);
        c.saw(&both, 10 * day);
        assert!(!c.gone(&only_a, "b", 10 * day + day / 2));
        assert!(c.gone(&only_a, "b", 11 * day + 1));
        assert!(!c.gone(&only_a, "a", 100 * day), "live is never gone");
        // Never seen: counted from the node's start.
        assert!(!c.gone(&only_a, "c", day));
        assert!(c.gone(&only_a, "c", day + 1));
        // Churn doesn't grow the map, and a forgotten node stays gone.
        c.collect(&Table::new(), &only_a, 100 * day);
        assert!(!c.last_live.contains_key("b"));
        assert!(c.last_live.contains_key("a"));
        assert!(c.gone(&only_a, "b", 100 * day));
    }
}
