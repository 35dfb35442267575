//! Which slots a change touched, so that a reconcile pass decides only
//! those.
//!
//! - a `svc/` record: every slot of that service (live or gone);
//! - a `claim/` record, or this node's `status/` record: that slot, and
//!   every slot of the services that depend on that service (it may run,
//!   or not, now);
//! - another node's `status/` record: the slots of the dependents, and
//!   the slot itself only if this node has an instance of it (a drain
//!   waits for the replacement to run) or owns it (an at-most-once slot
//!   waits for the old instance to stop); else nothing this node decides
//!   reads it.
//!   During a rolling update, the slots of that service whose instance
//!   here is behind too (they wait for the others).
//! - the quorum (majority in sight, caught up): every slot of the
//!   at-most-once services, the only ones that read it;
//! - a `node/` record, a membership change, the gate opening: everything;
//! - claims of a node: the unowned slots placement left to it, which it
//!   may have declined (at its cap).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::key::{Key, Name};
use crate::reconcile::Waiting;
use crate::table::Table;

/// Slots touched since the last pass. Pushed as they come (a merge
/// touches thousands), sorted and deduplicated once, when taken.
#[derive(Debug, Clone, Default)]
pub(crate) struct Touched {
    all: bool,
    slots: Vec<(Name, u32)>,
    /// Slots another node's status changed for.
    others: Vec<(Name, u32)>,
    services: Vec<Name>,
    /// Services whose slots' owners or states changed: their dependents
    /// are touched too.
    depended_on: Vec<Name>,
    /// Who depends on what, kept until a service record changes (statuses
    /// change at every pass; the specs rarely).
    dependents: Option<HashMap<String, Vec<String>>>,
    /// Unowned slots the last passes left to another node, by that node.
    waiting: BTreeMap<String, BTreeSet<(Name, u32)>>,
}

impl Touched {
    /// Notes a changed key; `me` is this node.
    pub(crate) fn key(&mut self, key: &Key, me: &str) {
        if matches!(key, Key::Service(_)) {
            self.dependents = None;
        }
        if self.all {
            return;
        }
        match key {
            Key::Service(name) => self.services.push(name.clone()),
            Key::Claim(name, slot) | Key::Status(_, name, slot) => {
                match key {
                    Key::Status(node, ..) if &**node != me => {
                        self.others.push((name.clone(), *slot));
                    }
                    _ => self.slots.push((name.clone(), *slot)),
                }
                if self.depended_on.last() != Some(name) {
                    self.depended_on.push(name.clone());
                }
            }
            Key::Node(_) => self.everything(),
            // (An update's revert reads it, when a slot's status changes.)
            Key::ClusterKey(_) | Key::History(_) => {}
        }
    }

    /// `node`'s claims arrived: the slots waiting on it need deciding again.
    pub(crate) fn claims_of(&mut self, node: &str) {
        if let Some(slots) = self.waiting.remove(node)
            && !self.all
        {
            self.slots.extend(slots);
        }
    }

    /// A pass left a slot to another node.
    pub(crate) fn wait(&mut self, waiting: Waiting) {
        self.waiting
            .entry(waiting.on)
            .or_default()
            .insert((waiting.service, waiting.slot));
    }

    /// The quorum changed: every slot of the at-most-once services (no
    /// other slot reads it) needs deciding again. Returns whether there
    /// is such a service.
    pub(crate) fn at_most_once(&mut self, table: &Table) -> bool {
        let mut any = false;
        for (name, _, record) in table.services() {
            if record
                .spec
                .as_ref()
                .is_some_and(|spec| spec.partition == crate::spec::Partition::AtMostOnce)
            {
                any = true;
                if !self.all {
                    self.services.push(name.into());
                }
            }
        }
        any
    }

    /// Everything needs deciding again.
    pub(crate) fn everything(&mut self) {
        self.all = true;
        self.slots.clear();
        self.others.clear();
        self.services.clear();
        self.depended_on.clear();
    }

    /// Whether anything was touched.
    pub(crate) fn is_empty(&self) -> bool {
        !self.all && self.slots.is_empty() && self.others.is_empty() && self.services.is_empty()
    }

    /// The slots to decide, and clears; `None` means every slot. `me`'s
    /// statuses name slots of services that may be gone.
    pub(crate) fn take(&mut self, table: &Table, me: &str) -> Option<Vec<(Name, u32)>> {
        let touched = std::mem::take(self);
        self.dependents = touched.dependents;
        if touched.all {
            // A full pass notes every waiting slot again.
            return None;
        }
        self.waiting = touched.waiting;
        let mut services: BTreeSet<Name> = touched.services.into_iter().collect();
        let dependents = self.dependents.get_or_insert_with(|| dependents_of(table));
        if !touched.depended_on.is_empty() && !dependents.is_empty() {
            let depended_on: BTreeSet<&str> = touched.depended_on.iter().map(|n| &**n).collect();
            for (dependent, dependencies) in dependents.iter() {
                if dependencies
                    .iter()
                    .any(|d| depended_on.contains(d.as_str()))
                {
                    services.insert(dependent.as_str().into());
                }
            }
        }
        let mut slots = touched.slots;
        // (Each delta of another node's status pushed its slot: most are
        // repeats, and each costs two searches below.)
        let mut others = touched.others;
        others.sort_unstable();
        others.dedup();
        // A rolling update: this node's instances behind the service's
        // instance version wait for the other slots' statuses.
        let mut services_touched: Vec<&Name> = others
            .iter()
            .chain(&slots)
            .map(|(service, _)| service)
            .collect();
        services_touched.sort_unstable();
        services_touched.dedup();
        let updating: Vec<Name> = services_touched
            .into_iter()
            .filter(|service| behind(table, me, service))
            .cloned()
            .collect();
        for service in updating {
            slots.extend(
                table
                    .status_slots(me, &service)
                    .map(|k| (service.clone(), k)),
            );
        }
        slots.extend(others.into_iter().filter(|(service, slot)| {
            table.status(me, service, *slot).is_some()
                || table
                    .claim(service, *slot)
                    .is_some_and(|c| c.owner.as_deref() == Some(me))
        }));
        for service in &services {
            match table.live_service(service) {
                Some((spec, _)) if spec.every_node => {
                    slots.push((service.clone(), crate::spec::EVERY_NODE_SLOT));
                }
                Some((spec, _)) => {
                    slots.extend((0..spec.live_replicas()).map(|k| (service.clone(), k)));
                }
                None => {}
            }
            slots.extend(table.claims_of(service).map(|(k, _)| (service.clone(), k)));
            slots.extend(
                table
                    .status_slots(me, service)
                    .map(|k| (service.clone(), k)),
            );
        }
        slots.sort_unstable();
        slots.dedup();
        Some(slots)
    }
}

/// Whether one of `me`'s instances of `service` runs an instance spec
/// older than the service's.
fn behind(table: &Table, me: &str, service: &str) -> bool {
    let Some(since) = table.service(service).map(|r| r.instance_since) else {
        return false;
    };
    table.status_slots(me, service).any(|k| {
        table
            .status(me, service, k)
            .is_some_and(|s| s.version < since)
    })
}

/// Services with dependencies, and what they depend on.
fn dependents_of(table: &Table) -> HashMap<String, Vec<String>> {
    table
        .services()
        .filter_map(|(name, _, s)| {
            let spec = s.spec.as_ref()?;
            (!spec.depends_on.is_empty()).then(|| (name.to_owned(), spec.depends_on.clone()))
        })
        .collect()
}
