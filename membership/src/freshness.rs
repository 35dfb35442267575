//! Freshness of datagrams: each carries its send time inside the sealed
//! box, and is refused when it is older or newer than [`WINDOW_MS`], or
//! when its nonce was already seen within the window. So a datagram
//! recorded on the wire cannot be played again, then or later.
//!
//! Clocks of members must agree within the window; an agent whose clock is
//! further off has its datagrams refused (and counted, and logged).

use std::collections::{HashMap, VecDeque};

/// How far a datagram's send time may be from the receiver's clock.
pub const WINDOW_MS: u64 = 30_000;
/// Most nonces remembered; beyond, the oldest are forgotten first (a peer
/// holding the key could otherwise grow the set without bound). At gossip
/// rates a window holds a few thousand.
pub const MAX_REMEMBERED: usize = 200_000;

/// Why a datagram is not fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    /// Sent too long ago (or by a clock that far behind).
    #[error(
        "sent {0} ms ago, outside the {WINDOW_MS} ms window (a replay, or the sender's clock is behind)"
    )]
    Old(u64),
    /// Sent in the future (a clock ahead).
    #[error(
        "sent {0} ms ahead of this clock, outside the {WINDOW_MS} ms window (the sender's clock is ahead)"
    )]
    Ahead(u64),
    /// Its nonce was seen already: a replay.
    #[error("nonce seen already: a replay")]
    Replayed,
}

/// The nonces seen within the window.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<[u8; 24], u64>,
    order: VecDeque<([u8; 24], u64)>,
}

impl ReplayGuard {
    /// Checks a datagram sent at `sent_ms` with `nonce`, received at
    /// `now_ms`, and remembers its nonce if it passes.
    pub fn check(&mut self, nonce: [u8; 24], sent_ms: u64, now_ms: u64) -> Result<(), Stale> {
        if now_ms > sent_ms && now_ms - sent_ms > WINDOW_MS {
            return Err(Stale::Old(now_ms - sent_ms));
        }
        if sent_ms > now_ms && sent_ms - now_ms > WINDOW_MS {
            return Err(Stale::Ahead(sent_ms - now_ms));
        }
        self.forget_before(now_ms.saturating_sub(2 * WINDOW_MS));
        if self.seen.contains_key(&nonce) {
            return Err(Stale::Replayed);
        }
        while self.order.len() >= MAX_REMEMBERED {
            self.pop_oldest();
        }
        // Kept until well past the time its datagram stops passing the
        // window (the sender's clock may be ahead by up to the window).
        self.seen.insert(nonce, sent_ms);
        self.order.push_back((nonce, now_ms));
        Ok(())
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn forget_before(&mut self, horizon: u64) {
        while self.order.front().is_some_and(|(_, at)| *at < horizon) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((nonce, _)) = self.order.pop_front() {
            self.seen.remove(&nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_passes_once_within_the_window() {
        let mut guard = ReplayGuard::default();
        let now = 1_000_000;
        assert_eq!(guard.check([1; 24], now - 10, now), Ok(()));
        assert_eq!(
            guard.check([1; 24], now - 10, now + 5),
            Err(Stale::Replayed)
        );
        assert_eq!(guard.check([2; 24], now + 10, now), Ok(()));
    }

    #[test]
    fn outside_the_window_is_refused_either_way() {
        let mut guard = ReplayGuard::default();
        let now = 1_000_000;
        assert_eq!(
            guard.check([1; 24], now - WINDOW_MS - 1, now),
            Err(Stale::Old(WINDOW_MS + 1))
        );
        assert_eq!(
            guard.check([2; 24], now + WINDOW_MS + 1, now),
            Err(Stale::Ahead(WINDOW_MS + 1))
        );
        assert!(guard.is_empty(), "refused nonces are not remembered");
    }

    #[test]
    fn old_nonces_are_forgotten_and_the_set_is_bounded() {
        let mut guard = ReplayGuard::default();
        for i in 0..100u8 {
            guard.check([i; 24], 1_000, 1_000).unwrap();
        }
        assert_eq!(guard.len(), 100);
        // Past twice the window: forgotten (their datagrams are stale anyway).
        let later = 1_000 + 2 * WINDOW_MS + 1;
        guard.check([200; 24], later, later).unwrap();
        assert_eq!(guard.len(), 1);
    }
}
