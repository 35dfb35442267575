//! `NodeId`: who a member is, and which incarnation of it.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Longest node name accepted; keeps identities small inside datagrams.
pub const MAX_NAME_LEN: usize = 64;

/// A member's identity: its unique name, the address it gossips on, and an
/// epoch that grows with every start of the agent.
///
/// Two identities with the same address are the same member slot in foca;
/// the one with the larger `(epoch, name)` wins, so a restarted agent always
/// replaces its old self.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct NodeId {
    /// Node name, unique in the cluster (defaults to the hostname).
    pub name: String,
    /// Gossip address (UDP and TCP share it).
    pub addr: SocketAddr,
    /// Incarnation of the agent; see [`crate::epoch`].
    pub epoch: u64,
}

impl NodeId {
    /// The next incarnation of this node: same name and address, epoch + 1.
    /// `None` only when the epoch is exhausted.
    pub fn renew(&self) -> Option<Self> {
        self.epoch.checked_add(1).map(|epoch| Self {
            epoch,
            ..self.clone()
        })
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.epoch)
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        NodeId::renew(self)
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // A strict total order, so two identities can't both win.
        (self.epoch, &self.name) > (adversary.epoch, &adversary.name)
    }
}

/// Checks a node name: 1..=64 characters of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} bytes long, at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {c:?}; use letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn id(name: &str, epoch: u64) -> NodeId {
        NodeId {
            name: name.into(),
            addr: "127.0.0.1:7946".parse().unwrap(),
            epoch,
        }
    }

    #[test]
    fn renew_bumps_epoch_only() {
        let a = id("a", 41);
        let b = Identity::renew(&a).unwrap();
        assert_eq!(b.epoch, 42);
        assert_eq!((b.name.as_str(), b.addr), ("a", a.addr));
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        assert_eq!(id("a", u64::MAX).renew(), None);
    }

    #[test]
    fn conflict_order_is_strict_and_total() {
        let (a, b) = (id("a", 5), id("b", 5));
        assert!(b.win_addr_conflict(&a) ^ a.win_addr_conflict(&b));
        assert!(!a.win_addr_conflict(&a.clone()));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("node-1.zone_a").is_ok());
        assert!(validate_name("").unwrap_err().contains("empty"));
        assert!(validate_name("a b").unwrap_err().contains("' '"));
        assert!(validate_name(&"x".repeat(65)).unwrap_err().contains("65"));
    }
}
