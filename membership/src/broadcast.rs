//! Custom broadcasts: opaque payloads spread to every member by foca's
//! piggybacked gossip, best effort.
//!
//! Each item is `origin (8) | seq (8) | payload`. The handler remembers a
//! bounded window of the items it has seen, so an item is delivered (and
//! re-gossiped) once per node, and circulates only `max_transmissions`
//! times per node.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::NodeId;
use crate::stats::Stats;

const HEADER: usize = 16;
const SEEN_WINDOW: usize = 8192;

/// Largest payload of one broadcast: leaves room in a 1400-byte datagram
/// for the SWIM header (two identities) and membership updates.
pub const MAX_BROADCAST: usize = 1024 - HEADER;

/// Identifies one broadcast item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ItemKey {
    origin: u64,
    seq: u64,
}

impl foca::Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        self == other
    }
}

/// Builds the wire form of an item.
pub(crate) fn encode_item(origin: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut item = Vec::with_capacity(HEADER + payload.len());
    item.extend_from_slice(&origin.to_be_bytes());
    item.extend_from_slice(&seq.to_be_bytes());
    item.extend_from_slice(payload);
    item
}

/// An item shorter than its header.
#[derive(Debug, thiserror::Error)]
#[error("broadcast item of {0} bytes is shorter than its 16-byte header")]
pub(crate) struct BadItem(usize);

/// foca's broadcast handler: dedups and hands new payloads to the agent.
pub(crate) struct Handler {
    seen: HashSet<ItemKey>,
    order: VecDeque<ItemKey>,
    deliver: mpsc::Sender<Vec<u8>>,
    stats: Arc<Stats>,
}

impl Handler {
    pub(crate) fn new(deliver: mpsc::Sender<Vec<u8>>, stats: Arc<Stats>) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            deliver,
            stats,
        }
    }
}

impl foca::BroadcastHandler<NodeId> for Handler {
    type Key = ItemKey;
    type Error = BadItem;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeId>,
    ) -> Result<Option<ItemKey>, BadItem> {
        let (Some(origin), Some(seq)) = (data.get(..8), data.get(8..HEADER)) else {
            return Err(BadItem(data.len()));
        };
        let key = ItemKey {
            origin: u64::from_be_bytes(origin.try_into().map_err(|_| BadItem(data.len()))?),
            seq: u64::from_be_bytes(seq.try_into().map_err(|_| BadItem(data.len()))?),
        };
        if !self.seen.insert(key) {
            return Ok(None);
        }
        self.order.push_back(key);
        if self.order.len() > SEEN_WINDOW
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        // Our own items (no sender) are not delivered back to us.
        if sender.is_some() && self.deliver.try_send(data[HEADER..].to_vec()).is_err() {
            self.stats.dropped_notice();
        }
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::BroadcastHandler;

    fn peer() -> NodeId {
        NodeId {
            name: "p".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            epoch: 1,
        }
    }

    #[test]
    fn delivers_each_item_once_and_not_our_own() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut h = Handler::new(tx, Arc::default());
        let item = encode_item(7, 1, b"hello");
        assert!(h.receive_item(&item, Some(&peer())).unwrap().is_some());
        assert!(h.receive_item(&item, Some(&peer())).unwrap().is_none());
        assert_eq!(rx.try_recv().unwrap(), b"hello");
        assert!(rx.try_recv().is_err());
        let own = encode_item(9, 1, b"mine");
        assert!(h.receive_item(&own, None).unwrap().is_some());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn short_items_are_errors_and_window_is_bounded() {
        let (tx, _rx) = mpsc::channel(1);
        let stats = Arc::new(Stats::default());
        let mut h = Handler::new(tx, stats.clone());
        assert!(h.receive_item(&[1, 2, 3], Some(&peer())).is_err());
        for seq in 0..(SEEN_WINDOW as u64 + 100) {
            h.receive_item(&encode_item(1, seq, b"x"), Some(&peer()))
                .unwrap();
        }
        assert_eq!(h.seen.len(), SEEN_WINDOW);
        // The consumer never read: all but one were counted as dropped.
        assert_eq!(stats.snapshot().dropped_notices, SEEN_WINDOW as u64 + 99);
    }
}
