//! `reconcile`: what this node must do so that the cluster converges to
//! exactly one running instance per slot. Pure; every agent runs it on
//! every table change, membership change and timer tick, and executes the
//! actions: claims and releases are table writes, starts and stops go to
//! the supervisor.
//!
//! For each slot, this node:
//! - **claims** it when the [placement](crate::placement) assigns it here
//!   and it is unowned (no claim, owner down or left, released, owner no
//!   longer eligible). Concurrent claims (a partition, a race) resolve by
//!   the claim register's order; the loser sees the winner and stops.
//! - **starts** it when it owns it and every dependency runs somewhere
//!   (starting an instance that runs already is a no-op).
//! - **releases** it when it spent its restart budget here (marked
//!   `failed_on`, so the next candidate tries), when the slot is gone
//!   (service removed, scaled down), or when this node is no longer eligible.
//! - **stops** its instance when it doesn't own the slot. A draining node
//!   keeps its instance until the new owner runs one, or
//!   [`DRAIN_TIMEOUT_MS`] passed.

use std::collections::HashSet;

use crate::placement::{Index, Members, node_record};
use crate::record::{InstanceState, STATUS_PREFIX, Status, Value, status_key};
use crate::services_view::missing_dependency;
use crate::spec::ServiceSpec;
use crate::table::Table;

/// Longest a draining node keeps an instance waiting for its replacement.
pub const DRAIN_TIMEOUT_MS: u64 = 30_000;

/// Why a slot is released or an instance stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The restart budget is spent on this node.
    Failed,
    /// The service was removed.
    Removed,
    /// The slot is beyond `replicas`.
    ScaledDown,
    /// This node no longer offers what the service needs.
    Ineligible,
    /// Another node owns the slot (a lost race, or a drain that completed).
    OwnedElsewhere,
    /// Draining and the replacement runs (or the drain timed out).
    Drained,
}

impl Reason {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "restart budget spent",
            Self::Removed => "service removed",
            Self::ScaledDown => "scaled down",
            Self::Ineligible => "node no longer eligible",
            Self::OwnedElsewhere => "owned by another node",
            Self::Drained => "drained",
        }
    }
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `claim/<service>/<slot>` = owner `me`.
    Claim {
        /// Service.
        service: String,
        /// Slot.
        slot: u32,
        /// Service version the failures apply to.
        version: u64,
        /// The owner before, if the claim had one (down, left, ineligible).
        previous: Option<String>,
        /// Failures carried over.
        failed_on: Vec<String>,
    },
    /// Write `claim/<service>/<slot>` = released.
    Release {
        /// Service.
        service: String,
        /// Slot.
        slot: u32,
        /// Service version the failures apply to.
        version: u64,
        /// Failures, this node included when it failed here.
        failed_on: Vec<String>,
        /// Why.
        reason: Reason,
    },
    /// Run the slot here (no-op if it runs already with this spec).
    Start {
        /// Slot.
        slot: u32,
        /// Version of the spec.
        version: u64,
        /// The spec.
        spec: ServiceSpec,
    },
    /// Stop this node's instance of the slot (no-op if none).
    Stop {
        /// Service.
        service: String,
        /// Slot.
        slot: u32,
        /// Why.
        reason: Reason,
    },
    /// Delete this node's stale status record of a slot that is gone.
    ForgetStatus {
        /// The `status/` key.
        key: String,
    },
}

/// This node's status records.
struct MyStatuses<'a> {
    /// Of live slots, by flat slot number.
    live: Vec<Option<&'a Status>>,
    /// Of slots that are gone: (service, slot, key, status), in table order.
    gone: Vec<(&'a str, u32, &'a String, &'a Status)>,
}

fn my_statuses<'a>(table: &'a Table, index: &Index<'a>, me: &str) -> MyStatuses<'a> {
    let prefix = format!("{STATUS_PREFIX}{me}/");
    let mut live = vec![None; index.slot_count()];
    let mut gone = Vec::new();
    for (key, record) in table.with_prefix(&prefix) {
        let Value::Status(status) = &record.value else {
            continue;
        };
        let Some((service, slot)) = parse_slot(&key[prefix.len()..]) else {
            continue;
        };
        match index
            .service_index(service)
            .and_then(|si| index.slot_id(si, slot))
        {
            Some(id) => live[id] = Some(status),
            None => gone.push((service, slot, key, status)),
        }
    }
    MyStatuses { live, gone }
}

fn owner_runs(table: &Table, owner: &str, service: &str, slot: u32) -> bool {
    matches!(table.get(&status_key(owner, service, slot)).map(|r| &r.value),
        Some(Value::Status(s)) if s.state == InstanceState::Running)
}

/// Decides this node's actions. `now_ms` only bounds drains.
pub fn reconcile(table: &Table, members: &Members, me: &str, now_ms: u64) -> Vec<Action> {
    let index = Index::new(table, members);
    let placed = index.place();
    let me_record = node_record(table, me);
    let draining = me_record.is_some_and(|r| r.is_draining());
    let drain_over =
        me_record.is_some_and(|r| now_ms.saturating_sub(r.drain_started_ms) >= DRAIN_TIMEOUT_MS);
    let live = &index.services;
    let mut actions = Vec::new();
    let MyStatuses {
        live: statuses,
        gone: gone_statuses,
    } = my_statuses(table, &index, me);

    for (si, (spec, version)) in live.iter().enumerate() {
        for slot in 0..spec.replicas {
            let name = spec.name.as_str();
            let owner = index.claim(si, slot).and_then(|c| c.owner.as_deref());
            let target = index.placed_on(&placed, si, slot);
            let failed = index.failed_on(si, slot);
            let status = index.slot_id(si, slot).and_then(|id| statuses[id]);
            let active_here = status.is_some_and(|s| s.state.is_active());

            if owner == Some(me) {
                let failed_here = status
                    .is_some_and(|s| s.state == InstanceState::Failed && s.version == *version);
                if failed_here {
                    let mut failed_on = failed.to_vec();
                    failed_on.push(me.to_owned());
                    actions.push(Action::Release {
                        service: name.to_owned(),
                        slot,
                        version: *version,
                        failed_on,
                        reason: Reason::Failed,
                    });
                    actions.push(Action::Stop {
                        service: name.to_owned(),
                        slot,
                        reason: Reason::Failed,
                    });
                } else if target == Some(me) {
                    if missing_dependency(table, members, spec).is_none() {
                        actions.push(Action::Start {
                            slot,
                            version: *version,
                            spec: (*spec).clone(),
                        });
                    }
                } else if !draining {
                    actions.push(Action::Release {
                        service: name.to_owned(),
                        slot,
                        version: *version,
                        failed_on: failed.to_vec(),
                        reason: Reason::Ineligible,
                    });
                    actions.push(Action::Stop {
                        service: name.to_owned(),
                        slot,
                        reason: Reason::Ineligible,
                    });
                } else if drain_over {
                    actions.push(Action::Stop {
                        service: name.to_owned(),
                        slot,
                        reason: Reason::Drained,
                    });
                }
                continue;
            }
            if target == Some(me) {
                actions.push(Action::Claim {
                    service: name.to_owned(),
                    slot,
                    version: *version,
                    previous: owner.map(str::to_owned),
                    failed_on: failed.to_vec(),
                });
                continue;
            }
            if active_here {
                let replacement_runs = owner.is_some_and(|o| owner_runs(table, o, name, slot));
                let keep = draining && !replacement_runs && !drain_over;
                if !keep {
                    let reason = if draining {
                        Reason::Drained
                    } else {
                        Reason::OwnedElsewhere
                    };
                    actions.push(Action::Stop {
                        service: name.to_owned(),
                        slot,
                        reason,
                    });
                }
            }
        }
    }

    // Slots that are gone: this node's claims and instances of them.
    let removed_reason = |service: &str| {
        if index.service_index(service).is_some() {
            Reason::ScaledDown
        } else {
            Reason::Removed
        }
    };
    let mut released: HashSet<(&str, u32)> = HashSet::new();
    for (service, slot, c) in &index.orphan_claims {
        if c.owner.as_deref() != Some(me) {
            continue;
        }
        let reason = removed_reason(service);
        actions.push(Action::Release {
            service: (*service).to_owned(),
            slot: *slot,
            version: c.version,
            failed_on: Vec::new(),
            reason,
        });
        actions.push(Action::Stop {
            service: (*service).to_owned(),
            slot: *slot,
            reason,
        });
        released.insert((service, *slot));
    }
    let mut stale: Vec<_> = gone_statuses
        .into_iter()
        .filter(|(service, slot, _, _)| !released.contains(&(*service, *slot)))
        .collect();
    stale.sort_by_key(|(service, slot, _, _)| (*service, *slot));
    for (service, slot, key, s) in stale {
        if s.state.is_active() {
            actions.push(Action::Stop {
                service: service.to_owned(),
                slot,
                reason: removed_reason(service),
            });
        } else {
            actions.push(Action::ForgetStatus { key: key.clone() });
        }
    }
    actions
}

/// `<service>/<slot>`.
fn parse_slot(rest: &str) -> Option<(&str, u32)> {
    let (service, slot) = rest.rsplit_once('/')?;
    Some((service, slot.parse().ok()?))
}
