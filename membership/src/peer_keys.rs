//! [`PeerKeys`]: which keys each peer said it holds, so that a datagram to
//! it is sealed with one it can open (see [`crate::Envelope`]).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::key::KeyId;

/// Peers remembered at most; past it, the map starts over (a peer that is
/// forgotten is sent the primary until it speaks again).
pub const MAX_PEERS: usize = 4096;

/// The key ids the last fresh datagram from each address named.
#[derive(Debug, Default)]
pub struct PeerKeys {
    by_addr: HashMap<SocketAddr, Vec<KeyId>>,
}

impl PeerKeys {
    /// Notes what `from` holds (from a datagram that opened and was fresh).
    pub fn heard(&mut self, from: SocketAddr, keys: Vec<KeyId>) {
        if self.by_addr.get(&from) == Some(&keys) {
            return;
        }
        if self.by_addr.len() >= MAX_PEERS && !self.by_addr.contains_key(&from) {
            self.by_addr.clear();
        }
        self.by_addr.insert(from, keys);
    }

    /// What `to` holds, as far as known (empty if not).
    pub fn of(&self, to: SocketAddr) -> &[KeyId] {
        self.by_addr.get(&to).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_and_stays_bounded() {
        let mut peers = PeerKeys::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(peers.of(a).is_empty());
        peers.heard(a, vec![KeyId([1; 4])]);
        peers.heard(a, vec![KeyId([2; 4]), KeyId([1; 4])]);
        assert_eq!(peers.of(a), &[KeyId([2; 4]), KeyId([1; 4])]);
        for port in 2..=(MAX_PEERS as u16 + 10) {
            peers.heard(SocketAddr::from(([127, 0, 0, 1], port)), vec![]);
        }
        assert!(peers.by_addr.len() <= MAX_PEERS);
    }
}
