//! The agent's keyring: which keys it starts with, the node core's view of
//! them, and carrying a change the table brought into the envelope and
//! the keyring file.
//!
//! At start, `DATA_DIR/keyring` wins: it holds what the cluster rotated
//! to. A key given by `--key-file` or `MOB_KEY` that it lacks is ignored
//! with a warning (an old key left in a unit file must not undo a
//! rotation); without a keyring file, the given key starts one.

use std::path::Path;

use mob_membership::{ClusterKey, Keyring, Membership};
use mob_scheduler::node::keyring::{Ring, RingKey};
use tracing::{error, info, warn};

use crate::config::KeySource;

/// The keyring to start with (see the module's docs).
pub(crate) fn at_start(
    data_dir: &Path,
    key: &ClusterKey,
    source: &KeySource,
) -> Result<Keyring, mob_membership::Error> {
    if let Some(ring) = Keyring::load(data_dir)? {
        let given = matches!(source, KeySource::File(_) | KeySource::Env);
        if given && !ring.keys().contains(key) {
            warn!(
                key = %key.fingerprint(),
                source = %source,
                primary = %ring.primary().fingerprint(),
                "the given cluster key is not in DATA_DIR/keyring, which wins; to start over from the given key, remove that file"
            );
        }
        return Ok(ring);
    }
    let ring = Keyring::single(key.clone());
    ring.save(data_dir)?;
    Ok(ring)
}

/// The node core's view of `keyring`.
pub(crate) fn ring_of(keyring: &Keyring) -> Ring {
    Ring {
        keys: keyring.keys().iter().map(ring_key).collect(),
    }
}

/// A key as the node core holds it.
pub(crate) fn ring_key(key: &ClusterKey) -> RingKey {
    RingKey {
        fingerprint: key.fingerprint(),
        key: key.to_base64(),
    }
}

/// The keyring of `ring`, leaving out (and logging) any key that is not
/// a key or does not match its fingerprint: written by a buggy or
/// hostile key holder.
fn keyring_of(ring: &Ring) -> Option<Keyring> {
    let keys: Vec<ClusterKey> = ring
        .keys
        .iter()
        .filter_map(|k| match ClusterKey::from_base64(&k.key) {
            Ok(key) if key.fingerprint() == k.fingerprint => Some(key),
            _ => {
                error!(key = %k.fingerprint, "a key record of the table does not hold the key it names; ignored");
                None
            }
        })
        .collect();
    Keyring::from_keys(keys).ok()
}

/// Seals and opens with `ring` from now on, and saves it.
pub(crate) async fn apply(ring: &Ring, membership: &Membership, data_dir: &Path) {
    let Some(keyring) = keyring_of(ring) else {
        return;
    };
    membership.set_keyring(&keyring);
    let keys: Vec<String> = keyring.keys().iter().map(ClusterKey::fingerprint).collect();
    info!(
        node = %membership.local().name,
        primary = %keyring.primary().fingerprint(),
        keys = tracing::field::valuable(&keys),
        "keyring changed"
    );
    let dir = data_dir.to_owned();
    let saved = tokio::task::spawn_blocking(move || keyring.save(&dir)).await;
    if let Ok(Err(e)) = saved {
        // The table holds the keys too: the next start follows it again.
        error!(error = %e, "cannot save the keyring");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_and_the_envelope_agree_on_the_keyring_size() {
        assert_eq!(
            mob_membership::keyring::MAX_KEYS,
            mob_scheduler::node::keyring::MAX_KEYS
        );
    }

    #[test]
    fn the_keyring_file_wins_over_the_given_key() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
        let first = at_start(dir.path(), &old, &KeySource::Env).unwrap();
        assert_eq!(first, Keyring::single(old.clone()));
        let rotated = Keyring::from_keys(vec![new.clone()]).unwrap();
        rotated.save(dir.path()).unwrap();
        assert_eq!(
            at_start(dir.path(), &old, &KeySource::Env).unwrap(),
            rotated
        );
    }

    #[test]
    fn a_key_record_that_lies_about_its_key_is_left_out() {
        let (a, b) = (ClusterKey::generate(), ClusterKey::generate());
        let mut ring = ring_of(&Keyring::from_keys(vec![a.clone(), b.clone()]).unwrap());
        ring.keys[1].fingerprint = a.fingerprint();
        ring.keys.push(RingKey {
            fingerprint: "0000000000000000".into(),
            key: "not a key".into(),
        });
        assert_eq!(keyring_of(&ring), Some(Keyring::single(a)));
    }
}
