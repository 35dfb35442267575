//! When the table forgets: the clock of garbage collection and who is gone
//! for good. What is garbage is decided by `mob_scheduler::gc`.

use std::collections::HashMap;
use std::time::Duration;

use mob_scheduler::Table;
use mob_scheduler::gc::{self, Horizon};
use mob_scheduler::placement::Members;
use tokio::time::Instant;

/// Longest time between two collections.
const MAX_PERIOD: Duration = Duration::from_secs(60);

/// Tracks when each node was last seen live and when to collect next.
pub(crate) struct Collector {
    max_age_ms: u64,
    period: Duration,
    /// Next collection.
    pub(crate) next_at: Instant,
    /// Unix ms this agent started: a node not seen since then counts as
    /// last seen now, so a restarted agent forgets nobody for `max_age`.
    started_ms: u64,
    /// Unix ms each node was last seen live.
    last_live: HashMap<String, u64>,
}

impl Collector {
    /// Collects what is older than `max_age`, a few times per `max_age`.
    pub(crate) fn new(max_age: Duration, now_ms: u64) -> Self {
        let period = (max_age / 4).min(MAX_PERIOD);
        Self {
            max_age_ms: u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
            period,
            next_at: Instant::now() + period,
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
    pub(crate) fn collect(&mut self, table: &Table, members: &Members, now_ms: u64) -> Vec<String> {
        self.next_at = Instant::now() + self.period;
        self.saw(members, now_ms);
        // Nodes unseen for long are gone either way (unknown ones count from
        // the agent's start): forget them, so churn doesn't grow the map.
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
        keys: &[String],
        now_ms: u64,
    ) -> Vec<String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_gone_only_after_max_age_unseen() {
        let day = 86_400_000;
        let mut c = Collector::new(Duration::from_millis(day), 0);
        let both = Members::new(["a".to_owned(), "b".to_owned()]);
        let only_a = Members::new(["a".to_owned()]);
        c.saw(&both, 10 * day);
        assert!(!c.gone(&only_a, "b", 10 * day + day / 2));
        assert!(c.gone(&only_a, "b", 11 * day + 1));
        assert!(!c.gone(&only_a, "a", 100 * day), "live is never gone");
        // Never seen: counted from the agent's start.
        assert!(!c.gone(&only_a, "c", day));
        assert!(c.gone(&only_a, "c", day + 1));
        // Churn doesn't grow the map, and a forgotten node stays gone.
        c.collect(&Table::new(), &only_a, 100 * day);
        assert!(!c.last_live.contains_key("b"));
        assert!(c.last_live.contains_key("a"));
        assert!(c.gone(&only_a, "b", 100 * day));
    }
}
