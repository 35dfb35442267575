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

use std::collections::{BTreeMap, BTreeSet};

use crate::hash::StableHasher;
use crate::record::{Claim, NodeRecord};
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
    score_prefix(service, slot).field(node.as_bytes()).finish()
}

/// The score's hash state after the slot's fields, before the node's.
fn score_prefix(service: &str, slot: u32) -> StableHasher {
    let mut hasher = StableHasher::default();
    hasher.field(service.as_bytes()).field(&slot.to_le_bytes());
    hasher
}

/// Nodes where this slot failed, for the service's current `version`.
pub fn failed_on<'a>(table: &'a Table, service: &str, slot: u32, version: u64) -> &'a [String] {
    match table.claim(service, slot) {
        Some(c) if c.version == version => &c.failed_on,
        _ => &[],
    }
}

/// Whether a node with `record` may run `spec` (liveness and failures
/// aside): offers the provider, matches the tags, not draining.
pub fn fits(record: &NodeRecord, spec: &ServiceSpec) -> bool {
    !record.is_draining()
        && record.providers.contains(&spec.params.provider())
        && spec
            .constraints
            .tags
            .iter()
            .all(|(k, v)| record.tags.get(k) == Some(v))
}

/// Whether `node` may run `spec` (failures aside): live, has a record,
/// offers the provider, matches the tags, not draining.
pub fn eligible(table: &Table, members: &Members, spec: &ServiceSpec, node: &str) -> bool {
    members.is_live(node) && table.node(node).is_some_and(|n| fits(n, spec))
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
/// records of live nodes, laid out by position so that the per-slot work
/// touches no strings (reconcile runs this on every change, over tables
/// of thousands of records).
///
/// Slots are numbered flat: slot `k` of service index `si` is
/// `base[si] + k`.
pub(crate) struct Index<'a> {
    /// Live services with their versions, by name.
    pub(crate) services: Vec<(&'a ServiceSpec, u64)>,
    base: Vec<usize>,
    /// Claims, by flat slot.
    claims: Vec<Option<&'a Claim>>,
    /// Claims of slots that are gone (service removed or scaled down), in
    /// table order.
    pub(crate) orphan_claims: Vec<(&'a str, u32, &'a Claim)>,
    /// Live members that have a node record, by name order.
    nodes: Vec<(&'a str, &'a NodeRecord)>,
}

/// Where each flat slot goes: an index into [`Index`]'s nodes, or why it
/// can't be placed.
pub(crate) type Placed = Vec<Result<usize, Unplaced>>;

/// Why a slot has no node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unplaced {
    /// No live, non-draining node offers what the service needs.
    NoCandidate,
    /// It failed on every node able to run it.
    FailedEverywhere,
}

impl<'a> Index<'a> {
    pub(crate) fn new(table: &'a Table, members: &'a Members) -> Self {
        let services: Vec<(&ServiceSpec, u64)> = table
            .services()
            .filter_map(|(_, _, s)| s.spec.as_ref().map(|spec| (spec, s.version)))
            .collect();
        let mut base = Vec::with_capacity(services.len());
        let mut total = 0;
        for (spec, _) in &services {
            base.push(total);
            total += spec.replicas as usize;
        }
        let mut index = Self {
            services,
            base,
            claims: vec![None; total],
            orphan_claims: Vec::new(),
            nodes: members
                .names()
                .filter_map(|n| table.node(n).map(|r| (n, r)))
                .collect(),
        };
        let mut last = None;
        for (service, slot, c) in table.claims() {
            // Claims of one service are adjacent: look it up once.
            let si = match last {
                Some((name, si)) if name == service => si,
                _ => {
                    let si = index.service_index(service);
                    last = Some((service, si));
                    si
                }
            };
            match si.and_then(|si| index.slot_id(si, slot)) {
                Some(id) => index.claims[id] = Some(c),
                None => index.orphan_claims.push((service, slot, c)),
            }
        }
        index
    }

    /// Index of the live service `name` (services are in name order).
    pub(crate) fn service_index(&self, name: &str) -> Option<usize> {
        self.services
            .binary_search_by(|(spec, _)| spec.name.as_str().cmp(name))
            .ok()
    }

    /// Flat number of slot `slot` of service index `si`, if it exists.
    pub(crate) fn slot_id(&self, si: usize, slot: u32) -> Option<usize> {
        let (spec, _) = self.services.get(si)?;
        (slot < spec.replicas).then(|| self.base[si] + slot as usize)
    }

    /// Number of live slots.
    pub(crate) fn slot_count(&self) -> usize {
        self.claims.len()
    }

    /// The claim of slot `slot` of service index `si`.
    pub(crate) fn claim(&self, si: usize, slot: u32) -> Option<&'a Claim> {
        self.slot_id(si, slot).and_then(|id| self.claims[id])
    }

    /// Failures of a slot for the service's current version.
    pub(crate) fn failed_on(&self, si: usize, slot: u32) -> &'a [String] {
        let version = self.services[si].1;
        match self.claim(si, slot) {
            Some(c) if c.version == version => &c.failed_on,
            _ => &[],
        }
    }

    /// Whether node `ni` may run the slot: fits, and it didn't fail there.
    fn can_run(&self, ni: usize, si: usize, slot: u32) -> bool {
        let (name, record) = self.nodes[ni];
        fits(record, self.services[si].0) && !self.failed_on(si, slot).iter().any(|f| f == name)
    }

    /// Computes where every slot goes.
    pub(crate) fn place(&self) -> Placed {
        let mut placed: Placed = vec![Err(Unplaced::NoCandidate); self.slot_count()];
        let mut load = vec![0usize; self.nodes.len()];
        // Nodes holding a slot of each service (a handful per service).
        let mut holds: Vec<Vec<usize>> = vec![Vec::new(); self.services.len()];
        let nodes = self
            .nodes
            .iter()
            .filter(|(_, r)| !r.is_draining())
            .count()
            .max(1);
        let cap = ((self.slot_count() as f64 * LOAD_FACTOR) / nodes as f64).ceil() as usize;

        // Sticky claims first.
        let mut open = Vec::new();
        for (si, (spec, _)) in self.services.iter().enumerate() {
            for slot in 0..spec.replicas {
                let id = self.base[si] + slot as usize;
                let kept = self.claims[id]
                    .and_then(|c| c.owner.as_deref())
                    .and_then(|o| self.nodes.binary_search_by(|(n, _)| (*n).cmp(o)).ok())
                    .filter(|ni| self.can_run(*ni, si, slot));
                match kept {
                    Some(ni) => {
                        load[ni] += 1;
                        holds[si].push(ni);
                        placed[id] = Ok(ni);
                    }
                    None => open.push((si, slot)),
                }
            }
        }
        // Then every open slot, in canonical order.
        for (si, slot) in open {
            let spec = self.services[si].0;
            // The hash of (service, slot) is shared by every candidate.
            let prefix = score_prefix(&spec.name, slot);
            let best = (0..self.nodes.len())
                .filter(|ni| self.can_run(*ni, si, slot))
                .max_by_key(|ni| {
                    (
                        !holds[si].contains(ni),
                        load[*ni] < cap,
                        prefix.clone().field(self.nodes[*ni].0.as_bytes()).finish(),
                    )
                });
            placed[self.base[si] + slot as usize] = match best {
                Some(ni) => {
                    load[ni] += 1;
                    holds[si].push(ni);
                    Ok(ni)
                }
                None if self.nodes.iter().any(|(_, r)| fits(r, spec)) => {
                    Err(Unplaced::FailedEverywhere)
                }
                None => Err(Unplaced::NoCandidate),
            };
        }
        placed
    }

    /// The node a slot is placed on, given [`Self::place`]'s result.
    pub(crate) fn placed_on(&self, placed: &Placed, si: usize, slot: u32) -> Option<&'a str> {
        let id = self.slot_id(si, slot)?;
        placed[id].ok().map(|ni| self.nodes[ni].0)
    }

    /// The assignment by name, for views and tests.
    pub(crate) fn assign(&self) -> Assignment {
        let mut out = Assignment::default();
        let placed = self.place();
        for (si, (spec, _)) in self.services.iter().enumerate() {
            for slot in 0..spec.replicas {
                let key = (spec.name.clone(), slot);
                match placed[self.base[si] + slot as usize] {
                    Ok(ni) => {
                        out.owners.insert(key, self.nodes[ni].0.to_owned());
                    }
                    Err(why) => {
                        let failed = why == Unplaced::FailedEverywhere;
                        if failed {
                            out.failed.insert(key.clone());
                        }
                        let reason = unplaced_reason(failed, spec, self.failed_on(si, slot));
                        out.unplaced.insert(key, reason);
                    }
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
