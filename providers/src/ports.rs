//! Host ports of this node's instances: a fixed port is checked free, a
//! port 0 is picked from the node's port range. No two slots held here
//! get one port; a slot started again keeps its ports when they are still
//! free (a restart, a new version, a move back).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::ops::RangeInclusive;

use mob_scheduler::hash::stable_hash;
use mob_scheduler::ports::Ports;

/// The default `--port-range`: below Linux's ephemeral range (32768 on),
/// which outgoing connections take ports from.
pub const DEFAULT_RANGE: RangeInclusive<u16> = 20_000..=32_767;

/// Why a slot got no ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// A fixed port is bound on this host (by anything).
    #[error("port {name} ({port}) is in use on this host")]
    InUse {
        /// The port's name.
        name: String,
        /// The host port.
        port: u16,
    },
    /// A fixed port is held by another slot of this node.
    #[error("port {name} ({port}) is held by {holder} on this node")]
    Held {
        /// The port's name.
        name: String,
        /// The host port.
        port: u16,
        /// `service/slot` that holds it.
        holder: String,
    },
    /// Every port of the range is taken.
    #[error("no free port left in {lo}-{hi} for port {name}")]
    Exhausted {
        /// The port's name.
        name: String,
        /// The range's first port.
        lo: u16,
        /// The range's last port.
        hi: u16,
    },
}

/// The ports of the slots held on this node.
#[derive(Debug)]
pub struct PortAllocator {
    range: RangeInclusive<u16>,
    held: HashMap<(String, u32), BTreeMap<String, u16>>,
    /// Ports a slot last held, which it gets again if they are free.
    last: HashMap<(String, u32), BTreeMap<String, u16>>,
}

impl PortAllocator {
    /// An allocator picking from `range`.
    pub fn new(range: RangeInclusive<u16>) -> Self {
        Self {
            range,
            held: HashMap::new(),
            last: HashMap::new(),
        }
    }

    /// Host ports for slot `slot` of `service`, which asks for `wanted`:
    /// held until [`PortAllocator::release`]. On error nothing is held.
    pub fn assign(
        &mut self,
        service: &str,
        slot: u32,
        wanted: &Ports,
    ) -> Result<BTreeMap<String, u16>, PortError> {
        let key = (service.to_owned(), slot);
        self.release(service, slot);
        let previous = self.last.get(&key).cloned().unwrap_or_default();
        let mut chosen: BTreeMap<String, u16> = BTreeMap::new();
        for (name, port) in wanted.iter().filter(|(_, p)| !p.is_dynamic()) {
            if let Some(holder) = self.holder_of(port.host) {
                return Err(PortError::Held {
                    name: name.clone(),
                    port: port.host,
                    holder,
                });
            }
            if !is_free(port.host) {
                return Err(PortError::InUse {
                    name: name.clone(),
                    port: port.host,
                });
            }
            chosen.insert(name.clone(), port.host);
        }
        for name in wanted
            .iter()
            .filter(|(_, p)| p.is_dynamic())
            .map(|(n, _)| n)
        {
            let taken = |p: u16, chosen: &BTreeMap<String, u16>| {
                chosen.values().any(|c| *c == p) || self.holder_of(p).is_some()
            };
            let kept = previous
                .get(name)
                .copied()
                .filter(|p| self.range.contains(p) && !taken(*p, &chosen) && is_free(*p));
            let port = match kept {
                Some(p) => p,
                None => {
                    // From a point of the range that depends on the slot,
                    // so that agents on one host don't all try the same
                    // ports first.
                    let (lo, hi) = (*self.range.start(), *self.range.end());
                    let span = u64::from(hi.saturating_sub(lo)) + 1;
                    let start = stable_hash(format!("{service}/{slot}/{name}").as_bytes()) % span;
                    (0..span)
                        .filter_map(|i| u16::try_from(u64::from(lo) + (start + i) % span).ok())
                        .find(|p| !taken(*p, &chosen) && is_free(*p))
                        .ok_or_else(|| PortError::Exhausted {
                            name: name.clone(),
                            lo,
                            hi,
                        })?
                }
            };
            chosen.insert(name.clone(), port);
        }
        if !chosen.is_empty() {
            self.held.insert(key.clone(), chosen.clone());
            self.last.insert(key, chosen.clone());
        }
        Ok(chosen)
    }

    /// The slot no longer runs here: its ports are free again (and
    /// remembered, for its next start).
    pub fn release(&mut self, service: &str, slot: u32) {
        self.held.remove(&(service.to_owned(), slot));
    }

    /// Forgets what a slot last held (it is gone from this node).
    pub fn forget(&mut self, service: &str, slot: u32) {
        let key = (service.to_owned(), slot);
        self.held.remove(&key);
        self.last.remove(&key);
    }

    fn holder_of(&self, port: u16) -> Option<String> {
        self.held
            .iter()
            .find(|(_, ports)| ports.values().any(|p| *p == port))
            .map(|((service, slot), _)| format!("{service}/{slot}"))
    }
}

/// Whether nothing on the host has `port` bound, TCP or UDP, on any
/// address (binding the wildcard fails if anything holds the port).
fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
        && UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mob_scheduler::ports::PortSpec;

    fn ports(list: &[(&str, u16)]) -> Ports {
        list.iter()
            .map(|(n, p)| ((*n).to_owned(), PortSpec { host: *p, to: None }))
            .collect()
    }

    #[test]
    fn dynamic_ports_are_distinct_free_and_kept_by_their_slot() {
        // (Real sockets: the test binds what it checks.)
        let mut a = PortAllocator::new(24_000..=24_099);
        let one = a.assign("web", 0, &ports(&[("http", 0)])).unwrap();
        let two = a.assign("web", 1, &ports(&[("http", 0)])).unwrap();
        let three = a
            .assign("api", 0, &ports(&[("http", 0), ("admin", 0)]))
            .unwrap();
        let all: Vec<u16> = [&one, &two, &three]
            .iter()
            .flat_map(|m| m.values().copied())
            .collect();
        let distinct: std::collections::BTreeSet<u16> = all.iter().copied().collect();
        assert_eq!(distinct.len(), 4, "{all:?}");
        assert!(all.iter().all(|p| (24_000..=24_099).contains(p)));
        // Started again: the same ports.
        a.release("web", 0);
        assert_eq!(a.assign("web", 0, &ports(&[("http", 0)])).unwrap(), one);
        // A port bound by another program is skipped.
        a.release("web", 1);
        let squatter = TcpListener::bind((Ipv4Addr::UNSPECIFIED, two["http"])).unwrap();
        let again = a.assign("web", 1, &ports(&[("http", 0)])).unwrap();
        assert_ne!(again["http"], two["http"]);
        drop(squatter);
    }

    #[test]
    fn a_fixed_port_taken_is_an_error_naming_it() {
        let mut a = PortAllocator::new(24_100..=24_199);
        let squatter = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = squatter.local_addr().unwrap().port();
        let err = a.assign("web", 0, &ports(&[("admin", port)])).unwrap_err();
        assert_eq!(
            err,
            PortError::InUse {
                name: "admin".into(),
                port
            }
        );
        drop(squatter);
        a.assign("web", 0, &ports(&[("admin", port)])).unwrap();
        let held = a.assign("web", 1, &ports(&[("admin", port)])).unwrap_err();
        assert!(held.to_string().contains("web/0"), "{held}");
        // The failed assignment holds nothing.
        a.release("web", 0);
        a.assign("web", 1, &ports(&[("admin", port)])).unwrap();
    }

    #[test]
    fn a_full_range_is_an_error() {
        let mut a = PortAllocator::new(24_200..=24_201);
        a.assign("a", 0, &ports(&[("p", 0), ("q", 0)])).unwrap();
        let err = a.assign("b", 0, &ports(&[("p", 0)])).unwrap_err();
        assert!(matches!(err, PortError::Exhausted { .. }), "{err}");
    }
}
