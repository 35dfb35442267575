//! Digests for anti-entropy: the table's keys fall into [`BUCKETS`]
//! buckets by a stable hash; a bucket's hash is the wrapping sum of its
//! records' hashes, so it is independent of order and updated in O(1) per
//! write. Two nodes compare digests and exchange only the records of the
//! buckets that differ.

use serde::{Deserialize, Serialize};

use crate::hash::StableHasher;
use crate::key::Key;
use crate::record::Record;

/// Number of buckets.
pub const BUCKETS: usize = 1024;

/// One hash per bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest(pub Vec<u64>);

impl Digest {
    /// One hash of the whole digest: the wrapping sum of the buckets, that
    /// is of every record's hash. Equal tables have equal summaries, so a
    /// round between them ends after a few bytes; it costs a thousand
    /// additions, not a pass over the records.
    pub fn summary(&self) -> u64 {
        summary_of(&self.0)
    }
}

/// [`Digest::summary`] of these bucket hashes.
pub(crate) fn summary_of(buckets: &[u64]) -> u64 {
    buckets.iter().fold(0, |sum, b| sum.wrapping_add(*b))
}

/// The bucket of a key: the stable hash of its text form.
pub fn bucket_of(key: &Key) -> usize {
    let mut hasher = StableHasher::default();
    key.write_text(&mut hasher);
    (hasher.finish() % BUCKETS as u64) as usize
}

/// The hash of one record under its key.
pub fn record_hash(key: &Key, record: &Record) -> u64 {
    let value = postcard::to_stdvec(&record.value).unwrap_or_default();
    let mut hasher = StableHasher::default();
    key.hash_into(&mut hasher);
    hasher
        .field(&record.ts.wall_ms.to_le_bytes())
        .field(&record.ts.counter.to_le_bytes())
        .field(record.ts.node.as_bytes())
        .field(&value)
        .finish()
}
