//! Rebalancing: when nodes join (or a drain is undone), claims are sticky,
//! so nothing would move to them. A node over the load cap computed with
//! the current members hands one of its running slots to the least-loaded
//! candidate under the cap (by score among equals), at most once every
//! `rebalance_interval_ms`; a node over the mean load hands one to the
//! least-loaded candidate under the floor (half the mean), so that joined
//! nodes get a share, not only the excess over the cap. The handover is drain-style: the claim names
//! the new owner, which starts it; this node keeps its instance until the
//! new owner reports it running (or `DRAIN_TIMEOUT_MS` passed), so the
//! slot always runs somewhere.
//!
//! - A service with `rebalance = false` stays where it is, and so does an
//!   at-most-once one (its handover would stop it before the new owner
//!   starts).
//! - Only a slot running here moves (a move of a starting one would gain
//!   nothing and could leave it running nowhere).
//! - No oscillation: the new owner is under the cap, so the move doesn't
//!   put it over; a node moves slots only while it is over. Likewise a
//!   node over the mean gives only to one under the floor: the giver
//!   stays at the mean or above, the taker at the floor or below, so
//!   neither ever moves a slot back.

use crate::placement::{Candidates, Members};
use crate::record::InstanceState;
use crate::table::Table;

/// A slot to hand over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handover {
    pub(crate) service: String,
    pub(crate) slot: u32,
    /// The new owner.
    pub(crate) to: String,
    /// The service version the claim's failures apply to.
    pub(crate) version: u64,
    pub(crate) failed_on: Vec<String>,
}

/// The slot `me` should hand over now, if it is over the cap.
pub(crate) fn pick(table: &Table, members: &Members, me: &str) -> Option<Handover> {
    // The mean is at least this (candidates are at most the members): most
    // calls end here, without reading the candidates.
    let least_mean = table.live_slots() as f64 / members.len().max(1) as f64;
    if table.load(me) as f64 <= least_mean.ceil() {
        return None;
    }
    let mut candidates = Candidates::new(table, members);
    let load = candidates.load_of(me)?;
    // Over the cap: to anyone under it. Over the mean: to one under the
    // floor, if there is one.
    let below = if load > candidates.cap() {
        candidates.cap()
    } else if load > candidates.mean_ceil() && candidates.least_load() < candidates.floor() {
        candidates.floor()
    } else {
        return None;
    };

    for (service, slot, claim) in table.claims() {
        if claim.owner.as_deref() != Some(me) {
            continue;
        }
        let Some((spec, version)) = table.live_service(service) else {
            continue;
        };
        let runs_here = table
            .status(me, service, slot)
            .is_some_and(|s| s.state == InstanceState::Running && s.version == version);
        if !spec.moves_to_rebalance() || slot >= spec.replicas || !runs_here {
            continue;
        }
        let holders: Vec<&str> = table
            .claims_of(service)
            .filter(|(k, _)| *k != slot)
            .filter_map(|(_, c)| c.owner.as_deref())
            .collect();
        let failed: &[String] = if claim.version == version {
            &claim.failed_on
        } else {
            &[]
        };
        if let Some(to) = candidates.move_target(spec, slot, me, failed, &holders, below) {
            return Some(Handover {
                service: service.to_owned(),
                slot,
                to: to.to_owned(),
                version,
                failed_on: failed.to_vec(),
            });
        }
    }
    None
}
