//! Digests for anti-entropy: the table's keys fall into [`BUCKETS`]
//! buckets by a stable hash; a bucket's hash is the wrapping sum of its
//! records' hashes, so it is independent of order and updated in O(1) per
//! write. Two nodes compare digests and exchange only the records of the
//! buckets that differ.

use serde::{Deserialize, Serialize};

use crate::hash::{StableHasher, stable_hash};
use crate::record::Record;

/// Number of buckets.
pub const BUCKETS: usize = 256;

/// One hash per bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest(pub Vec<u64>);

/// The bucket of a key.
pub fn bucket_of(key: &str) -> usize {
    (stable_hash(key.as_bytes()) % BUCKETS as u64) as usize
}

/// The hash of one record under its key.
pub fn record_hash(key: &str, record: &Record) -> u64 {
    let value = postcard::to_stdvec(&record.value).unwrap_or_default();
    StableHasher::default()
        .field(key.as_bytes())
        .field(&record.ts.wall_ms.to_le_bytes())
        .field(&record.ts.counter.to_le_bytes())
        .field(record.ts.node.as_bytes())
        .field(&value)
        .finish()
}
