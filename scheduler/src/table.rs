//! The service table: a state-based CRDT, a map from key to a
//! last-writer-wins register.
//!
//! # Merge laws
//!
//! For tables `a`, `b`, `c` and `merge` written `⊔`:
//!
//! - commutative: `a ⊔ b = b ⊔ a`
//! - associative: `(a ⊔ b) ⊔ c = a ⊔ (b ⊔ c)`
//! - idempotent: `a ⊔ a = a`
//!
//! They hold because merge is a per-key maximum under a total order of
//! records: by timestamp `(wall_ms, counter, node)` first, then, for the
//! (only theoretical) case of equal timestamps, by the record's encoded
//! bytes. Each law is a property test (`tests/crdt_laws.rs`).
//!
//! Deletion is a write: a tombstone (a removed service, [`Value::Tombstone`])
//! that wins over older values like any other record. Forgetting old
//! tombstones and the records of nodes gone for good ([`Table::forget`],
//! [`crate::gc`]) is a local step outside these laws.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::{BUCKETS, Digest, bucket_of, record_hash};
use crate::record::{Record, SERVICE_PREFIX, ServiceRecord, Value};

/// Orders two records of one key: the greater one wins the merge.
pub fn compare(a: &Record, b: &Record) -> Ordering {
    a.ts.cmp(&b.ts).then_with(|| {
        if a.value == b.value {
            return Ordering::Equal;
        }
        let a = postcard::to_stdvec(&a.value).unwrap_or_default();
        let b = postcard::to_stdvec(&b.value).unwrap_or_default();
        a.cmp(&b)
    })
}

/// Every record the node knows, with a digest kept up to date.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Table {
    records: BTreeMap<String, Record>,
    #[serde(skip, default = "empty_buckets")]
    buckets: Vec<u64>,
}

fn empty_buckets() -> Vec<u64> {
    vec![0; BUCKETS]
}

impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records
    }
}

impl Eq for Table {}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            records: BTreeMap::new(),
            buckets: empty_buckets(),
        }
    }

    /// Builds a table from records, merging duplicates.
    pub fn from_records(records: impl IntoIterator<Item = (String, Record)>) -> Self {
        let mut table = Self::new();
        for (key, record) in records {
            table.apply(key, record);
        }
        table
    }

    /// Merges one record. Returns whether it changed the table.
    pub fn apply(&mut self, key: String, record: Record) -> bool {
        if self.buckets.len() != BUCKETS {
            self.rebuild_digest();
        }
        let bucket = bucket_of(&key);
        match self.records.get(&key) {
            Some(current) if compare(&record, current) != Ordering::Greater => false,
            current => {
                let old = current.map(|c| record_hash(&key, c));
                let new = record_hash(&key, &record);
                let slot = &mut self.buckets[bucket];
                if let Some(old) = old {
                    *slot = slot.wrapping_sub(old);
                }
                *slot = slot.wrapping_add(new);
                self.records.insert(key, record);
                true
            }
        }
    }

    /// Merges every record of `other`; returns the keys that changed.
    /// Walks both tables in key order side by side (no lookups) and copies
    /// only the records that win.
    pub fn merge(&mut self, other: &Table) -> Vec<String> {
        let mut winners = Vec::new();
        let mut ours = self.records.iter().peekable();
        for (key, record) in &other.records {
            while ours.next_if(|(k, _)| *k < key).is_some() {}
            let wins = match ours.peek() {
                Some((k, current)) if *k == key => compare(record, current) == Ordering::Greater,
                _ => true,
            };
            if wins {
                winners.push((key, record));
            }
        }
        let mut changed = Vec::with_capacity(winners.len());
        for (key, record) in winners {
            self.apply(key.clone(), record.clone());
            changed.push(key.clone());
        }
        changed
    }

    /// Forgets `key` (garbage collection; see [`crate::gc`]). Returns
    /// whether it was there.
    pub fn forget(&mut self, key: &str) -> bool {
        if self.buckets.len() != BUCKETS {
            self.rebuild_digest();
        }
        let Some(record) = self.records.remove(key) else {
            return false;
        };
        let slot = &mut self.buckets[bucket_of(key)];
        *slot = slot.wrapping_sub(record_hash(key, &record));
        true
    }

    /// The record of `key`.
    pub fn get(&self, key: &str) -> Option<&Record> {
        self.records.get(key)
    }

    /// All records, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Record)> {
        self.records.iter()
    }

    /// Records whose key starts with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> impl Iterator<Item = (&String, &Record)> + '_ {
        let prefix = prefix.to_owned();
        self.records
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    /// Number of records (tombstones included).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the table holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Service records (removed ones included), by name.
    pub fn services(&self) -> impl Iterator<Item = (&str, &Record, &ServiceRecord)> {
        self.with_prefix(SERVICE_PREFIX)
            .filter_map(|(k, r)| match &r.value {
                Value::Service(s) => Some((&k[SERVICE_PREFIX.len()..], r, s)),
                _ => None,
            })
    }

    /// The digest: one hash per bucket of keys.
    pub fn digest(&self) -> Digest {
        if self.buckets.len() == BUCKETS {
            Digest(self.buckets.clone())
        } else {
            let mut copy = self.clone();
            copy.rebuild_digest();
            Digest(copy.buckets)
        }
    }

    /// Recomputes the bucket hashes (after deserializing).
    pub fn rebuild_digest(&mut self) {
        let mut buckets = empty_buckets();
        for (key, record) in &self.records {
            let slot = &mut buckets[bucket_of(key)];
            *slot = slot.wrapping_add(record_hash(key, record));
        }
        self.buckets = buckets;
    }

    /// Buckets where `theirs` differs from this table.
    pub fn differing_buckets(&self, theirs: &Digest) -> Vec<u16> {
        let ours = self.digest();
        (0..BUCKETS)
            .filter(|i| ours.0.get(*i) != theirs.0.get(*i))
            .filter_map(|i| u16::try_from(i).ok())
            .collect()
    }

    /// Records in the given buckets: what a peer with that digest may lack.
    pub fn records_in(&self, buckets: &[u16]) -> Vec<(String, Record)> {
        let mut wanted = [false; BUCKETS];
        for b in buckets {
            if let Some(w) = wanted.get_mut(usize::from(*b)) {
                *w = true;
            }
        }
        self.records
            .iter()
            .filter(|(k, _)| wanted[bucket_of(k)])
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    /// Records a peer with digest `theirs` may lack.
    pub fn missing_from(&self, theirs: &Digest) -> Vec<(String, Record)> {
        self.records_in(&self.differing_buckets(theirs))
    }
}
