//! The 32-byte cluster key every datagram and stream frame is sealed with.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Generate, Key};

use crate::Error;

/// Length of a cluster key in bytes.
pub const KEY_LEN: usize = 32;

/// A cluster key. Agents holding different keys can't read each other's
/// packets, so they never become members of each other's cluster.
///
/// `Debug` never prints the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

impl ClusterKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        let key = Key::<XChaCha20Poly1305>::generate();
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(key.as_slice());
        Self(bytes)
    }

    /// Parses the base64 text form (as printed by `mob-agent keygen`);
    /// surrounding whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|e| Error::BadKey(format!("not valid base64: {e}")))?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            Error::BadKey(format!("decodes to {} bytes, expected {KEY_LEN}", b.len()))
        })?;
        Ok(Self(bytes))
    }

    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Reads a key file holding the base64 form.
    pub fn read_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_base64(&text).map_err(|e| match e {
            Error::BadKey(why) => Error::BadKeyFile {
                path: path.to_owned(),
                why,
            },
            other => other,
        })
    }

    /// Writes the base64 form to a new file with mode 0600. Fails if the
    /// file exists, so an existing key is never replaced.
    pub fn write_new_file(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        writeln!(file, "{}", self.to_base64()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// A short name for the key that tells nothing of it: 16 hex digits of
    /// the key's own authentication tag over a fixed message (a key check
    /// value), so that operators can say which key without showing it.
    pub fn fingerprint(&self) -> String {
        self.check_value()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The first bytes of the fingerprint: how a datagram names the keys
    /// its sender holds.
    pub fn id(&self) -> KeyId {
        let value = self.check_value();
        KeyId([value[0], value[1], value[2], value[3]])
    }

    /// 8 bytes of the key's tag over a fixed message.
    fn check_value(&self) -> [u8; 8] {
        use chacha20poly1305::KeyInit;
        use chacha20poly1305::aead::Aead;
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let nonce = chacha20poly1305::XNonce::default();
        let sealed = cipher
            .encrypt(&nonce, b"mob key fingerprint".as_ref())
            .unwrap_or_default();
        // The last 16 bytes are the tag; 8 of them are plenty to tell keys
        // apart.
        let mut value = [0u8; 8];
        if let Some(tag) = sealed.len().checked_sub(8).and_then(|at| sealed.get(at..)) {
            value.copy_from_slice(tag);
        }
        value
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// A key's short id: the first 4 bytes of its fingerprint. Not secret,
/// and unique enough among the few keys of one keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 4]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_tell_keys_apart() {
        let key = ClusterKey::generate();
        assert_eq!(key.fingerprint(), key.clone().fingerprint());
        assert_eq!(key.fingerprint().len(), 16);
        assert_ne!(key.fingerprint(), ClusterKey::generate().fingerprint());
        assert!(!key.to_base64().contains(&key.fingerprint()));
    }

    #[test]
    fn base64_roundtrip() {
        let key = ClusterKey::generate();
        assert_eq!(ClusterKey::from_base64(&key.to_base64()).unwrap(), key);
        assert_ne!(ClusterKey::generate(), key, "two generated keys collide");
    }

    #[test]
    fn bad_text_is_rejected_with_reason() {
        let err = ClusterKey::from_base64("not base64!").unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
        let err = ClusterKey::from_base64(&BASE64.encode([1u8; 16])).unwrap_err();
        assert!(err.to_string().contains("16 bytes"), "{err}");
    }

    #[test]
    fn key_file_is_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let key = ClusterKey::generate();
        key.write_new_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ClusterKey::read_file(&path).unwrap(), key);
        assert!(ClusterKey::generate().write_new_file(&path).is_err());
        assert_eq!(ClusterKey::read_file(&path).unwrap(), key);
    }

    #[test]
    fn malformed_key_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "garbage").unwrap();
        let err = ClusterKey::read_file(&path).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let key = ClusterKey::generate();
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }
}
