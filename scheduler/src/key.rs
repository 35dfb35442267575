//! [`Key`]: which record of the table a value belongs to.
//!
//! | key | text form | value |
//! |---|---|---|
//! | [`Key::Service`] | `svc/<name>` | [`crate::record::ServiceRecord`] |
//! | [`Key::Claim`] | `claim/<name>/<slot>` | [`crate::record::Claim`] |
//! | [`Key::Status`] | `status/<node>/<name>/<slot>` | [`crate::record::Status`] |
//! | [`Key::Node`] | `node/<node>` | [`crate::record::NodeRecord`] |
//! | [`Key::ClusterKey`] | `key/<fingerprint>` | [`crate::record::KeyRecord`] |
//! | [`Key::History`] | `hist/<name>` | [`crate::history::History`] |
//!
//! A key travels and is stored as its text form, so the table file and the
//! wire keep the format they had when keys were strings. Parsing is strict:
//! `parse(k.to_string()) == k` for every key, and a text that is not the
//! canonical form of a key (an empty or `/`-holding name, a slot with a
//! sign or a leading zero) is refused, so two texts never name one record.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::StableHasher;

/// The key of one record.
///
/// Ordered by kind (`svc/` < `claim/` < `status/` < `node/` < `key/`), then by its
/// fields in order; [`KeyRef`] orders the same way, so a table is searched
/// by a borrowed key without building one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `svc/<name>`: a service's spec, or its removal.
    Service(Name),
    /// `claim/<name>/<slot>`: who owns a slot.
    Claim(Name, u32),
    /// `status/<node>/<name>/<slot>`: the instance a node runs for a slot.
    Status(Name, Name, u32),
    /// `node/<node>`: what a node offers.
    Node(Name),
    /// `key/<fingerprint>`: a key of the cluster's keyring.
    ClusterKey(Name),
    /// `hist/<name>`: a service's last versions.
    History(Name),
}

/// A service or node name in a key: shared, so that copying a key (into
/// every table a record reaches, into the sets of touched slots) copies
/// no bytes.
pub type Name = std::sync::Arc<str>;

/// A borrowed [`Key`], for lookups that allocate nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef<'a> {
    /// See [`Key::Service`].
    Service(&'a str),
    /// See [`Key::Claim`].
    Claim(&'a str, u32),
    /// See [`Key::Status`].
    Status(&'a str, &'a str, u32),
    /// See [`Key::Node`].
    Node(&'a str),
    /// See [`Key::ClusterKey`].
    ClusterKey(&'a str),
    /// See [`Key::History`].
    History(&'a str),
}

impl KeyRef<'_> {
    fn kind(&self) -> u8 {
        match self {
            Self::Service(_) => 0,
            Self::Claim(..) => 1,
            Self::Status(..) => 2,
            Self::Node(_) => 3,
            Self::ClusterKey(_) => 4,
            Self::History(_) => 5,
        }
    }
}

impl PartialOrd for KeyRef<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// By kind, then field by field; names byte-wise, as `str` orders them.
impl Ord for KeyRef<'_> {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Service(a), Self::Service(b))
            | (Self::Node(a), Self::Node(b))
            | (Self::ClusterKey(a), Self::ClusterKey(b))
            | (Self::History(a), Self::History(b)) => bytes_cmp(a, b),
            (Self::Claim(a, x), Self::Claim(b, y)) => bytes_cmp(a, b).then(x.cmp(y)),
            (Self::Status(n, a, x), Self::Status(m, b, y)) => {
                bytes_cmp(n, m).then_with(|| bytes_cmp(a, b)).then(x.cmp(y))
            }
            _ => self.kind().cmp(&other.kind()),
        }
    }
}

/// `a.cmp(b)` for names, eight bytes at a time: the table's B-tree
/// compares keys on every search, and names are short, so this beats a
/// call into `memcmp`.
#[inline]
fn bytes_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let common = a.len().min(b.len());
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_be_bytes(w)
    };
    let mut at = 0;
    while at + 8 <= common {
        let (x, y) = (word(a, at), word(b, at));
        if x != y {
            return x.cmp(&y);
        }
        at += 8;
    }
    while at < common {
        if a[at] != b[at] {
            return a[at].cmp(&b[at]);
        }
        at += 1;
    }
    a.len().cmp(&b.len())
}

/// Anything that reads as a key: [`Key`] and [`KeyRef`]. Tables are
/// searched through `&dyn AsKeyRef`, which a `Key` borrows as.
pub trait AsKeyRef {
    /// The key, borrowed.
    fn key_ref(&self) -> KeyRef<'_>;
}

impl AsKeyRef for Key {
    #[inline]
    fn key_ref(&self) -> KeyRef<'_> {
        match self {
            Self::Service(name) => KeyRef::Service(name),
            Self::Claim(name, slot) => KeyRef::Claim(name, *slot),
            Self::Status(node, name, slot) => KeyRef::Status(node, name, *slot),
            Self::Node(node) => KeyRef::Node(node),
            Self::ClusterKey(fingerprint) => KeyRef::ClusterKey(fingerprint),
            Self::History(name) => KeyRef::History(name),
        }
    }
}

impl AsKeyRef for KeyRef<'_> {
    fn key_ref(&self) -> KeyRef<'_> {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn AsKeyRef + 'a> for Key {
    fn borrow(&self) -> &(dyn AsKeyRef + 'a) {
        self
    }
}

impl PartialEq for dyn AsKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for dyn AsKeyRef + '_ {}

/// The same hash as [`Key`]'s, so a table's index is searched with either.
impl std::hash::Hash for dyn AsKeyRef + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state);
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key_ref().hash(state);
    }
}

impl PartialOrd for dyn AsKeyRef + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn AsKeyRef + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key_ref().cmp(&other.key_ref())
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The same order as [`KeyRef`]'s, by construction (a table's B-tree is
/// searched with either).
impl Ord for Key {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        self.key_ref().cmp(&other.key_ref())
    }
}

/// A text that is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad record key {text:?}: {why}")]
pub struct KeyError {
    /// The text (cut to 80 characters).
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Key {
    /// The service a `svc/`, `claim/` or `status/` key is about.
    pub fn service(&self) -> Option<&str> {
        match self {
            Self::Service(name) | Self::Claim(name, _) | Self::Status(_, name, _) => Some(name),
            Self::History(name) => Some(name),
            Self::Node(_) | Self::ClusterKey(_) => None,
        }
    }

    /// The `(service, slot)` a `claim/` or `status/` key is about.
    pub fn slot(&self) -> Option<(&str, u32)> {
        match self {
            Self::Claim(name, slot) | Self::Status(_, name, slot) => Some((name, *slot)),
            Self::Service(_) | Self::Node(_) | Self::ClusterKey(_) | Self::History(_) => None,
        }
    }

    /// Length of the text form, without building it.
    fn text_len(&self) -> usize {
        let digits = |n: u32| n.checked_ilog10().map_or(1, |d| d as usize + 1);
        match self {
            Self::Service(name) => 4 + name.len(),
            Self::Claim(name, slot) => 6 + name.len() + 1 + digits(*slot),
            Self::Status(node, name, slot) => 7 + node.len() + 1 + name.len() + 1 + digits(*slot),
            Self::Node(node) => 5 + node.len(),
            Self::ClusterKey(fingerprint) => 4 + fingerprint.len(),
            Self::History(name) => 5 + name.len(),
        }
    }

    /// Feeds the text form to `hasher` as one length-prefixed field,
    /// exactly as `hasher.field(self.to_string().as_bytes())` would.
    pub fn hash_into(&self, hasher: &mut StableHasher) {
        hasher.write(&(self.text_len() as u64).to_le_bytes());
        self.write_text(hasher);
    }

    /// Feeds the text form's bytes, unprefixed.
    pub fn write_text(&self, hasher: &mut StableHasher) {
        match self {
            Self::Service(name) => {
                hasher.write(b"svc/").write(name.as_bytes());
            }
            Self::Claim(name, slot) => {
                hasher.write(b"claim/").write(name.as_bytes()).write(b"/");
                write_slot(hasher, *slot);
            }
            Self::Status(node, name, slot) => {
                hasher
                    .write(b"status/")
                    .write(node.as_bytes())
                    .write(b"/")
                    .write(name.as_bytes())
                    .write(b"/");
                write_slot(hasher, *slot);
            }
            Self::Node(node) => {
                hasher.write(b"node/").write(node.as_bytes());
            }
            Self::ClusterKey(fingerprint) => {
                hasher.write(b"key/").write(fingerprint.as_bytes());
            }
            Self::History(name) => {
                hasher.write(b"hist/").write(name.as_bytes());
            }
        }
    }
}

/// Feeds a slot's decimal digits.
fn write_slot(hasher: &mut StableHasher, mut slot: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (slot % 10) as u8;
        slot /= 10;
        if slot == 0 {
            break;
        }
    }
    hasher.write(&digits[at..]);
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service(name) => write!(f, "svc/{name}"),
            Self::Claim(name, slot) => write!(f, "claim/{name}/{slot}"),
            Self::Status(node, name, slot) => write!(f, "status/{node}/{name}/{slot}"),
            Self::Node(node) => write!(f, "node/{node}"),
            Self::ClusterKey(fingerprint) => write!(f, "key/{fingerprint}"),
            Self::History(name) => write!(f, "hist/{name}"),
        }
    }
}

fn name(part: &str) -> Result<Name, &'static str> {
    if part.is_empty() {
        return Err("a name is empty");
    }
    if part.contains('/') {
        return Err("a name holds '/'");
    }
    Ok(part.into())
}

fn slot(part: &str) -> Result<u32, &'static str> {
    let canonical = !part.is_empty()
        && part.bytes().all(|b| b.is_ascii_digit())
        && (part == "0" || !part.starts_with('0'));
    if !canonical {
        return Err("the slot is not a number in canonical form");
    }
    part.parse().map_err(|_| "the slot is out of range")
}

impl FromStr for Key {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        let parsed = if let Some(rest) = text.strip_prefix("svc/") {
            name(rest).map(Self::Service)
        } else if let Some(rest) = text.strip_prefix("claim/") {
            match rest.rsplit_once('/') {
                Some((service, n)) => name(service).and_then(|s| Ok(Self::Claim(s, slot(n)?))),
                None => Err("a claim key needs a slot"),
            }
        } else if let Some(rest) = text.strip_prefix("status/") {
            match rest.split_once('/').and_then(|(node, rest)| {
                let (service, n) = rest.rsplit_once('/')?;
                Some((node, service, n))
            }) {
                Some((node, service, n)) => {
                    name(node).and_then(|node| Ok(Self::Status(node, name(service)?, slot(n)?)))
                }
                None => Err("a status key needs a node, a service and a slot"),
            }
        } else if let Some(rest) = text.strip_prefix("node/") {
            name(rest).map(Self::Node)
        } else if let Some(rest) = text.strip_prefix("key/") {
            name(rest).map(Self::ClusterKey)
        } else if let Some(rest) = text.strip_prefix("hist/") {
            name(rest).map(Self::History)
        } else {
            Err("unknown kind (not svc/, claim/, status/, node/, key/ or hist/)")
        };
        parsed.map_err(|why| KeyError {
            text: text.chars().take(80).collect(),
            why,
        })
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> Vec<Key> {
        vec![
            Key::Service("web".into()),
            Key::Claim("web".into(), 0),
            Key::Claim("web.v2".into(), 4_294_967_295),
            Key::Status("n-1".into(), "web".into(), 12),
            Key::Node("n_1.zone".into()),
            Key::ClusterKey("0123456789abcdef".into()),
            Key::History("web".into()),
        ]
    }

    #[test]
    fn text_round_trips_and_hashes_like_the_string() {
        for key in keys() {
            let text = key.to_string();
            assert_eq!(text.parse::<Key>().unwrap(), key, "{text}");
            assert_eq!(key.text_len(), text.len(), "{text}");
            let mut typed = StableHasher::default();
            key.hash_into(&mut typed);
            let mut plain = StableHasher::default();
            plain.field(text.as_bytes());
            assert_eq!(typed.finish(), plain.finish(), "{text}");
            let bytes = postcard::to_stdvec(&key).unwrap();
            assert_eq!(bytes, postcard::to_stdvec(&text).unwrap());
            assert_eq!(postcard::from_bytes::<Key>(&bytes).unwrap(), key);
        }
    }

    #[test]
    fn non_canonical_texts_are_refused_naming_the_problem() {
        for (text, why) in [
            ("svc/", "empty"),
            ("svc/a/b", "'/'"),
            ("claim/web", "needs a slot"),
            ("claim/web/", "canonical"),
            ("claim/web/+1", "canonical"),
            ("claim/web/01", "canonical"),
            ("claim/web/4294967296", "range"),
            ("claim//0", "empty"),
            ("status/n1/web", "needs a node"),
            ("status/n1/web/x", "canonical"),
            ("status/n1/0", "needs a node"),
            ("node/", "empty"),
            ("other/x", "unknown kind"),
        ] {
            let err = text.parse::<Key>().unwrap_err();
            assert!(err.to_string().contains(why), "{text}: {err}");
        }
    }

    proptest! {
        #[test]
        fn parse_inverts_display(
            a in "[a-z0-9][a-z0-9._-]{0,20}",
            b in "[A-Za-z0-9._-]{1,20}",
            slot in any::<u32>(),
            kind in 0..6u8,
        ) {
            let key = match kind {
                0 => Key::Service(a.into()),
                1 => Key::Claim(a.into(), slot),
                2 => Key::Status(b.into(), a.into(), slot),
                3 => Key::Node(b.into()),
                4 => Key::ClusterKey(b.into()),
                _ => Key::History(a.into()),
            };
            prop_assert_eq!(key.to_string().parse::<Key>().unwrap(), key);
        }

        #[test]
        fn names_order_as_str_does(a in "[a-z0-9./_-]{0,20}", b in "[a-z0-9./_-]{0,20}") {
            prop_assert_eq!(bytes_cmp(&a, &b), a.cmp(&b));
            let (x, y) = (Key::Claim(a.as_str().into(), 1), Key::Claim(b.as_str().into(), 0));
            prop_assert_eq!(x.cmp(&y), (a.as_str(), 1).cmp(&(b.as_str(), 0)));
        }

        #[test]
        fn display_inverts_parse(text in "(svc|claim|status|node|key|hist)/[a-z0-9/+]{0,12}") {
            if let Ok(key) = text.parse::<Key>() {
                prop_assert_eq!(key.to_string(), text);
            }
        }
    }
}
