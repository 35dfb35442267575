//! The sealed envelope around every UDP datagram and TCP frame.
//!
//! ```text
//! | "MOB" | version (1) | nonce (24) | XChaCha20-Poly1305(payload) + tag (16) |
//! ```
//! The magic and version are authenticated as associated data. The nonce is
//! random per message: with 192 bits, collisions are not a concern.
//!
//! A datagram's payload starts with its send time (unix ms, u64 LE), so
//! that the receiver can refuse replays ([`crate::freshness`]), then the
//! count and ids of the keys its sender holds (see [`Envelope`]); a stream's
//! frames carry the stream's challenge and their sequence number instead
//! ([`crate::stream`]).

use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::freshness::{ReplayGuard, Stale};
use crate::key::{ClusterKey, KeyId};
use crate::keyring::{Keyring, MAX_KEYS};

/// The first bytes of every sealed message.
pub const MAGIC: &[u8; 3] = b"MOB";
/// Wire format version; a peer speaking another version is rejected.
pub const VERSION: u8 = 6;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1;
/// Bytes the envelope adds to a payload.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// Most bytes a datagram carries inside the box before its payload: the
/// send time, the count of key ids and the ids (see
/// [`Envelope::seal_datagram`]).
pub const DATAGRAM_HEADER_MAX: usize = 8 + 1 + 4 * MAX_KEYS;

/// Why a sealed message was rejected. Nothing is allocated for a rejected
/// message beyond its own bytes, and no state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than an empty sealed payload.
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    /// Longer than the receiver accepts.
    #[error("oversized: {len} bytes, limit {limit}")]
    Oversized {
        /// Bytes received.
        len: usize,
        /// Limit of the receiver.
        limit: usize,
    },
    /// Doesn't start with `MOB`: not ours.
    #[error("bad magic")]
    BadMagic,
    /// A version this build doesn't speak.
    #[error("unsupported version {0}")]
    BadVersion(u8),
    /// Authentication failed: another cluster key, or tampered bytes.
    #[error("authentication failed (wrong cluster key or corrupted)")]
    BadSeal,
    /// A datagram that names more keys than a keyring holds.
    #[error("names {0} keys, at most {MAX_KEYS}")]
    BadKeyList(usize),
}

/// A datagram that opened with the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// What it carries.
    pub payload: Vec<u8>,
    /// When it was sent, by the sender's clock (unix ms).
    pub sent_ms: u64,
    /// Whether it may be taken: not a replay, and from a clock within the
    /// window.
    pub fresh: Result<(), Stale>,
    /// The keys its sender holds, its primary first.
    pub keys: Vec<KeyId>,
}

/// One key of the keyring, ready to seal and open.
struct Sealing {
    id: KeyId,
    cipher: XChaCha20Poly1305,
}

/// Seals with a keyring's primary key and opens with any of its keys.
/// Clones share the keys, so a keyring change reaches every socket and
/// stream at once.
///
/// # Keys during a rotation
/// A datagram names, inside the box, the keys its sender holds; a reply
/// is sealed with the receiver's primary if the peer holds it, else with
/// a key both hold. A stream's acceptor seals its challenge with each of
/// its keys, and both sides keep to the key the first frames opened
/// with. So an agent that missed `keys use` (it was down) still hears and
/// is heard, as long as it holds one key the others hold, and learns the
/// new keys from the table.
#[derive(Clone)]
pub struct Envelope {
    /// The primary first.
    keys: std::sync::Arc<std::sync::RwLock<Vec<Sealing>>>,
}

impl Envelope {
    /// An envelope keyed by `key` alone.
    pub fn new(key: &ClusterKey) -> Self {
        Self::with_keyring(&Keyring::single(key.clone()))
    }

    /// An envelope keyed by `keyring`.
    pub fn with_keyring(keyring: &Keyring) -> Self {
        Self {
            keys: std::sync::Arc::new(std::sync::RwLock::new(sealings_of(keyring))),
        }
    }

    /// Seals with `keyring`'s primary and opens with its keys from now on,
    /// here and in every clone.
    pub fn set_keyring(&self, keyring: &Keyring) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        *keys = sealings_of(keyring);
    }

    /// The ids of the keys held, the primary first.
    pub fn ids(&self) -> Vec<KeyId> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.iter().map(|k| k.id).collect()
    }

    /// Seals `payload` with the primary into a new buffer of
    /// `payload.len() + OVERHEAD` bytes.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        self.seal_with(None, payload)
    }

    /// Seals with the key `id` if it is held, else with the primary.
    pub fn seal_with(&self, id: Option<KeyId>, payload: &[u8]) -> Vec<u8> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let chosen = id
            .and_then(|id| keys.iter().find(|k| k.id == id))
            .or_else(|| keys.first());
        chosen.map_or_else(Vec::new, |key| seal_one(&key.cipher, payload))
    }

    /// Seals `payload` with each key held, the primary first.
    pub fn seal_each(&self, payload: &[u8]) -> Vec<Vec<u8>> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.iter().map(|k| seal_one(&k.cipher, payload)).collect()
    }

    /// Seals a datagram sent at `now_ms` to a peer that holds `peer_keys`
    /// (empty if unknown): the time and the keys this node holds go
    /// inside the box.
    pub fn seal_datagram(&self, payload: &[u8], now_ms: u64, peer_keys: &[KeyId]) -> Vec<u8> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let Some(primary) = keys.first() else {
            return Vec::new();
        };
        let chosen = if peer_keys.is_empty() || peer_keys.contains(&primary.id) {
            primary
        } else {
            keys.iter()
                .find(|k| peer_keys.contains(&k.id))
                .unwrap_or(primary)
        };
        let mut plain = Vec::with_capacity(9 + 4 * keys.len() + payload.len());
        plain.extend_from_slice(&now_ms.to_le_bytes());
        plain.push(u8::try_from(keys.len()).unwrap_or(0));
        for key in keys.iter() {
            plain.extend_from_slice(&key.id.0);
        }
        plain.extend_from_slice(payload);
        seal_one(&chosen.cipher, &plain)
    }

    /// Opens a datagram received at `now_ms` and checks whether it is
    /// fresh; a fresh one's nonce is remembered in `guard`. An error means
    /// it did not open at all.
    pub fn open_datagram(
        &self,
        data: &[u8],
        limit: usize,
        now_ms: u64,
        guard: &mut ReplayGuard,
    ) -> Result<Datagram, OpenError> {
        let plain = self.open(data, limit)?;
        let (Some(sent_at), Some(nonce)) = (
            plain.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()),
            data.get(HEADER_LEN..HEADER_LEN + NONCE_LEN)
                .and_then(|b| <[u8; NONCE_LEN]>::try_from(b).ok()),
        ) else {
            return Err(OpenError::Truncated(data.len()));
        };
        let count = plain.get(8).map_or(0, |&n| usize::from(n));
        if count > MAX_KEYS {
            return Err(OpenError::BadKeyList(count));
        }
        let ids_end = 9 + 4 * count;
        let Some(ids) = plain.get(9..ids_end) else {
            return Err(OpenError::Truncated(data.len()));
        };
        let keys = ids
            .chunks_exact(4)
            .filter_map(|c| c.try_into().ok().map(KeyId))
            .collect();
        let sent_ms = u64::from_le_bytes(sent_at);
        let fresh = guard.check(nonce, sent_ms, now_ms);
        Ok(Datagram {
            payload: plain[ids_end..].to_vec(),
            sent_ms,
            fresh,
            keys,
        })
    }

    /// Opens a sealed message of at most `limit` bytes, returning its payload.
    pub fn open(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, OpenError> {
        self.open_keyed(data, limit).map(|(plain, _)| plain)
    }

    /// Opens a sealed message of at most `limit` bytes, returning its
    /// payload and the key that opened it.
    pub fn open_keyed(&self, data: &[u8], limit: usize) -> Result<(Vec<u8>, KeyId), OpenError> {
        if data.len() > limit {
            return Err(OpenError::Oversized {
                len: data.len(),
                limit,
            });
        }
        if data.len() < OVERHEAD {
            return Err(OpenError::Truncated(data.len()));
        }
        let (header, rest) = data.split_at(HEADER_LEN);
        if &header[..MAGIC.len()] != MAGIC {
            return Err(OpenError::BadMagic);
        }
        if header[MAGIC.len()] != VERSION {
            return Err(OpenError::BadVersion(header[MAGIC.len()]));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenError::Truncated(data.len()))?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .find_map(|key| {
                key.cipher
                    .decrypt(
                        &nonce,
                        Payload {
                            msg: sealed,
                            aad: header,
                        },
                    )
                    .ok()
                    .map(|plain| (plain, key.id))
            })
            .ok_or(OpenError::BadSeal)
    }
}

fn seal_one(cipher: &XChaCha20Poly1305, payload: &[u8]) -> Vec<u8> {
    let nonce = XNonce::generate();
    let mut header = [0u8; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(MAGIC);
    header[MAGIC.len()] = VERSION;
    // Encryption fails only for payloads beyond 256 GiB, never built here.
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: payload,
                aad: &header,
            },
        )
        .unwrap_or_default();
    let mut out = Vec::with_capacity(OVERHEAD + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(nonce.as_slice());
    out.extend_from_slice(&sealed);
    out
}

fn sealings_of(keyring: &Keyring) -> Vec<Sealing> {
    keyring
        .keys()
        .iter()
        .map(|key| Sealing {
            id: key.id(),
            cipher: XChaCha20Poly1305::new(key.as_bytes().into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 2048;

    fn envelope() -> Envelope {
        Envelope::new(
            &ClusterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap(),
        )
    }

    #[test]
    fn a_keyring_seals_with_its_primary_and_opens_with_any_of_its_keys() {
        let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
        let mut ring = Keyring::single(old.clone());
        ring.install(new.clone()).unwrap();
        let ours = Envelope::with_keyring(&ring);
        let clone = ours.clone();
        let (only_old, only_new) = (Envelope::new(&old), Envelope::new(&new));
        // Sealed with the primary (old); opens with either holder of it.
        assert!(only_old.open(&ours.seal(b"x"), LIMIT).is_ok());
        assert_eq!(
            only_new.open(&ours.seal(b"x"), LIMIT),
            Err(OpenError::BadSeal)
        );
        assert!(ours.open(&only_new.seal(b"x"), LIMIT).is_ok());
        // Use the new key: every clone seals with it at once.
        ring.use_key(&new.fingerprint()).unwrap();
        ours.set_keyring(&ring);
        assert!(only_new.open(&clone.seal(b"x"), LIMIT).is_ok());
        // Removed: the old key opens nothing any more.
        ring.remove(&old.fingerprint()).unwrap();
        ours.set_keyring(&ring);
        assert_eq!(
            clone.open(&only_old.seal(b"x"), LIMIT),
            Err(OpenError::BadSeal)
        );
    }

    #[test]
    fn a_datagram_names_its_keys_and_is_sealed_with_one_the_peer_holds() {
        let (old, new) = (ClusterKey::generate(), ClusterKey::generate());
        let mut ring = Keyring::single(old.clone());
        ring.install(new.clone()).unwrap();
        ring.use_key(&new.fingerprint()).unwrap();
        let ours = Envelope::with_keyring(&ring);
        let behind = Envelope::new(&old);
        let now = 1_800_000_000_000;
        let mut guard = ReplayGuard::default();
        // To a peer that said it holds only the old key: sealed with it.
        let sealed = ours.seal_datagram(b"swim", now, &[old.id()]);
        let opened = behind
            .open_datagram(&sealed, LIMIT, now, &mut guard)
            .unwrap();
        assert_eq!(opened.payload, b"swim");
        assert_eq!(opened.keys, vec![new.id(), old.id()]);
        // To a peer not heard from, or holding the primary: the primary.
        for peer in [&[][..], &[new.id(), old.id()]] {
            let sealed = ours.seal_datagram(b"swim", now, peer);
            assert_eq!(
                behind.open_datagram(&sealed, LIMIT, now, &mut guard),
                Err(OpenError::BadSeal)
            );
        }
        // The one behind names its single key.
        let sealed = behind.seal_datagram(b"x", now, &[]);
        let opened = ours.open_datagram(&sealed, LIMIT, now, &mut guard).unwrap();
        assert_eq!(opened.keys, vec![old.id()]);
    }

    #[test]
    fn a_datagram_opens_once_and_only_while_fresh() {
        let env = envelope();
        let mut guard = ReplayGuard::default();
        let now = 1_800_000_000_000;
        let sealed = env.seal_datagram(b"swim", now, &[]);
        let opened = env
            .open_datagram(&sealed, LIMIT, now + 5, &mut guard)
            .unwrap();
        assert_eq!(opened.payload, b"swim");
        assert_eq!((opened.sent_ms, opened.fresh), (now, Ok(())));
        let again = env
            .open_datagram(&sealed, LIMIT, now + 6, &mut guard)
            .unwrap();
        assert_eq!(again.fresh, Err(Stale::Replayed));
        // Recorded, and played after the window: refused, seen or not.
        let later = now + crate::freshness::WINDOW_MS + 1;
        let mut fresh_guard = ReplayGuard::default();
        let late = env
            .open_datagram(&sealed, LIMIT, later, &mut fresh_guard)
            .unwrap();
        assert!(matches!(late.fresh, Err(Stale::Old(_))));
    }

    proptest! {
        #[test]
        fn seal_open_roundtrip(payload in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let env = envelope();
            let sealed = env.seal(&payload);
            prop_assert_eq!(sealed.len(), payload.len() + OVERHEAD);
            prop_assert_eq!(env.open(&sealed, LIMIT).unwrap(), payload);
        }

        #[test]
        fn any_flipped_bit_is_rejected(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            bit in any::<usize>(),
        ) {
            let env = envelope();
            let mut sealed = env.seal(&payload);
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(env.open(&sealed, LIMIT).is_err());
        }

        #[test]
        fn any_truncation_is_rejected(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            cut in any::<usize>(),
        ) {
            let env = envelope();
            let sealed = env.seal(&payload);
            let cut = cut % sealed.len();
            prop_assert!(env.open(&sealed[..cut], LIMIT).is_err());
        }

        #[test]
        fn random_garbage_never_opens(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            prop_assert!(envelope().open(&data, LIMIT).is_err());
        }
    }

    #[test]
    fn wrong_key_is_rejected() {
        let sealed = envelope().seal(b"hello");
        let other = Envelope::new(&ClusterKey::generate());
        assert_eq!(other.open(&sealed, LIMIT), Err(OpenError::BadSeal));
    }

    #[test]
    fn oversized_is_rejected_before_decrypting() {
        let env = envelope();
        let sealed = env.seal(&[7u8; 100]);
        assert_eq!(
            env.open(&sealed, 50),
            Err(OpenError::Oversized {
                len: 100 + OVERHEAD,
                limit: 50
            })
        );
    }

    #[test]
    fn foreign_magic_and_version_are_named() {
        let env = envelope();
        let mut sealed = env.seal(b"x");
        sealed[0] = b'X';
        assert_eq!(env.open(&sealed, LIMIT), Err(OpenError::BadMagic));
        let mut sealed = env.seal(b"x");
        sealed[3] = 9;
        assert_eq!(env.open(&sealed, LIMIT), Err(OpenError::BadVersion(9)));
    }
}
