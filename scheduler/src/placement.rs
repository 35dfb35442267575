//! Where each slot should run: rendezvous hashing with bounded loads, over
//! the live, eligible, non-draining members.
//!
//! - Score: [`score`] = `mix(slot_hash ^ node_hash)`, where `slot_hash` is
//!   `mix` of FNV-1a 64 over the length-prefixed service name and the slot
//!   (u32 LE), `node_hash` is `mix` of FNV-1a 64 over the length-prefixed
//!   node name, and `mix` is MurmurHash3's finalizer ([`crate::hash`]).
//!   Fixed across platforms and versions. The highest score wins. The
//!   node's half is hashed once per pass, so scoring a candidate costs one
//!   `mix`.
//! - Eligible: the node's `node/` record offers the service's provider,
//!   carries every tag of `constraints.tags`, is not draining, and the slot
//!   has not failed there (for this version of the service).
//! - Sticky: a slot whose owner is live and eligible stays with it.
//! - Load: the claims a node holds in the table. The cap is
//!   `ceil(1.25 × live slots / candidates)`.
//! - An unowned slot goes to the best candidate by: holds no other slot of
//!   the same service (claimed, or placed before it in slot order), then
//!   is under the cap, then is under the floor (half the mean load, so
//!   that no node is left with nothing by the luck of the scores), then
//!   score.
//!
//! Each service is placed on its own, from the loads in the table: every
//! node that sees the same table and members computes the same targets,
//! which is what makes it leaderless, and a pass costs only the unowned
//! slots it looks at. A node claims its targets in slot order only while
//! its own load, with what it claimed in this pass, stays under the cap;
//! a target it declines goes to the next candidate once its claims are
//! seen (reconcile decides the slots waiting on a node again when its
//! claims arrive).

use std::collections::{BTreeMap, BTreeSet};

use crate::hash::{StableHasher, mix};
use crate::quorum::Quorum;
use crate::record::{Claim, NodeRecord};
use crate::spec::ServiceSpec;
use crate::table::Table;

/// Load cap factor of bounded-load hashing.
pub const LOAD_FACTOR: f64 = 1.25;

/// The members a node believes live (alive or suspect), by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    live: BTreeSet<String>,
    /// Members membership lists as down or left. A name in neither set
    /// was never heard of: a node that joined a moment ago, whose claims
    /// can reach this node before membership does.
    gone: BTreeSet<String>,
    quorum: Quorum,
}

impl Members {
    /// From the names of the live members (this node included), with a
    /// majority in sight.
    pub fn new(live: impl IntoIterator<Item = String>) -> Self {
        Self {
            live: live.into_iter().collect(),
            gone: BTreeSet::new(),
            quorum: Quorum::default(),
        }
    }

    /// With the names membership lists as down or left.
    pub fn with_gone(mut self, gone: impl IntoIterator<Item = String>) -> Self {
        self.gone = gone.into_iter().collect();
        self
    }

    /// Whether membership ever told of `node` (live, down or left).
    pub fn heard_of(&self, node: &str) -> bool {
        self.live.contains(node) || self.gone.contains(node)
    }

    /// What this node knows of the majority (for at-most-once slots).
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    /// Sets what this node knows of the majority.
    pub fn set_quorum(&mut self, quorum: Quorum) {
        self.quorum = quorum;
    }

    /// Whether `node` is live.
    pub fn is_live(&self, node: &str) -> bool {
        self.live.contains(node)
    }

    /// How many members are live.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no member is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Live member names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.live.iter().map(String::as_str)
    }
}

/// Rendezvous score of `node` for a slot.
pub fn score(service: &str, slot: u32, node: &str) -> u64 {
    mix(slot_hash(service, slot) ^ node_hash(node))
}

/// The slot's half of the score.
fn slot_hash(service: &str, slot: u32) -> u64 {
    mix(StableHasher::default()
        .field(service.as_bytes())
        .field(&slot.to_le_bytes())
        .finish())
}

/// The node's half of the score.
fn node_hash(node: &str) -> u64 {
    mix(StableHasher::default().field(node.as_bytes()).finish())
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

/// The table read once for a pass over every slot: live services and
/// their claims, laid out by position, so that deciding a slot searches
/// nothing.
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
}

/// Why a slot has no node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unplaced {
    /// No live, non-draining node offers what the service needs.
    NoCandidate,
    /// It failed on every node able to run it.
    FailedEverywhere,
}

/// Where a slot goes: the node, or why none.
pub(crate) type Target<'a> = Result<&'a str, Unplaced>;

/// What placement reads of one slot: its owner and where it failed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotClaim<'a> {
    pub(crate) owner: Option<&'a str>,
    pub(crate) failed: &'a [String],
}

/// A live member that may take slots.
struct Candidate<'a> {
    name: &'a str,
    record: &'a NodeRecord,
    /// [`node_hash`] of the name.
    hash: u64,
    load: usize,
}

/// The live, non-draining members with a node record, read once per
/// pass: names, hashes, loads, and the cap.
pub(crate) struct Candidates<'a> {
    /// By name.
    nodes: Vec<Candidate<'a>>,
    cap: usize,
    /// Half the mean load: a candidate under it ranks first.
    floor: usize,
    /// The mean load, rounded up.
    mean_ceil: usize,
    /// The candidates that fit each kind of service seen in this pass.
    shapes: Vec<(&'a ServiceSpec, Vec<usize>)>,
}

impl<'a> Candidates<'a> {
    pub(crate) fn new(table: &'a Table, members: &'a Members) -> Self {
        let nodes: Vec<Candidate<'a>> = members
            .names()
            .filter_map(|name| {
                let record = table.node(name).filter(|r| !r.is_draining())?;
                Some(Candidate {
                    name,
                    record,
                    hash: node_hash(name),
                    load: table.load(name),
                })
            })
            .collect();
        let mean = table.live_slots() as f64 / nodes.len().max(1) as f64;
        Self {
            nodes,
            cap: (mean * LOAD_FACTOR).ceil() as usize,
            floor: (mean / 2.0) as usize,
            mean_ceil: mean.ceil() as usize,
            shapes: Vec::new(),
        }
    }

    /// The load cap.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Half the mean load, rounded down.
    pub(crate) fn floor(&self) -> usize {
        self.floor
    }

    /// The mean load, rounded up.
    pub(crate) fn mean_ceil(&self) -> usize {
        self.mean_ceil
    }

    /// The least load of any candidate.
    pub(crate) fn least_load(&self) -> usize {
        self.nodes.iter().map(|c| c.load).min().unwrap_or(0)
    }

    /// The load of candidate `node` (none if it is not a candidate).
    pub(crate) fn load_of(&self, node: &str) -> Option<usize> {
        self.position(node).map(|i| self.nodes[i].load)
    }

    /// Where slot `slot` of `spec` moves from `from` to even out the load:
    /// the least-loaded candidate with a load under `below` (the cap, or
    /// the floor), by score among equals, other than `from`, holding no
    /// other slot of the service (`holders`), and where it didn't fail.
    pub(crate) fn move_target(
        &mut self,
        spec: &'a ServiceSpec,
        slot: u32,
        from: &str,
        failed: &[String],
        holders: &[&str],
        below: usize,
    ) -> Option<&'a str> {
        let shape = self.fitting(spec);
        let prefix = slot_hash(&spec.name, slot);
        let cap = below.min(self.cap);
        self.shapes[shape]
            .1
            .iter()
            .map(|i| &self.nodes[*i])
            .filter(|c| {
                c.load < cap
                    && c.name != from
                    && !holders.contains(&c.name)
                    && !failed.iter().any(|f| f == c.name)
            })
            .max_by_key(|c| (std::cmp::Reverse(c.load), mix(prefix ^ c.hash)))
            .map(|c| c.name)
    }

    /// `node` claimed a slot in this pass: it counts toward its load.
    pub(crate) fn claimed(&mut self, node: &str) {
        if let Some(i) = self.position(node) {
            self.nodes[i].load += 1;
        }
    }

    fn position(&self, node: &str) -> Option<usize> {
        self.nodes.binary_search_by(|c| c.name.cmp(node)).ok()
    }

    /// The candidate `owner`, if it keeps a slot of `spec` that failed on
    /// `failed`.
    fn keeps(&self, spec: &ServiceSpec, owner: &str, failed: &[String]) -> Option<usize> {
        self.position(owner)
            .filter(|i| fits(self.nodes[*i].record, spec) && !failed.iter().any(|f| f == owner))
    }

    /// Where in `shapes` the candidates that fit `spec` are. Services that
    /// need the same provider and tags (most of them) share one list per
    /// pass.
    fn fitting(&mut self, spec: &'a ServiceSpec) -> usize {
        let same = |other: &ServiceSpec| {
            other.params.provider() == spec.params.provider()
                && other.constraints.tags == spec.constraints.tags
        };
        match self.shapes.iter().position(|(s, _)| same(s)) {
            Some(at) => at,
            None => {
                let fitting = (0..self.nodes.len())
                    .filter(|i| fits(self.nodes[*i].record, spec))
                    .collect();
                self.shapes.push((spec, fitting));
                self.shapes.len() - 1
            }
        }
    }

    /// Where each slot of `spec` goes, given each slot's claim (in slot
    /// order): to its owner if it keeps it, else to the best candidate.
    pub(crate) fn place(
        &mut self,
        spec: &'a ServiceSpec,
        slots: &[SlotClaim<'a>],
    ) -> Vec<Target<'a>> {
        let kept: Vec<Option<usize>> = slots
            .iter()
            .map(|c| c.owner.and_then(|o| self.keeps(spec, o, c.failed)))
            .collect();
        let mut holds: Vec<usize> = kept.iter().flatten().copied().collect();
        let cap = self.cap;
        let mut out = Vec::with_capacity(slots.len());
        for (slot, (claim, kept)) in slots.iter().zip(kept).enumerate() {
            if let Some(i) = kept {
                out.push(Ok(self.nodes[i].name));
                continue;
            }
            let prefix = slot_hash(&spec.name, slot as u32);
            let shape = self.fitting(spec);
            let fitting = &self.shapes[shape].1;
            // The best by (under the cap, holds no slot of the service,
            // under the floor, score): the loop every unowned slot runs
            // over every node. The cap comes first: a node at the cap
            // declines what it is given (see reconcile), so it must be
            // given a slot only when every candidate is at the cap.
            let floor = self.floor;
            let mut best: Option<(u8, u64, usize)> = None;
            for &i in fitting {
                let c = &self.nodes[i];
                if !claim.failed.is_empty() && claim.failed.iter().any(|f| f == c.name) {
                    continue;
                }
                let tier = (u8::from(c.load < cap) << 2)
                    | (u8::from(!holds.contains(&i)) << 1)
                    | u8::from(c.load < floor);
                let score = mix(prefix ^ c.hash);
                if best.is_none_or(|(t, s, _)| (tier, score) > (t, s)) {
                    best = Some((tier, score, i));
                }
            }
            let empty = fitting.is_empty();
            out.push(match best {
                Some((_, _, i)) => {
                    holds.push(i);
                    Ok(self.nodes[i].name)
                }
                None if empty => Err(Unplaced::NoCandidate),
                None => Err(Unplaced::FailedEverywhere),
            });
        }
        out
    }
}

impl<'a> Index<'a> {
    pub(crate) fn new(table: &'a Table) -> Self {
        let services: Vec<(&ServiceSpec, u64)> = table
            .services()
            .filter_map(|(_, _, s)| {
                s.spec
                    .as_ref()
                    .filter(|spec| !spec.stopped)
                    .map(|spec| (spec, s.version))
            })
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

    /// What placement reads of service `si`'s slots.
    pub(crate) fn slot_claims(&self, si: usize) -> Vec<SlotClaim<'a>> {
        (0..self.services[si].0.replicas)
            .map(|slot| SlotClaim {
                owner: self.claim(si, slot).and_then(|c| c.owner.as_deref()),
                failed: self.failed_on(si, slot),
            })
            .collect()
    }

    /// The assignment by name, for views and tests.
    pub(crate) fn assign(&self, mut candidates: Candidates<'a>) -> Assignment {
        let mut out = Assignment::default();
        for (si, (spec, _)) in self.services.iter().enumerate() {
            let targets = candidates.place(spec, &self.slot_claims(si));
            for (slot, target) in (0..spec.replicas).zip(targets) {
                let key = (spec.name.clone(), slot);
                match target {
                    Ok(node) => {
                        out.owners.insert(key, node.to_owned());
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
    Index::new(table).assign(Candidates::new(table, members))
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

    const PINNED: u64 = 3_473_388_434_058_836_326;
}
