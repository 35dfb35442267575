//! When the table is saved, and which answers wait for a save.
//!
//! A change is saved [`DEBOUNCE_MS`] after the last one, and at most
//! [`MAX_DELAY_MS`] after the first unsaved one, so a steady stream of
//! changes can't postpone the save for ever. An operator's write is saved
//! at once and answered only when the save is done, or after
//! [`WAIT_MS`] if the disk hangs (the table must keep serving).

use super::effect::Reply;
use super::input::RequestId;

/// Quiet time after a change before the table is saved.
pub const DEBOUNCE_MS: u64 = 200;
/// Longest a change waits to be saved while changes keep coming.
pub const MAX_DELAY_MS: u64 = 1_000;
/// Longest an operator's answer waits for its save.
pub const WAIT_MS: u64 = 5_000;

/// An answer waiting for a save.
#[derive(Debug, Clone)]
struct Waiting {
    id: RequestId,
    seq: u64,
    deadline: u64,
    reply: Reply,
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

    /// Holds `reply` until save `seq` is done, or `WAIT_MS` passed.
    pub(crate) fn hold(&mut self, id: RequestId, seq: u64, reply: Reply, now: u64) {
        self.waiting.push(Waiting {
            id,
            seq,
            deadline: now.saturating_add(WAIT_MS),
            reply,
        });
    }

    /// Save `seq` is done: the answers it releases.
    pub(crate) fn done(&mut self, seq: u64) -> Vec<(RequestId, Reply)> {
        self.done = self.done.max(seq.min(self.seq));
        let done = self.done;
        self.release(|w| w.seq <= done)
    }

    /// Answers whose save is overdue.
    pub(crate) fn overdue(&mut self, now: u64) -> Vec<(RequestId, Reply)> {
        self.release(|w| w.deadline <= now)
    }

    fn release(&mut self, go: impl Fn(&Waiting) -> bool) -> Vec<(RequestId, Reply)> {
        let (gone, kept) = std::mem::take(&mut self.waiting).into_iter().partition(go);
        self.waiting = kept;
        gone.into_iter().map(|w: Waiting| (w.id, w.reply)).collect()
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

    #[test]
    fn an_answer_waits_for_its_save_or_the_deadline() {
        let mut s = Saves::default();
        let first = s.save_now();
        s.hold(7, first, Reply::Done, 0);
        let second = s.save_now();
        s.hold(8, second, Reply::Done, 10);
        assert_eq!(s.done(first), vec![(7, Reply::Done)]);
        assert!(s.overdue(WAIT_MS + 9).is_empty());
        assert_eq!(s.overdue(WAIT_MS + 10), vec![(8, Reply::Done)]);
        assert!(s.done(second).is_empty());
    }
}
