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
use std::collections::{BTreeMap, btree_map};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::digest::{BUCKETS, Digest, bucket_of, record_hash, summary_of};
use crate::key::{AsKeyRef, Key, KeyRef};
use crate::record::{Claim, NodeRecord, Record, Records, ServiceRecord, Status, Value};

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
#[derive(Debug, Clone, Default)]
pub struct Table {
    records: BTreeMap<Key, Entry>,
    buckets: Vec<u64>,
    /// Claims held, by owner: placement's loads, kept up to date.
    loads: BTreeMap<String, usize>,
    /// Slots of the live services.
    live_slots: usize,
}

/// A record with its digest terms, computed once when it is stored.
#[derive(Debug, Clone)]
struct Entry {
    record: Arc<Record>,
    /// [`record_hash`] of the record under its key.
    hash: u64,
    /// [`bucket_of`] its key.
    bucket: u16,
}

impl Entry {
    fn new(key: &Key, record: Arc<Record>) -> Self {
        Self {
            hash: record_hash(key, &record),
            bucket: bucket_of(key) as u16,
            record,
        }
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.record == other.record
    }
}

/// A record a merge took; see [`Table::merge_records`].
#[derive(Debug, Clone)]
pub struct Merged {
    /// Its key.
    pub key: Key,
    /// The record.
    pub record: Arc<Record>,
    /// Whether the table held a record under the key.
    pub existed: bool,
    /// Whether that record was a live service.
    pub was_live_service: bool,
}

/// The table's file and wire form: its records by key.
impl Serialize for Table {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Records<'a>(&'a BTreeMap<Key, Entry>);
        impl Serialize for Records<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().map(|(k, e)| (k, &e.record)))
            }
        }
        let mut table = serializer.serialize_struct("Table", 1)?;
        table.serialize_field("records", &Records(&self.records))?;
        table.end()
    }
}

/// A table with records not applied yet merged in, as it will be once
/// they are: what a save writes before an operator's write is answered
/// (the write is applied only once it is on disk). Serializes as a
/// [`Table`] does.
#[derive(Debug, Clone, Copy)]
pub struct WithPending<'a> {
    /// The table.
    pub table: &'a Table,
    /// Records waiting for a save, by key.
    pub pending: &'a BTreeMap<Key, Arc<Record>>,
}

impl WithPending<'_> {
    /// Records in key order: the table's, each pending record in place of
    /// the table's where it wins.
    fn records(&self) -> impl Iterator<Item = (&Key, &Arc<Record>)> {
        let mut pending = self.pending.iter().peekable();
        let mut ours = self.table.records.iter().peekable();
        std::iter::from_fn(move || match (ours.peek(), pending.peek()) {
            (Some((k, _)), Some((p, _))) if p < k => pending.next(),
            (Some((k, e)), Some((p, r))) if p == k => {
                let (k, e, r) = (*k, *e, *r);
                ours.next();
                pending.next();
                Some(if compare(r, &e.record) == Ordering::Greater {
                    (k, r)
                } else {
                    (k, &e.record)
                })
            }
            (Some(_), _) => ours.next().map(|(k, e)| (k, &e.record)),
            (None, _) => pending.next(),
        })
    }

    /// The table it stands for.
    pub fn to_table(&self) -> Table {
        let mut table = self.table.clone();
        for (key, record) in self.pending {
            table.apply(key.clone(), record.clone());
        }
        table
    }
}

impl Serialize for WithPending<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeStruct};
        struct Records<'a>(WithPending<'a>);
        impl Serialize for Records<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.records().count()))?;
                for (key, record) in self.0.records() {
                    map.serialize_entry(key, record)?;
                }
                map.end()
            }
        }
        let mut table = serializer.serialize_struct("Table", 1)?;
        table.serialize_field("records", &Records(*self))?;
        table.end()
    }
}

impl<'de> Deserialize<'de> for Table {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "Table")]
        struct Form {
            records: BTreeMap<Key, Arc<Record>>,
        }
        let form = Form::deserialize(deserializer)?;
        let mut table = Table::new();
        for (key, record) in form.records {
            table.apply(key, record);
        }
        Ok(table)
    }
}

/// Counts `record` into (or, `add` false, out of) the loads and the live
/// slots.
fn count(loads: &mut BTreeMap<String, usize>, live_slots: &mut usize, record: &Record, add: bool) {
    match &record.value {
        Value::Claim(Claim {
            owner: Some(owner), ..
        }) => {
            if add {
                *loads.entry(owner.clone()).or_default() += 1;
            } else if let Some(n) = loads.get_mut(owner.as_str()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    loads.remove(owner.as_str());
                }
            }
        }
        Value::Service(ServiceRecord {
            spec: Some(spec), ..
        }) => {
            let n = spec.live_replicas() as usize;
            *live_slots = if add {
                live_slots.saturating_add(n)
            } else {
                live_slots.saturating_sub(n)
            };
        }
        _ => {}
    }
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
            loads: BTreeMap::new(),
            live_slots: 0,
        }
    }

    /// Builds a table from records, merging duplicates.
    pub fn from_records(records: impl IntoIterator<Item = (Key, Record)>) -> Self {
        let mut table = Self::new();
        for (key, record) in records {
            table.apply(key, record);
        }
        table
    }

    /// Merges one record. Returns whether it changed the table.
    pub fn apply(&mut self, key: Key, record: impl Into<Arc<Record>>) -> bool {
        self.apply_winning(key, record.into(), &mut |_, _| true)
            .is_some()
    }

    /// Merges records from a peer; returns those that changed the table, in
    /// their order, each with whether its key was there and held a live
    /// service. A large sorted batch (an anti-entropy chunk) is first
    /// walked side by side with the table to drop what it holds already;
    /// a small one is merged record by record, one search each.
    pub fn merge_records(&mut self, records: Records) -> Vec<Merged> {
        self.merge_admitted(records, |_, _| true).0
    }

    /// [`Table::merge_records`], taking only the records `admit` accepts,
    /// and asking it only of records that would win: a peer's copy of
    /// what the table holds already costs no check (a spec's validation
    /// is the dearest part of a merge). Also returns how many winners it
    /// refused.
    pub fn merge_admitted(
        &mut self,
        records: Records,
        mut admit: impl FnMut(&Key, &Record) -> bool,
    ) -> (Vec<Merged>, usize) {
        // (The length first: most batches are small deltas, and checking
        // the order costs a comparison per record.)
        let walk = records.len().saturating_mul(8) > self.records.len()
            && records.windows(2).all(|w| w[0].0 < w[1].0);
        let candidates = if walk {
            let mut ours = self.records.iter().peekable();
            records
                .into_iter()
                .filter(|(key, record)| {
                    while ours.next_if(|(k, _)| *k < key).is_some() {}
                    match ours.peek() {
                        Some((k, e)) if *k == key => {
                            !Arc::ptr_eq(&e.record, record)
                                && compare(record, &e.record) == Ordering::Greater
                        }
                        _ => true,
                    }
                })
                .collect()
        } else {
            records
        };
        let mut refused = 0;
        let merged = candidates
            .into_iter()
            .filter_map(|(key, record)| {
                self.apply_winning(key, record, &mut |k, r| {
                    let admitted = admit(k, r);
                    refused += usize::from(!admitted);
                    admitted
                })
            })
            .collect();
        (merged, refused)
    }

    /// [`Table::apply`], saying what it replaced: `None` if the record
    /// doesn't win, or `admit` refuses it. A record that loses costs one
    /// search and no copy.
    fn apply_winning(
        &mut self,
        key: Key,
        record: Arc<Record>,
        admit: &mut dyn FnMut(&Key, &Record) -> bool,
    ) -> Option<Merged> {
        if self.buckets.len() != BUCKETS {
            self.rebuild_digest();
        }
        match self.records.entry(key) {
            btree_map::Entry::Occupied(mut current) => {
                if Arc::ptr_eq(&record, &current.get().record)
                    || compare(&record, &current.get().record) != Ordering::Greater
                    || !admit(current.key(), &record)
                {
                    return None;
                }
                let was_live = matches!(
                    &current.get().record.value,
                    Value::Service(s) if s.spec.is_some()
                );
                let entry = Entry::new(current.key(), record.clone());
                count(
                    &mut self.loads,
                    &mut self.live_slots,
                    &current.get().record,
                    false,
                );
                count(&mut self.loads, &mut self.live_slots, &entry.record, true);
                let slot = &mut self.buckets[usize::from(entry.bucket)];
                *slot = slot
                    .wrapping_sub(current.get().hash)
                    .wrapping_add(entry.hash);
                current.insert(entry);
                Some(Merged {
                    key: current.key().clone(),
                    record,
                    existed: true,
                    was_live_service: was_live,
                })
            }
            btree_map::Entry::Vacant(vacant) => {
                if !admit(vacant.key(), &record) {
                    return None;
                }
                let entry = Entry::new(vacant.key(), record.clone());
                count(&mut self.loads, &mut self.live_slots, &entry.record, true);
                let slot = &mut self.buckets[usize::from(entry.bucket)];
                *slot = slot.wrapping_add(entry.hash);
                let key = vacant.key().clone();
                vacant.insert(entry);
                Some(Merged {
                    key,
                    record,
                    existed: false,
                    was_live_service: false,
                })
            }
        }
    }

    /// Merges every record of `other`; returns the keys that changed.
    /// Walks both tables in key order side by side (no lookups) and copies
    /// only the records that win.
    pub fn merge(&mut self, other: &Table) -> Vec<Key> {
        let mut winners = Vec::new();
        let mut ours = self.records.iter().peekable();
        for (key, record) in &other.records {
            while ours.next_if(|(k, _)| *k < key).is_some() {}
            let wins = match ours.peek() {
                Some((k, current)) if *k == key => {
                    compare(&record.record, &current.record) == Ordering::Greater
                }
                _ => true,
            };
            if wins {
                winners.push((key, record));
            }
        }
        let mut changed = Vec::with_capacity(winners.len());
        for (key, record) in winners {
            self.apply(key.clone(), record.record.clone());
            changed.push(key.clone());
        }
        changed
    }

    /// Forgets `key` (garbage collection; see [`crate::gc`]). Returns
    /// whether it was there.
    pub fn forget(&mut self, key: &Key) -> bool {
        if self.buckets.len() != BUCKETS {
            self.rebuild_digest();
        }
        let Some(entry) = self.records.remove(key) else {
            return false;
        };
        count(&mut self.loads, &mut self.live_slots, &entry.record, false);
        let slot = &mut self.buckets[usize::from(entry.bucket)];
        *slot = slot.wrapping_sub(entry.hash);
        true
    }

    /// The record of `key`.
    pub fn get(&self, key: &Key) -> Option<&Record> {
        self.get_ref(key.key_ref())
    }

    /// The record of a borrowed key.
    pub fn get_ref(&self, key: KeyRef<'_>) -> Option<&Record> {
        self.records.get(&key as &dyn AsKeyRef).map(|e| &*e.record)
    }

    /// The stored key and record of a borrowed key.
    pub fn get_key_value(&self, key: KeyRef<'_>) -> Option<(&Key, &Record)> {
        self.records
            .get_key_value(&key as &dyn AsKeyRef)
            .map(|(k, e)| (k, &*e.record))
    }

    /// Entries from `first` on, in key order.
    fn starting_at<'a>(&'a self, first: KeyRef<'_>) -> btree_map::Range<'a, Key, Entry> {
        use std::ops::Bound;
        self.records
            .range::<dyn AsKeyRef, _>((Bound::Included(&first as &dyn AsKeyRef), Bound::Unbounded))
    }

    /// All records, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Record)> {
        self.records.iter().map(|(k, e)| (k, &*e.record))
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
        self.starting_at(KeyRef::Service(""))
            .map_while(|(k, e)| match (k, &e.record.value) {
                (Key::Service(name), value) => Some((&**name, &*e.record, value)),
                _ => None,
            })
            .filter_map(|(name, r, value)| match value {
                Value::Service(s) => Some((name, r, s)),
                _ => None,
            })
    }

    /// The service record of `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceRecord> {
        match self.get_ref(KeyRef::Service(name)).map(|r| &r.value) {
            Some(Value::Service(s)) => Some(s),
            _ => None,
        }
    }

    /// The kept versions of `name`.
    pub fn history(&self, name: &str) -> Option<&crate::history::History> {
        match self.get_ref(KeyRef::History(name)).map(|r| &r.value) {
            Some(Value::History(h)) => Some(h),
            _ => None,
        }
    }

    /// The live spec of `name` and its version (`None` if removed).
    pub fn live_service(&self, name: &str) -> Option<(&crate::spec::ServiceSpec, u64)> {
        self.service(name)
            .and_then(|s| s.spec.as_ref().map(|spec| (spec, s.version)))
    }

    /// Every claim, by service then slot: `(service, slot, claim)`.
    pub fn claims(&self) -> impl Iterator<Item = (&str, u32, &Claim)> {
        self.claims_from(KeyRef::Claim("", 0))
    }

    /// The claims of one service, by slot.
    pub fn claims_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = (u32, &'a Claim)> {
        self.claims_from(KeyRef::Claim(service, 0))
            .take_while(move |(s, _, _)| *s == service)
            .map(|(_, slot, c)| (slot, c))
    }

    fn claims_from(&self, first: KeyRef<'_>) -> impl Iterator<Item = (&str, u32, &Claim)> {
        self.starting_at(first)
            .map_while(|(k, e)| match k {
                Key::Claim(name, slot) => Some((&**name, *slot, &e.record.value)),
                _ => None,
            })
            .filter_map(|(name, slot, value)| match value {
                Value::Claim(c) => Some((name, slot, c)),
                _ => None,
            })
    }

    /// The claim of a slot.
    pub fn claim(&self, service: &str, slot: u32) -> Option<&Claim> {
        match self.get_ref(KeyRef::Claim(service, slot)).map(|r| &r.value) {
            Some(Value::Claim(c)) => Some(c),
            _ => None,
        }
    }

    /// The status records of `node`, by service then slot:
    /// `(key, service, slot, status)`.
    pub fn statuses_of<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a str, u32, &'a Status)> {
        self.starting_at(KeyRef::Status(node, "", 0))
            .map_while(move |(k, e)| match k {
                Key::Status(n, service, slot) if &**n == node => {
                    Some((k, &**service, *slot, &e.record.value))
                }
                _ => None,
            })
            .filter_map(|(k, service, slot, value)| match value {
                Value::Status(s) => Some((k, service, slot, s)),
                _ => None,
            })
    }

    /// The slots of `service` that `node` has a status record of.
    pub fn status_slots<'a>(
        &'a self,
        node: &'a str,
        service: &'a str,
    ) -> impl Iterator<Item = u32> + 'a {
        self.starting_at(KeyRef::Status(node, service, 0))
            .map_while(move |(k, _)| match k {
                Key::Status(n, s, slot) if &**n == node && &**s == service => Some(*slot),
                _ => None,
            })
    }

    /// The status `node` reports for a slot.
    pub fn status(&self, node: &str, service: &str, slot: u32) -> Option<&Status> {
        match self
            .get_ref(KeyRef::Status(node, service, slot))
            .map(|r| &r.value)
        {
            Some(Value::Status(s)) => Some(s),
            _ => None,
        }
    }

    /// Every node record, by name.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &NodeRecord)> {
        self.starting_at(KeyRef::Node(""))
            .filter_map(|(k, e)| match (k, &e.record.value) {
                (Key::Node(name), Value::Node(n)) => Some((&**name, n)),
                _ => None,
            })
    }

    /// The nodes whose record is a tombstone, by name: forgotten by a
    /// `force-leave` (until they start again and write a record).
    pub fn forgotten_nodes(&self) -> impl Iterator<Item = &str> {
        self.starting_at(KeyRef::Node(""))
            .map_while(|(k, e)| match k {
                Key::Node(name) => Some((&**name, &e.record.value)),
                _ => None,
            })
            .filter_map(|(name, value)| matches!(value, Value::Tombstone).then_some(name))
    }

    /// Every `key/` record (keys and their removals), by fingerprint.
    pub fn cluster_keys(&self) -> impl Iterator<Item = (&str, &Record)> {
        self.starting_at(KeyRef::ClusterKey(""))
            .filter_map(|(k, e)| match k {
                Key::ClusterKey(fingerprint) => Some((&**fingerprint, &*e.record)),
                _ => None,
            })
    }

    /// The node record of `node`.
    pub fn node(&self, node: &str) -> Option<&NodeRecord> {
        match self.get_ref(KeyRef::Node(node)).map(|r| &r.value) {
            Some(Value::Node(n)) => Some(n),
            _ => None,
        }
    }

    /// How many claims `node` holds (of live slots or not): its load.
    pub fn load(&self, node: &str) -> usize {
        self.loads.get(node).copied().unwrap_or(0)
    }

    /// How many slots the live services have.
    pub fn live_slots(&self) -> usize {
        self.live_slots
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

    /// [`Digest::summary`] of this table's digest, without copying it.
    pub fn summary(&self) -> u64 {
        if self.buckets.len() == BUCKETS {
            summary_of(&self.buckets)
        } else {
            self.digest().summary()
        }
    }

    /// Recomputes the bucket hashes from the records.
    pub fn rebuild_digest(&mut self) {
        let mut buckets = empty_buckets();
        for entry in self.records.values() {
            let slot = &mut buckets[usize::from(entry.bucket)];
            *slot = slot.wrapping_add(entry.hash);
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
    pub fn records_in(&self, buckets: &[u16]) -> Records {
        self.records_in_except(buckets, &Vec::new())
    }

    /// [`Table::records_in`], less what the peer just `sent` us: the second
    /// leg of an anti-entropy round. Once `sent` is merged, this table
    /// holds every key of it at the same record or a newer one, so the
    /// peer lacks exactly the rest.
    pub fn records_in_except(&self, buckets: &[u16], sent: &Records) -> Records {
        let mut wanted = [false; BUCKETS];
        for b in buckets {
            if let Some(w) = wanted.get_mut(usize::from(*b)) {
                *w = true;
            }
        }
        let mut sent: Vec<(&Key, &Arc<Record>)> = sent.iter().map(|(k, r)| (k, r)).collect();
        if !sent.is_sorted_by(|a, b| a.0 < b.0) {
            sent.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        let mut sent = sent.into_iter().peekable();
        self.records
            .iter()
            .filter(|(key, e)| {
                if !wanted[usize::from(e.bucket)] {
                    return false;
                }
                while sent.next_if(|(k, _)| k < key).is_some() {}
                !sent.peek().is_some_and(|(k, r)| {
                    k == key
                        && (Arc::ptr_eq(r, &e.record) || compare(r, &e.record) == Ordering::Equal)
                })
            })
            .map(|(k, e)| (k.clone(), e.record.clone()))
            .collect()
    }

    /// Records a peer with digest `theirs` may lack.
    pub fn missing_from(&self, theirs: &Digest) -> Records {
        self.records_in(&self.differing_buckets(theirs))
    }
}
