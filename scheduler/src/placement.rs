//! Where each slot should run: rendezvous hashing with bounded loads, over
//! the live, eligible, non-draining members.
//!
//! - Score: [`score`] = FNV-1a 64 over the length-prefixed bytes of
//!   service name, slot (u32 LE) and node name ([`crate::hash`]); fixed
//!   across platforms and versions. The highest score wins.
//! - Eligible: the node's `node/` record offers the service's provider,
//!   carries every tag of `constraints.tags`, is not draining, and the slot
//!   has not failed there (for this version of the service).
//! - Sticky: a slot whose owner is live and eligible stays with it.
//! - The other slots are assigned in a canonical order (by service, then
//!   slot), each to the best candidate by: holds no other slot of the same
//!   service, then is under the load cap (`ceil(1.25 × slots / nodes)`),
//!   then score. Every node that sees the same table and members computes
//!   the same assignment; that is what makes it leaderless.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::hash::StableHasher;
use crate::record::{CLAIM_PREFIX, Claim, NodeRecord, Value, claim_key, node_key};
use crate::spec::ServiceSpec;
use crate::table::Table;

/// Load cap factor of bounded-load hashing.
pub const LOAD_FACTOR: f64 = 1.25;

/// The members a node believes live (alive or suspect), by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    live: BTreeSet<String>,
}

impl Members {
    /// From the names of the live members (this node included).
    pub fn new(live: impl IntoIterator<Item = String>) -> Self {
        Self {
            live: live.into_iter().collect(),
        }
    }

    /// Whether `node` is live.
    pub fn is_live(&self, node: &str) -> bool {
        self.live.contains(node)
    }

    /// Live member names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.live.iter().map(String::as_str)
    }
}

/// Rendezvous score of `node` for a slot.
pub fn score(service: &str, slot: u32, node: &str) -> u64 {
    StableHasher::default()
        .field(service.as_bytes())
        .field(&slot.to_le_bytes())
        .field(node.as_bytes())
        .finish()
}

/// The `node/` record of `node`.
pub fn node_record<'a>(table: &'a Table, node: &str) -> Option<&'a NodeRecord> {
    match table.get(&node_key(node)).map(|r| &r.value) {
        Some(Value::Node(n)) => Some(n),
        _ => None,
    }
}

/// The claim of a slot.
pub fn claim<'a>(table: &'a Table, service: &str, slot: u32) -> Option<&'a Claim> {
    match table.get(&claim_key(service, slot)).map(|r| &r.value) {
        Some(Value::Claim(c)) => Some(c),
        _ => None,
    }
}

/// Nodes where this slot failed, for the service's current `version`.
pub fn failed_on<'a>(table: &'a Table, service: &str, slot: u32, version: u64) -> &'a [String] {
    match claim(table, service, slot) {
        Some(c) if c.version == version => &c.failed_on,
        _ => &[],
    }
}

/// Whether `node` may run `spec` (failures aside): live, has a record,
/// offers the provider, matches the tags, not draining.
pub fn eligible(table: &Table, members: &Members, spec: &ServiceSpec, node: &str) -> bool {
    members.is_live(node)
        && node_record(table, node).is_some_and(|n| {
            !n.is_draining()
                && n.providers.contains(&spec.params.provider())
                && spec
                    .constraints
                    .tags
                    .iter()
                    .all(|(k, v)| n.tags.get(k) == Some(v))
        })
}

/// The owner of every placed slot: `(service, slot) -> node`, plus the
/// slots that can't be placed and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Where each placeable slot runs.
    pub owners: BTreeMap<(String, u32), String>,
    /// Why a slot has no eligible node.
    pub unplaced: BTreeMap<(String, u32), String>,
    /// Unplaced slots that failed on every node able to run them: the
    /// service is `failed` until redeployed.
    pub failed: BTreeSet<(String, u32)>,
}

/// The table read once for placement: live services, claims, and the
/// records of live nodes.
pub(crate) struct Index<'a> {
    /// Live services with their versions, by name.
    pub(crate) services: Vec<(&'a ServiceSpec, u64)>,
    /// Claims by (service, slot).
    pub(crate) claims: HashMap<(&'a str, u32), &'a Claim>,
    /// Live members that have a node record, by name order.
    nodes: Vec<(&'a str, &'a NodeRecord)>,
}

impl<'a> Index<'a> {
    pub(crate) fn new(table: &'a Table, members: &'a Members) -> Self {
        let services = table
            .services()
            .filter_map(|(_, _, s)| s.spec.as_ref().map(|spec| (spec, s.version)))
            .collect();
        let claims = table
            .with_prefix(CLAIM_PREFIX)
            .filter_map(|(k, r)| match &r.value {
                Value::Claim(c) => {
                    let (service, slot) = k[CLAIM_PREFIX.len()..].rsplit_once('/')?;
                    Some(((service, slot.parse().ok()?), c))
                }
                _ => None,
            })
            .collect();
        let nodes = members
            .names()
            .filter_map(|n| node_record(table, n).map(|r| (n, r)))
            .collect();
        Self {
            services,
            claims,
            nodes,
        }
    }

    /// The claim of a slot.
    pub(crate) fn claim(&self, service: &str, slot: u32) -> Option<&'a Claim> {
        self.claims.get(&(service, slot)).copied()
    }

    /// Failures of a slot for `version`.
    pub(crate) fn failed_on(&self, service: &str, slot: u32, version: u64) -> &'a [String] {
        match self.claim(service, slot) {
            Some(c) if c.version == version => &c.failed_on,
            _ => &[],
        }
    }

    fn fits(record: &NodeRecord, spec: &ServiceSpec) -> bool {
        !record.is_draining()
            && record.providers.contains(&spec.params.provider())
            && spec
                .constraints
                .tags
                .iter()
                .all(|(k, v)| record.tags.get(k) == Some(v))
    }

    /// Index of a live member with a node record.
    fn node(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|(n, _)| *n == name)
    }

    /// Whether node `ni` may run the slot: fits, and it didn't fail there.
    fn can_run(&self, ni: usize, spec: &ServiceSpec, slot: u32, version: u64) -> bool {
        let (name, record) = self.nodes[ni];
        Self::fits(record, spec)
            && !self
                .failed_on(&spec.name, slot, version)
                .iter()
                .any(|f| f == name)
    }

    /// Computes the assignment.
    pub(crate) fn assign(&self) -> Assignment {
        let mut out = Assignment::default();
        let mut load = vec![0usize; self.nodes.len()];
        let mut holds: HashSet<(usize, usize)> = HashSet::new(); // (node, service)
        let total: usize = self.services.iter().map(|(s, _)| s.replicas as usize).sum();
        let nodes = self
            .nodes
            .iter()
            .filter(|(_, r)| !r.is_draining())
            .count()
            .max(1);
        let cap = ((total as f64 * LOAD_FACTOR) / nodes as f64).ceil() as usize;

        // Sticky claims first.
        let mut open = Vec::new();
        for (si, (spec, version)) in self.services.iter().enumerate() {
            for slot in 0..spec.replicas {
                let owner = self
                    .claim(&spec.name, slot)
                    .and_then(|c| c.owner.as_deref());
                let kept = owner
                    .and_then(|o| self.node(o))
                    .filter(|ni| self.can_run(*ni, spec, slot, *version));
                match kept {
                    Some(ni) => {
                        load[ni] += 1;
                        holds.insert((ni, si));
                        out.owners
                            .insert((spec.name.clone(), slot), self.nodes[ni].0.to_owned());
                    }
                    None => open.push((si, slot)),
                }
            }
        }
        // Then every open slot, in canonical order.
        for (si, slot) in open {
            let (spec, version) = self.services[si];
            let failed = self.failed_on(&spec.name, slot, version);
            let best = (0..self.nodes.len())
                .filter(|ni| self.can_run(*ni, spec, slot, version))
                .max_by_key(|ni| {
                    (
                        !holds.contains(&(*ni, si)),
                        load[*ni] < cap,
                        score(&spec.name, slot, self.nodes[*ni].0),
                    )
                });
            match best {
                Some(ni) => {
                    load[ni] += 1;
                    holds.insert((ni, si));
                    out.owners
                        .insert((spec.name.clone(), slot), self.nodes[ni].0.to_owned());
                }
                None => {
                    let capable = self.nodes.iter().any(|(_, r)| Self::fits(r, spec));
                    if capable {
                        out.failed.insert((spec.name.clone(), slot));
                    }
                    out.unplaced.insert(
                        (spec.name.clone(), slot),
                        unplaced_reason(capable, spec, failed),
                    );
                }
            }
        }
        out
    }
}

/// Computes the assignment from the table's services and claims and the
/// live members. Pure: the same table and members give the same result.
pub fn assign(table: &Table, members: &Members) -> Assignment {
    Index::new(table, members).assign()
}

fn unplaced_reason(capable: bool, spec: &ServiceSpec, failed: &[String]) -> String {
    if capable {
        return format!(
            "failed on every eligible node ({}); redeploy to retry",
            failed.join(", ")
        );
    }
    let mut needs = vec![format!("provider {}", spec.params.provider())];
    needs.extend(
        spec.constraints
            .tags
            .iter()
            .map(|(k, v)| format!("tag {k}={v}")),
    );
    format!("no live, non-draining node offers {}", needs.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_pinned() {
        // Changing the hash or the field layout moves every slot of every
        // cluster on upgrade: this must never change.
        assert_eq!(score("web", 0, "n1"), PINNED);
        assert_ne!(score("web", 0, "n1"), score("web", 1, "n1"));
        assert_ne!(score("web", 0, "n1"), score("web", 0, "n2"));
    }

    const PINNED: u64 = 8_024_078_393_273_458_203;
}
