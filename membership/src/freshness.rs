//! Freshness of datagrams: each carries its send time inside the sealed
//! box, and is refused when it is older or newer than [`WINDOW_MS`], or
//! when its nonce was already seen within the window. So a datagram
//! recorded on the wire cannot be played again, then or later.
//!
//! Clocks of members must agree within the window; an agent whose clock is
//! further off has its datagrams refused (and counted, and logged).
//!
//! The send time also tells each peer's clock offset (plus the one-way
//! delay, well under a millisecond on a LAN): [`ClockOffsets`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// How long an offset seen stays current.
pub const OFFSET_TTL: Duration = Duration::from_secs(60);
/// Most peers whose offsets are kept.
const MAX_PEERS: usize = 4096;

/// The clock offset of each peer that sent a datagram lately (its send
/// time minus our receive time, in ms: positive when its clock is ahead).
#[derive(Debug, Default)]
pub struct ClockOffsets {
    by_peer: HashMap<SocketAddr, (i64, Instant)>,
    /// Peers that refused our datagrams as stale, with how many of their
    /// own peers agree with their clock (from their notices).
    vouched: HashMap<SocketAddr, (u32, Instant)>,
}

impl ClockOffsets {
    /// Notes a datagram from `peer` sent at `sent_ms`, received at `now_ms`.
    pub fn observe(&mut self, peer: SocketAddr, sent_ms: u64, now_ms: u64, at: Instant) {
        if self.by_peer.len() >= MAX_PEERS && !self.by_peer.contains_key(&peer) {
            self.by_peer
                .retain(|_, (_, seen)| at.saturating_duration_since(*seen) < OFFSET_TTL);
            if self.by_peer.len() >= MAX_PEERS {
                return;
            }
        }
        let offset =
            i64::try_from(sent_ms).unwrap_or(i64::MAX) - i64::try_from(now_ms).unwrap_or(i64::MAX);
        self.by_peer.insert(peer, (offset, at));
    }

    /// Notes that `peer` refused our datagrams as stale, and that `agreeing`
    /// of its peers' clocks agree with its own.
    pub fn refused_by(&mut self, peer: SocketAddr, agreeing: u32, at: Instant) {
        if self.vouched.len() >= MAX_PEERS && !self.vouched.contains_key(&peer) {
            self.vouched
                .retain(|_, (_, seen)| at.saturating_duration_since(*seen) < OFFSET_TTL);
            if self.vouched.len() >= MAX_PEERS {
                return;
            }
        }
        self.vouched.insert(peer, (agreeing, at));
    }

    /// Peers heard lately whose clocks agree with ours (within the window).
    pub fn agreeing(&self, now: Instant) -> u32 {
        let window = i64::try_from(WINDOW_MS).unwrap_or(i64::MAX);
        let n = self
            .by_peer
            .values()
            .filter(|(o, seen)| {
                now.saturating_duration_since(*seen) < OFFSET_TTL && o.abs() <= window
            })
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The offset of `peer`, if it sent a datagram lately.
    pub fn of(&self, peer: SocketAddr, now: Instant) -> Option<i64> {
        self.by_peer
            .get(&peer)
            .filter(|(_, seen)| now.saturating_duration_since(*seen) < OFFSET_TTL)
            .map(|(offset, _)| *offset)
    }

    /// How far this node's own clock seems off, if it does: when the
    /// peers heard lately whose clocks are off from ours by more than
    /// [`WINDOW_MS`], each counted with the peers that agree with it (from
    /// its notice), outnumber this node and the peers that agree with it,
    /// the odd one out is this node. The median of their offsets, negated
    /// (positive: this clock is ahead). Two nodes alone can't tell whose
    /// clock is wrong.
    pub fn own_skew(&self, now: Instant) -> Option<i64> {
        let window = i64::try_from(WINDOW_MS).unwrap_or(i64::MAX);
        let recent = |seen: &Instant| now.saturating_duration_since(*seen) < OFFSET_TTL;
        let mut off: Vec<(i64, u64)> = self
            .by_peer
            .iter()
            .filter(|(_, (o, seen))| recent(seen) && o.abs() > window)
            .map(|(peer, (o, _))| {
                let vouched = self
                    .vouched
                    .get(peer)
                    .filter(|(_, seen)| recent(seen))
                    .map_or(0, |(n, _)| u64::from(*n));
                (*o, 1 + vouched)
            })
            .collect();
        let against: u64 = off.iter().map(|(_, weight)| weight).sum();
        let with = 1 + u64::from(self.agreeing(now));
        if off.is_empty() || against <= with {
            return None;
        }
        off.sort_unstable();
        Some(-off[off.len() / 2].0)
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
    fn the_odd_clock_out_knows_it_is_off() {
        let at = Instant::now();
        let peer = |i: u8| SocketAddr::from(([10, 0, 0, i], 7946));
        let two_hours = 2 * 3_600_000;
        // This clock runs two hours ahead of both peers'.
        let mut ours = ClockOffsets::default();
        ours.observe(peer(1), 1_000_000, 1_000_000 + two_hours, at);
        assert_eq!(ours.own_skew(at), None, "two nodes alone can't tell");
        ours.observe(peer(2), 1_000_005, 1_000_000 + two_hours, at);
        assert_eq!(ours.own_skew(at), Some(two_hours as i64 - 5));
        assert_eq!(ours.of(peer(1), at), Some(-(two_hours as i64)));
        // Or one peer, that says two more agree with it.
        let mut joined = ClockOffsets::default();
        joined.observe(peer(1), 1_000_000, 1_000_000 + two_hours, at);
        joined.refused_by(peer(1), 2, at);
        assert_eq!(joined.own_skew(at), Some(two_hours as i64));
        // A peer sees one of two off: not its own clock.
        let mut theirs = ClockOffsets::default();
        theirs.observe(peer(3), 1_000_000 + two_hours, 1_000_000, at);
        theirs.observe(peer(2), 1_000_010, 1_000_000, at);
        assert_eq!(theirs.agreeing(at), 1);
        assert_eq!(theirs.own_skew(at), None);
        // Offsets age out.
        assert_eq!(ours.of(peer(1), at + OFFSET_TTL), None);
        assert_eq!(ours.own_skew(at + OFFSET_TTL), None);
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
