//! Counters an operator (and the tests) read through `mob-agent stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Live counters, shared between the membership tasks.
#[derive(Debug, Default)]
pub struct Stats {
    /// When rejected stream frames were last logged, per peer address.
    stream_rejects: std::sync::Mutex<crate::reject_log::RejectLog>,
    /// Peers' clock offsets, from their datagrams' send times.
    clock: std::sync::Mutex<crate::freshness::ClockOffsets>,
    packets_rejected: AtomicU64,
    /// By [`Rejected`] reason, in its order.
    rejected_by: [AtomicU64; Rejected::ALL.len()],
    datagrams_sent: AtomicU64,
    datagrams_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    dropped_notices: AtomicU64,
    stream_bytes_sent: AtomicU64,
    stream_bytes_received: AtomicU64,
    connections_refused: AtomicU64,
}

/// Why a packet or frame was rejected: the `reason` label of the
/// `mob_packets_rejected_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// A datagram that no accepted key opens (a wrong key, or garbage).
    Unopened,
    /// A datagram seen before within the freshness window.
    Replayed,
    /// A datagram sent outside the freshness window (a skewed clock).
    Stale,
    /// A datagram that opened but does not decode.
    Malformed,
    /// A stream frame that failed to open, decode or come in sequence.
    Stream,
}

impl Rejected {
    /// Every reason, in the order of [`StatsSnapshot::rejected_by`].
    pub const ALL: [Rejected; 5] = [
        Self::Unopened,
        Self::Replayed,
        Self::Stale,
        Self::Malformed,
        Self::Stream,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unopened => "unopened",
            Self::Replayed => "replayed",
            Self::Stale => "stale",
            Self::Malformed => "malformed",
            Self::Stream => "stream",
        }
    }
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Datagrams and stream frames that failed to open or decode
    ///
    pub packets_rejected: u64,
    /// Of those, by [`Rejected`] reason, in the order of [`Rejected::ALL`].
    pub rejected_by: [u64; 5],
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// UDP datagrams received (accepted or not).
    pub datagrams_received: u64,
    /// UDP bytes sent, envelope included.
    pub bytes_sent: u64,
    /// UDP bytes received, envelope included.
    pub bytes_received: u64,
    /// Events or broadcasts dropped because their consumer lagged.
    pub dropped_notices: u64,
    /// Sealed stream frame bytes sent (push-pull, anti-entropy, logs).
    pub stream_bytes_sent: u64,
    /// Sealed stream frame bytes received.
    pub stream_bytes_received: u64,
    /// TCP connections refused: too many without a hello (in all, or from
    /// one address), or too many streams.
    pub connections_refused: u64,
}

impl Stats {
    pub(crate) fn rejected(&self, why: Rejected) {
        self.packets_rejected.fetch_add(1, Ordering::Relaxed);
        self.rejected_by[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a rejected stream frame from `peer`, and says whether to log
    /// it (at most once a second per peer address; connections from one
    /// host share it whatever their port).
    pub(crate) fn stream_rejected(&self, peer: std::net::SocketAddr) -> bool {
        self.rejected(Rejected::Stream);
        let host = std::net::SocketAddr::new(peer.ip(), 0);
        self.stream_rejects
            .lock()
            .map(|mut log| log.should_log(host, std::time::Instant::now()))
            .unwrap_or(false)
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.datagrams_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.datagrams_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn stream_sent(&self, bytes: usize) {
        self.stream_bytes_sent
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn stream_received(&self, bytes: usize) {
        self.stream_bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn refused_connection(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes a datagram's send time, for `peer`'s clock offset.
    pub(crate) fn clock_seen(&self, peer: std::net::SocketAddr, sent_ms: u64, now_ms: u64) {
        if let Ok(mut clock) = self.clock.lock() {
            clock.observe(peer, sent_ms, now_ms, std::time::Instant::now());
        }
    }

    /// Notes a peer's notice that it refused our datagrams as stale.
    pub(crate) fn refused_by(&self, peer: std::net::SocketAddr, agreeing: u32) {
        if let Ok(mut clock) = self.clock.lock() {
            clock.refused_by(peer, agreeing, std::time::Instant::now());
        }
    }

    /// Peers heard lately whose clocks agree with ours.
    pub(crate) fn clock_agreeing(&self) -> u32 {
        self.clock
            .lock()
            .map_or(0, |clock| clock.agreeing(std::time::Instant::now()))
    }

    /// `peer`'s clock offset in ms (positive: ahead of ours), if it sent a
    /// datagram in the last minute.
    pub fn clock_offset(&self, peer: std::net::SocketAddr) -> Option<i64> {
        let clock = self.clock.lock().ok()?;
        clock.of(peer, std::time::Instant::now())
    }

    /// How far this node's clock seems off from its peers', if it does
    /// (see [`crate::freshness::ClockOffsets::own_skew`]).
    pub fn own_clock_skew(&self) -> Option<i64> {
        let clock = self.clock.lock().ok()?;
        clock.own_skew(std::time::Instant::now())
    }

    pub(crate) fn dropped_notice(&self) {
        self.dropped_notices.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            packets_rejected: get(&self.packets_rejected),
            rejected_by: std::array::from_fn(|i| get(&self.rejected_by[i])),
            datagrams_sent: get(&self.datagrams_sent),
            datagrams_received: get(&self.datagrams_received),
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            dropped_notices: get(&self.dropped_notices),
            stream_bytes_sent: get(&self.stream_bytes_sent),
            stream_bytes_received: get(&self.stream_bytes_received),
            connections_refused: get(&self.connections_refused),
        }
    }
}
