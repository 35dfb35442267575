//! Rate limit for logging rejected packets: at most one line a second per
//! peer, so a flood can't flood the log. Memory is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PERIOD: Duration = Duration::from_secs(1);
const MAX_PEERS: usize = 1024;

/// Remembers when each peer was last logged.
#[derive(Debug)]
pub(crate) struct RejectLog {
    last: HashMap<SocketAddr, Instant>,
    period: Duration,
}

impl Default for RejectLog {
    fn default() -> Self {
        Self::every(PERIOD)
    }
}

impl RejectLog {
    /// At most one line per `period` per peer.
    pub(crate) fn every(period: Duration) -> Self {
        Self {
            last: HashMap::new(),
            period,
        }
    }

    /// Whether a rejection from `peer` at `now` should be logged.
    pub(crate) fn should_log(&mut self, peer: SocketAddr, now: Instant) -> bool {
        if let Some(at) = self.last.get(&peer)
            && now.saturating_duration_since(*at) < self.period
        {
            return false;
        }
        if self.last.len() >= MAX_PEERS {
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < self.period);
            if self.last.len() >= MAX_PEERS {
                return false;
            }
        }
        self.last.insert(peer, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_a_second_per_peer() {
        let mut log = RejectLog::default();
        let (a, b): (SocketAddr, SocketAddr) =
            ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap());
        let t0 = Instant::now();
        assert!(log.should_log(a, t0));
        assert!(!log.should_log(a, t0 + Duration::from_millis(999)));
        assert!(log.should_log(b, t0));
        assert!(log.should_log(a, t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn memory_is_bounded() {
        let mut log = RejectLog::default();
        let t0 = Instant::now();
        for port in 0..5000u16 {
            log.should_log(SocketAddr::from(([10, 0, 0, 1], port)), t0);
        }
        assert!(log.last.len() <= MAX_PEERS);
    }
}
