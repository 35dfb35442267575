//! The cluster's keyring in the table: what `keys install`, `keys use` and
//! `keys remove` write, and the keys an agent holds as those records
//! arrive.
//!
//! # Rules
//! - `key/<fingerprint>` records are last-writer-wins like any other;
//!   `install` writes the key, `use` writes it with `primary` set, `remove`
//!   writes a tombstone.
//! - An agent's [`Ring`] follows the table ([`follow`]): a removed key is
//!   dropped, an installed one is added, and the key of the newest record
//!   with `primary` set becomes the primary. Keys the agent holds that no
//!   record names (the one it started with) stay until removed. A ring is
//!   never left empty.
//! - Refused: installing a fifth key, using or removing a key no agent
//!   knows, removing this agent's primary, or removing the primary of a
//!   live member (it would be cut off until it hears the `use`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::key::Key;
use crate::record::{KeyRecord, Record, Value};
use crate::table::Table;

use super::ops::{OpError, Write};

/// Keys an agent holds at most, the primary included.
pub const MAX_KEYS: usize = 4;

/// One key, by its fingerprint and its base64 form.
#[derive(Clone, PartialEq, Eq)]
pub struct RingKey {
    /// 16 hex digits that name the key without showing it.
    pub fingerprint: String,
    /// The key, base64.
    pub key: String,
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingKey({})", self.fingerprint)
    }
}

/// The keys an agent holds, the primary (which seals) first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ring {
    /// Primary first; at most [`MAX_KEYS`].
    pub keys: Vec<RingKey>,
}

impl Ring {
    /// The key that seals.
    pub fn primary(&self) -> Option<&RingKey> {
        self.keys.first()
    }

    /// The fingerprints, the primary first (as node records carry them).
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.fingerprint.clone()).collect()
    }

    fn holds(&self, fingerprint: &str) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fingerprint)
    }
}

/// The key records of the table: live ones, and the fingerprints removed.
fn records(table: &Table) -> (Vec<(&str, &Record, &KeyRecord)>, BTreeSet<&str>) {
    let mut live = Vec::new();
    let mut removed = BTreeSet::new();
    for (fingerprint, record) in table.cluster_keys() {
        match &record.value {
            Value::ClusterKey(key) => live.push((fingerprint, record, key)),
            _ => {
                removed.insert(fingerprint);
            }
        }
    }
    (live, removed)
}

/// The ring `ring` becomes under the table's key records.
pub fn follow(ring: &Ring, table: &Table) -> Ring {
    let (live, removed) = records(table);
    let mut keys: Vec<RingKey> = ring
        .keys
        .iter()
        .filter(|k| !removed.contains(k.fingerprint.as_str()))
        .cloned()
        .collect();
    for (fingerprint, _, record) in &live {
        if keys.len() < MAX_KEYS && !keys.iter().any(|k| k.fingerprint == *fingerprint) {
            keys.push(RingKey {
                fingerprint: (*fingerprint).to_owned(),
                key: record.key.clone(),
            });
        }
    }
    let primary = live
        .iter()
        .filter(|(_, _, k)| k.primary)
        .max_by(|a, b| a.1.ts.cmp(&b.1.ts))
        .map(|(fingerprint, _, _)| *fingerprint);
    if let Some(at) = primary.and_then(|p| keys.iter().position(|k| k.fingerprint == p)) {
        let key = keys.remove(at);
        keys.insert(0, key);
    }
    if keys.is_empty() {
        return ring.clone();
    }
    Ring { keys }
}

/// Plans `keys install`: the key goes into the table, so every agent
/// accepts it. Nothing is written if the table has it already.
pub fn install(ring: &Ring, table: &Table, key: RingKey) -> Result<Vec<Write>, OpError> {
    let (live, removed) = records(table);
    if live.iter().any(|(fp, _, _)| *fp == key.fingerprint) {
        return Ok(Vec::new());
    }
    let mut known: BTreeSet<&str> = live.iter().map(|(fp, _, _)| *fp).collect();
    known.extend(
        ring.keys
            .iter()
            .map(|k| k.fingerprint.as_str())
            .filter(|fp| !removed.contains(fp)),
    );
    known.insert(&key.fingerprint);
    if known.len() > MAX_KEYS {
        return Err(OpError::KeyringFull);
    }
    let record = KeyRecord {
        key: key.key,
        primary: false,
    };
    Ok(vec![(
        Key::ClusterKey(key.fingerprint.as_str().into()),
        Value::ClusterKey(record),
    )])
}

/// The key `fingerprint` names, from this agent's ring or the table.
fn find(ring: &Ring, table: &Table, fingerprint: &str) -> Option<String> {
    let (live, _) = records(table);
    ring.keys
        .iter()
        .find(|k| k.fingerprint == fingerprint)
        .map(|k| k.key.clone())
        .or_else(|| {
            live.iter()
                .find(|(fp, _, _)| *fp == fingerprint)
                .map(|(_, _, k)| k.key.clone())
        })
}

/// Plans `keys use`: every agent seals with the key from now on.
pub fn use_key(ring: &Ring, table: &Table, fingerprint: &str) -> Result<Vec<Write>, OpError> {
    let key = find(ring, table, fingerprint)
        .ok_or_else(|| OpError::KeyNotInstalled(fingerprint.to_owned()))?;
    let record = KeyRecord { key, primary: true };
    Ok(vec![(
        Key::ClusterKey(fingerprint.into()),
        Value::ClusterKey(record),
    )])
}

/// Plans `keys remove`, given the live members' names (this node's
/// among them).
pub fn remove(
    ring: &Ring,
    table: &Table,
    fingerprint: &str,
    alive: &BTreeSet<String>,
) -> Result<Vec<Write>, OpError> {
    let (live, _) = records(table);
    let known = ring.holds(fingerprint) || live.iter().any(|(fp, _, _)| *fp == fingerprint);
    if !known {
        return Err(OpError::KeyNotInstalled(fingerprint.to_owned()));
    }
    if ring.primary().is_some_and(|k| k.fingerprint == fingerprint) {
        return Err(OpError::RemovePrimary(fingerprint.to_owned()));
    }
    let sealing: Vec<String> = table
        .nodes()
        .filter(|(name, node)| {
            alive.contains(*name) && node.keys.first().is_some_and(|k| k == fingerprint)
        })
        .map(|(name, _)| name.to_owned())
        .collect();
    if !sealing.is_empty() {
        return Err(OpError::KeyInUse {
            fingerprint: fingerprint.to_owned(),
            nodes: sealing,
        });
    }
    Ok(vec![(
        Key::ClusterKey(fingerprint.into()),
        Value::Tombstone,
    )])
}

/// One key as `keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    /// Its fingerprint.
    pub fingerprint: String,
    /// The agent asked seals with it.
    pub primary: bool,
    /// The agent asked holds it.
    pub held: bool,
    /// Live members whose node record lists it.
    pub nodes: Vec<String>,
    /// Live members that seal with it (list it first).
    pub sealing: Vec<String>,
}

/// Every key this agent holds, the table names, or a live member holds,
/// with who holds it; `alive` are the live members' names.
pub fn view(ring: &Ring, table: &Table, alive: &BTreeSet<String>) -> Vec<KeyView> {
    let blank = |fingerprint: &str| KeyView {
        fingerprint: fingerprint.to_owned(),
        primary: ring.primary().is_some_and(|k| k.fingerprint == fingerprint),
        held: ring.holds(fingerprint),
        nodes: Vec::new(),
        sealing: Vec::new(),
    };
    let mut keys: BTreeMap<String, KeyView> = BTreeMap::new();
    let named = ring.keys.iter().map(|k| k.fingerprint.as_str());
    for fingerprint in named.chain(records(table).0.into_iter().map(|(fp, _, _)| fp)) {
        keys.entry(fingerprint.to_owned())
            .or_insert_with(|| blank(fingerprint));
    }
    for (name, node) in table.nodes().filter(|(name, _)| alive.contains(*name)) {
        for (i, fingerprint) in node.keys.iter().take(MAX_KEYS).enumerate() {
            let view = keys
                .entry(fingerprint.clone())
                .or_insert_with(|| blank(fingerprint));
            if i == 0 {
                view.sealing.push(name.to_owned());
            }
            view.nodes.push(name.to_owned());
        }
    }
    let mut views: Vec<KeyView> = keys.into_values().collect();
    // This agent's primary first, then by how many hold it.
    views.sort_by(|a, b| {
        b.primary
            .cmp(&a.primary)
            .then(b.nodes.len().cmp(&a.nodes.len()))
            .then(a.fingerprint.cmp(&b.fingerprint))
    });
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;
    use std::sync::Arc;

    fn key(n: u8) -> RingKey {
        RingKey {
            fingerprint: format!("{n:016x}"),
            key: format!("{:A<43}=", n),
        }
    }

    fn ring(keys: &[u8]) -> Ring {
        Ring {
            keys: keys.iter().map(|&n| key(n)).collect(),
        }
    }

    fn apply(table: &mut Table, writes: Vec<Write>, at: u64) {
        for (k, value) in writes {
            let ts = Timestamp {
                wall_ms: at,
                counter: 0,
                node: "n1".into(),
            };
            table.apply(k, Arc::new(Record { ts, value }));
        }
    }

    #[test]
    fn a_rotation_reaches_a_ring_through_the_table() {
        let mut table = Table::default();
        let start = ring(&[1]);
        assert_eq!(follow(&start, &table), start);
        let writes = install(&start, &table, key(2)).unwrap();
        apply(&mut table, writes, 10);
        // Installed: accepted, the primary unchanged.
        assert_eq!(follow(&start, &table), ring(&[1, 2]));
        // An agent that was down (it holds key 1 alone) gets the same.
        let writes = use_key(&start, &table, &key(2).fingerprint).unwrap();
        apply(&mut table, writes, 20);
        let used = follow(&start, &table);
        assert_eq!(used, ring(&[2, 1]));
        let none = BTreeSet::new();
        let writes = remove(&used, &table, &key(1).fingerprint, &none).unwrap();
        apply(&mut table, writes, 30);
        assert_eq!(follow(&used, &table), ring(&[2]));
        assert_eq!(follow(&start, &table), ring(&[2]));
        // Installing it again brings it back.
        let writes = install(&ring(&[2]), &table, key(1)).unwrap();
        apply(&mut table, writes, 40);
        assert_eq!(follow(&ring(&[2]), &table), ring(&[2, 1]));
    }

    #[test]
    fn the_newest_use_wins_and_a_ring_is_never_empty() {
        let mut table = Table::default();
        let start = ring(&[1, 2, 3]);
        let writes = use_key(&start, &table, &key(3).fingerprint).unwrap();
        apply(&mut table, writes, 20);
        let writes = use_key(&start, &table, &key(2).fingerprint).unwrap();
        apply(&mut table, writes, 10);
        assert_eq!(follow(&start, &table).primary(), Some(&key(3)));
        apply(
            &mut table,
            vec![(Key::ClusterKey(key(9).fingerprint.into()), Value::Tombstone)],
            30,
        );
        let lone = ring(&[9]);
        assert_eq!(follow(&lone, &table).primary(), Some(&key(3)));
        let mut bare = Table::default();
        apply(
            &mut bare,
            vec![(Key::ClusterKey(key(9).fingerprint.into()), Value::Tombstone)],
            30,
        );
        assert_eq!(follow(&lone, &bare), lone);
    }

    #[test]
    fn refusals_name_the_reason() {
        let table = Table::default();
        let full = ring(&[1, 2, 3, 4]);
        assert_eq!(install(&full, &table, key(5)), Err(OpError::KeyringFull));
        assert_eq!(install(&full, &table, key(4)).map(|w| w.len()), Ok(1));
        let fp = |n: u8| key(n).fingerprint;
        assert_eq!(
            use_key(&full, &table, &fp(7)),
            Err(OpError::KeyNotInstalled(fp(7)))
        );
        let none = BTreeSet::new();
        assert_eq!(
            remove(&full, &table, &fp(1), &none),
            Err(OpError::RemovePrimary(fp(1)))
        );
        assert_eq!(
            remove(&full, &table, &fp(7), &none),
            Err(OpError::KeyNotInstalled(fp(7)))
        );
    }

    #[test]
    fn a_key_a_live_member_seals_with_is_not_removed() {
        let mut table = Table::default();
        let node = crate::record::NodeRecord {
            addr: "127.0.0.1:1".into(),
            providers: Vec::new(),
            tags: Default::default(),
            draining: false,
            drain_started_ms: 0,
            leaving: false,
            version: "0".into(),
            started_at_ms: 0,
            keys: vec![key(1).fingerprint, key(2).fingerprint],
        };
        apply(
            &mut table,
            vec![(Key::Node("n2".into()), Value::Node(node))],
            5,
        );
        let ours = ring(&[2, 1]);
        let alive: BTreeSet<String> = ["n2".to_owned()].into();
        assert_eq!(
            remove(&ours, &table, &key(1).fingerprint, &alive),
            Err(OpError::KeyInUse {
                fingerprint: key(1).fingerprint,
                nodes: vec!["n2".into()],
            })
        );
        // Down, it doesn't hold the removal back.
        assert!(remove(&ours, &table, &key(1).fingerprint, &BTreeSet::new()).is_ok());
        // `keys list`: what this agent holds, and who of the live holds what.
        let views = view(&ours, &table, &alive);
        let summary: Vec<_> = views
            .iter()
            .map(|v| {
                (
                    v.fingerprint.clone(),
                    v.primary,
                    v.held,
                    v.nodes.clone(),
                    v.sealing.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (key(2).fingerprint, true, true, vec!["n2".into()], vec![]),
                (
                    key(1).fingerprint,
                    false,
                    true,
                    vec!["n2".into()],
                    vec!["n2".into()]
                ),
            ]
        );
        assert!(
            view(&ours, &table, &BTreeSet::new())
                .iter()
                .all(|v| v.nodes.is_empty())
        );
    }
}
