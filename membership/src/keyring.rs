//! The keyring: one primary key that seals, and up to [`MAX_KEYS`] keys in
//! all that open. Rotating a cluster's key is three steps, each on every
//! agent (Serf's `keys -install/-use/-remove`): install the new key (every
//! agent accepts it), use it (every agent seals with it), remove the old
//! one. An agent that missed a step still gets in as long as it holds a
//! key the others accept.
//!
//! File: `DATA_DIR/keyring`, mode 0600, JSON:
//! `{"primary": "<base64>", "keys": ["<base64>", ...]}` (`keys` holds the
//! primary too), written atomically.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{ClusterKey, Error};

/// Keys a keyring holds at most, the primary included.
pub const MAX_KEYS: usize = 4;
/// File name in the data dir.
pub const KEYRING_FILE: &str = "keyring";

/// Why a keyring change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// Installing past [`MAX_KEYS`].
    #[error("the keyring holds {MAX_KEYS} keys already; remove one first")]
    Full,
    /// `use` or `remove` of a key not installed.
    #[error("key {0} is not installed")]
    NotInstalled(String),
    /// Removing the key that seals.
    #[error("key {0} is the primary key; use another one first")]
    RemovePrimary(String),
    /// A keyring of no key.
    #[error("a keyring needs a key")]
    Empty,
}

/// The keys an agent seals and opens with.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    primary: ClusterKey,
    /// Every key that opens, the primary first.
    keys: Vec<ClusterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary.fingerprint())
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(ClusterKey::fingerprint)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    primary: String,
    keys: Vec<String>,
}

impl Keyring {
    /// A keyring of one key.
    pub fn single(key: ClusterKey) -> Self {
        Self {
            keys: vec![key.clone()],
            primary: key,
        }
    }

    /// A keyring of `keys`, the first the primary (duplicates dropped).
    pub fn from_keys(keys: Vec<ClusterKey>) -> Result<Self, KeyringError> {
        let mut unique: Vec<ClusterKey> = Vec::with_capacity(keys.len());
        for key in keys {
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        let primary = unique.first().cloned().ok_or(KeyringError::Empty)?;
        if unique.len() > MAX_KEYS {
            return Err(KeyringError::Full);
        }
        Ok(Self {
            primary,
            keys: unique,
        })
    }

    /// The key that seals.
    pub fn primary(&self) -> &ClusterKey {
        &self.primary
    }

    /// Every key that opens, the primary first.
    pub fn keys(&self) -> &[ClusterKey] {
        &self.keys
    }

    /// Adds `key` to the keys that open (nothing if it is there already).
    pub fn install(&mut self, key: ClusterKey) -> Result<(), KeyringError> {
        if self.keys.contains(&key) {
            return Ok(());
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        self.keys.push(key);
        Ok(())
    }

    /// Makes the installed key with `fingerprint` the one that seals.
    pub fn use_key(&mut self, fingerprint: &str) -> Result<(), KeyringError> {
        let key = self.find(fingerprint)?.clone();
        self.keys.retain(|k| *k != key);
        self.keys.insert(0, key.clone());
        self.primary = key;
        Ok(())
    }

    /// Drops the installed key with `fingerprint`; never the primary.
    pub fn remove(&mut self, fingerprint: &str) -> Result<(), KeyringError> {
        let key = self.find(fingerprint)?.clone();
        if key == self.primary {
            return Err(KeyringError::RemovePrimary(fingerprint.to_owned()));
        }
        self.keys.retain(|k| *k != key);
        Ok(())
    }

    fn find(&self, fingerprint: &str) -> Result<&ClusterKey, KeyringError> {
        self.keys
            .iter()
            .find(|k| k.fingerprint() == fingerprint)
            .ok_or_else(|| KeyringError::NotInstalled(fingerprint.to_owned()))
    }

    /// Reads `DATA_DIR/keyring`; `Ok(None)` if there is none.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, Error> {
        let path = data_dir.join(KEYRING_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        let bad = |why: String| Error::BadKeyFile {
            path: path.clone(),
            why,
        };
        let file: KeyringFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let parse = |text: &str| ClusterKey::from_base64(text).map_err(|e| bad(e.to_string()));
        let primary = parse(&file.primary)?;
        let mut keys = vec![primary.clone()];
        for text in &file.keys {
            let key = parse(text)?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        if keys.len() > MAX_KEYS {
            return Err(bad(format!("{} keys, at most {MAX_KEYS}", keys.len())));
        }
        Ok(Some(Self { primary, keys }))
    }

    /// Writes `DATA_DIR/keyring` atomically, mode 0600.
    pub fn save(&self, data_dir: &Path) -> Result<(), Error> {
        let path = data_dir.join(KEYRING_FILE);
        let file = KeyringFile {
            primary: self.primary.to_base64(),
            keys: self.keys.iter().map(ClusterKey::to_base64).collect(),
        };
        let text = serde_json::to_string_pretty(&file).unwrap_or_default();
        crate::atomic_file::write_private(&path, text.as_bytes())
            .map_err(|source| Error::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_installs_uses_and_removes() {
        let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
        let mut ring = Keyring::single(old.clone());
        ring.install(new.clone()).unwrap();
        assert_eq!(ring.keys(), &[old.clone(), new.clone()]);
        assert_eq!(
            ring.remove(&old.fingerprint()),
            Err(KeyringError::RemovePrimary(old.fingerprint()))
        );
        ring.use_key(&new.fingerprint()).unwrap();
        assert_eq!(ring.primary(), &new);
        ring.remove(&old.fingerprint()).unwrap();
        assert_eq!(ring.keys(), std::slice::from_ref(&new));
        assert!(matches!(
            ring.use_key(&old.fingerprint()),
            Err(KeyringError::NotInstalled(_))
        ));
    }

    #[test]
    fn at_most_four_keys() {
        let mut ring = Keyring::single(ClusterKey::generate());
        for _ in 1..MAX_KEYS {
            ring.install(ClusterKey::generate()).unwrap();
        }
        assert_eq!(
            ring.install(ClusterKey::generate()),
            Err(KeyringError::Full)
        );
    }

    #[test]
    fn the_file_roundtrips_is_private_and_bad_ones_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Keyring::load(dir.path()).unwrap(), None);
        let mut ring = Keyring::single(ClusterKey::generate());
        ring.install(ClusterKey::generate()).unwrap();
        ring.save(dir.path()).unwrap();
        assert_eq!(Keyring::load(dir.path()).unwrap(), Some(ring));
        let path = dir.path().join(KEYRING_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, r#"{"primary": "nope", "keys": []}"#).unwrap();
        let err = Keyring::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("keyring") && err.contains("bad cluster key"),
            "{err}"
        );
    }
}
