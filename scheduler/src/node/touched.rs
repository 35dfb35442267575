//! Which slots a change touched, so that a reconcile pass decides only
//! those.
//!
//! - a `svc/` record: every slot of that service (live or gone);
//! - a `claim/` or `status/` record: that slot, and every slot of the
//!   services that depend on that service (it may run, or not, now);
//! - a `node/` record, a membership change, the gate opening: everything.

use std::collections::{BTreeSet, HashMap};

use crate::key::{Key, Name};
use crate::table::Table;

/// Slots touched since the last pass. Pushed as they come (a merge
/// touches thousands), sorted and deduplicated once, when taken.
#[derive(Debug, Clone, Default)]
pub(crate) struct Touched {
    all: bool,
    slots: Vec<(Name, u32)>,
    services: Vec<Name>,
    /// Services whose slots' owners or states changed: their dependents
    /// are touched too.
    depended_on: Vec<Name>,
    /// Who depends on what, kept until a service record changes (statuses
    /// change at every pass; the specs rarely).
    dependents: Option<HashMap<String, Vec<String>>>,
}

impl Touched {
    /// Notes a changed key.
    pub(crate) fn key(&mut self, key: &Key) {
        if matches!(key, Key::Service(_)) {
            self.dependents = None;
        }
        if self.all {
            return;
        }
        match key {
            Key::Service(name) => self.services.push(name.clone()),
            Key::Claim(name, slot) | Key::Status(_, name, slot) => {
                self.slots.push((name.clone(), *slot));
                if self.depended_on.last() != Some(name) {
                    self.depended_on.push(name.clone());
                }
            }
            Key::Node(_) => self.everything(),
        }
    }

    /// Everything needs deciding again.
    pub(crate) fn everything(&mut self) {
        self.all = true;
        self.slots.clear();
        self.services.clear();
        self.depended_on.clear();
    }

    /// Whether anything was touched.
    pub(crate) fn is_empty(&self) -> bool {
        !self.all && self.slots.is_empty() && self.services.is_empty()
    }

    /// The slots to decide, and clears; `None` means every slot. `me`'s
    /// statuses name slots of services that may be gone.
    pub(crate) fn take(&mut self, table: &Table, me: &str) -> Option<BTreeSet<(Name, u32)>> {
        let touched = std::mem::take(self);
        self.dependents = touched.dependents;
        if touched.all {
            return None;
        }
        let mut services: BTreeSet<Name> = touched.services.into_iter().collect();
        if !touched.depended_on.is_empty() {
            let depended_on: BTreeSet<&str> = touched.depended_on.iter().map(|n| &**n).collect();
            let dependents = self.dependents.get_or_insert_with(|| dependents_of(table));
            for (dependent, dependencies) in dependents.iter() {
                if dependencies
                    .iter()
                    .any(|d| depended_on.contains(d.as_str()))
                {
                    services.insert(dependent.as_str().into());
                }
            }
        }
        let mut slots: BTreeSet<(Name, u32)> = touched.slots.into_iter().collect();
        for service in &services {
            let replicas = table.live_service(service).map_or(0, |(s, _)| s.replicas);
            slots.extend((0..replicas).map(|k| (service.clone(), k)));
            slots.extend(table.claims_of(service).map(|(k, _)| (service.clone(), k)));
            slots.extend(
                table
                    .status_slots(me, service)
                    .map(|k| (service.clone(), k)),
            );
        }
        Some(slots)
    }
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
