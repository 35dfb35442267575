//! When the table is saved, and which writes wait for a save.
//!
//! A change is saved [`DEBOUNCE_MS`] after the last one, and at most
//! [`MAX_DELAY_MS`] after the first unsaved one, so a steady stream of
//! changes can't postpone the save for ever. A failed save is tried again
//! [`RETRY_MS`] later.
//!
//! An operator's write is held: saved at once (the save holds it beside
//! the table), then applied, broadcast and answered only when that save
//! is done. If the save fails, or the disk has not answered within
//! [`WAIT_MS`] (the table must keep serving), the write is dropped and
//! the answer is an error: acknowledged means on disk.

use super::effect::{Event, Reply};
use super::input::RequestId;
use crate::record::Records;

/// Quiet time after a change before the table is saved.
pub const DEBOUNCE_MS: u64 = 200;
/// Longest a change waits to be saved while changes keep coming.
pub const MAX_DELAY_MS: u64 = 1_000;
/// Longest an operator's answer waits for its save.
pub const WAIT_MS: u64 = 5_000;
/// Pause before a failed save is tried again.
pub const RETRY_MS: u64 = 5_000;

/// An operator's write waiting for its save.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The answer, once saved.
    pub(crate) reply: Reply,
    /// The records it writes.
    pub(crate) records: Records,
    /// Log lines for when it is applied.
    pub(crate) events: Vec<Event>,
}

/// A held write and the save it waits for.
#[derive(Debug, Clone)]
struct Waiting {
    id: RequestId,
    seq: u64,
    deadline: u64,
    held: Held,
}

/// Save scheduling and the answers that wait for saves.
#[derive(Debug, Clone, Default)]
pub(crate) struct Saves {
    /// Number of the last save asked for.
    seq: u64,
    /// Number of the last save done.
    done: u64,
    dirty_since: Option<u64>,
    due: Option<u64>,
    waiting: Vec<Waiting>,
}

impl Saves {
    /// A change to save soon.
    pub(crate) fn changed(&mut self, now: u64) {
        let first = *self.dirty_since.get_or_insert(now);
        self.due = Some(
            now.saturating_add(DEBOUNCE_MS)
                .min(first.saturating_add(MAX_DELAY_MS)),
        );
    }

    /// When the next debounced save is due.
    pub(crate) fn deadline(&self) -> Option<u64> {
        let first_wait = self.waiting.iter().map(|w| w.deadline).min();
        match (self.due, first_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A save failed: try again in a while (the table keeps changing, so
    /// a full disk would otherwise be written to at every change).
    pub(crate) fn retry(&mut self, now: u64) {
        self.dirty_since = Some(now);
        self.due = Some(now.saturating_add(RETRY_MS));
    }

    /// Whether an operator's write waits for a save.
    pub(crate) fn holding(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The records of the held writes.
    pub(crate) fn held_records(
        &self,
    ) -> impl Iterator<Item = &(crate::Key, std::sync::Arc<crate::Record>)> {
        self.waiting.iter().flat_map(|w| &w.held.records)
    }

    /// A save to ask for now, if one is due: its number.
    pub(crate) fn take_due(&mut self, now: u64) -> Option<u64> {
        match self.due {
            Some(at) if at <= now => Some(self.save_now()),
            _ => None,
        }
    }

    /// Asks for a save at once; returns its number.
    pub(crate) fn save_now(&mut self) -> u64 {
        self.dirty_since = None;
        self.due = None;
        self.seq += 1;
        self.seq
    }

    /// Holds a write until save `seq` is done, or `WAIT_MS` passed.
    pub(crate) fn hold(&mut self, id: RequestId, seq: u64, held: Held, now: u64) {
        self.waiting.push(Waiting {
            id,
            seq,
            deadline: now.saturating_add(WAIT_MS),
            held,
        });
    }

    /// Save `seq` is done (or failed): the writes it was for.
    pub(crate) fn done(&mut self, seq: u64) -> Vec<(RequestId, Held)> {
        self.done = self.done.max(seq.min(self.seq));
        let done = self.done;
        self.release(|w| w.seq <= done)
    }

    /// Writes whose save is overdue.
    pub(crate) fn overdue(&mut self, now: u64) -> Vec<(RequestId, Held)> {
        self.release(|w| w.deadline <= now)
    }

    fn release(&mut self, go: impl Fn(&Waiting) -> bool) -> Vec<(RequestId, Held)> {
        let (gone, kept) = std::mem::take(&mut self.waiting).into_iter().partition(go);
        self.waiting = kept;
        gone.into_iter().map(|w: Waiting| (w.id, w.held)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_debounced_but_not_for_ever() {
        let mut s = Saves::default();
        s.changed(1_000);
        assert_eq!(s.deadline(), Some(1_200));
        assert_eq!(s.take_due(1_100), None);
        for t in (1_100..2_100).step_by(100) {
            s.changed(t);
        }
        assert_eq!(
            s.deadline(),
            Some(2_000),
            "at most MAX_DELAY after the first"
        );
        assert_eq!(s.take_due(2_000), Some(1));
        assert_eq!(s.deadline(), None);
    }

    fn held() -> Held {
        Held {
            reply: Reply::Done(Ok(())),
            records: Vec::new(),
            events: Vec::new(),
        }
    }

    fn ids(released: Vec<(RequestId, Held)>) -> Vec<RequestId> {
        released.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn a_write_waits_for_its_save_or_the_deadline() {
        let mut s = Saves::default();
        let first = s.save_now();
        s.hold(7, first, held(), 0);
        let second = s.save_now();
        s.hold(8, second, held(), 10);
        assert!(s.holding());
        assert_eq!(ids(s.done(first)), vec![7]);
        assert!(s.overdue(WAIT_MS + 9).is_empty());
        assert_eq!(ids(s.overdue(WAIT_MS + 10)), vec![8]);
        assert!(s.done(second).is_empty());
        assert!(!s.holding());
    }

    #[test]
    fn a_failed_save_is_tried_again_later() {
        let mut s = Saves::default();
        s.changed(1_000);
        assert_eq!(s.take_due(1_200), Some(1));
        s.retry(1_300);
        assert_eq!(s.take_due(1_300 + RETRY_MS - 1), None);
        assert_eq!(s.take_due(1_300 + RETRY_MS), Some(2));
    }
}
