//! Which records from peers a node takes.
//!
//! Peers hold the cluster key, but a buggy or newer one must not plant a
//! record this version would refuse to write: a spec the CLI would refuse
//! (one with a million replicas, say), a key record not shaped like a key,
//! a value under another kind's key,
//! or a write stamped far in our future, which would drag every later
//! local write along (the clock never goes back).

use crate::key::Key;
use crate::record::{Record, Value};

/// How far ahead of this node's clock a peer's write may be.
pub const MAX_CLOCK_AHEAD_MS: u64 = 3_600_000;

/// Whether a record from a peer is one this version writes: the value fits
/// its key's kind, a service's spec (and each kept one) is valid and named
/// as its key, at most [`crate::history::MAX_VERSIONS`] are kept, and it
/// was not written more than [`MAX_CLOCK_AHEAD_MS`] in our future.
pub fn admits(key: &Key, record: &Record, now_ms: u64) -> bool {
    if record.ts.wall_ms > now_ms.saturating_add(MAX_CLOCK_AHEAD_MS) {
        return false;
    }
    if !record.value.fits(key) {
        return false;
    }
    match (key, &record.value) {
        (Key::Service(name), Value::Service(s)) => {
            s.instance_since <= s.version
                && s.spec
                    .as_ref()
                    .is_none_or(|spec| *spec.name == **name && spec.validate().is_ok())
        }
        (Key::History(name), Value::History(h)) => {
            h.versions.len() <= crate::history::MAX_VERSIONS
                && h.versions.iter().all(|v| {
                    v.spec
                        .as_ref()
                        .is_none_or(|spec| *spec.name == **name && spec.validate().is_ok())
                })
        }
        (Key::ClusterKey(fingerprint), Value::ClusterKey(k)) => k.is_well_formed(fingerprint),
        _ => true,
    }
}
