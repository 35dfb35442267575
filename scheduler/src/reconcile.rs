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
//!   (starting an instance that runs already is a no-op); replacing a
//!   running instance of an older instance spec waits for its turn of the
//!   rolling update ([`crate::update`]), and an instance that fails the
//!   update is reported ([`Action::UpdateFailed`]).
//! - **releases** it when it spent its restart budget here (marked
//!   `failed_on`, so the next candidate tries), when the slot is gone
//!   (service removed, scaled down, stopped), or when this node is no
//!   longer eligible.
//! - **stops** its instance when it doesn't own the slot. A draining node
//!   keeps its instance until the new owner runs one, or
//!   [`DRAIN_TIMEOUT_MS`] passed.
//!
//! An every-node service has no claims: each eligible node runs its own
//! slot ([`EVERY_NODE_SLOT`]) and stops it when no longer eligible. An
//! at-most-once service's slots follow [`crate::quorum`] besides.
//!
//! A pass covers every slot ([`Scope::All`]) or only the slots a change
//! touched ([`Scope::Slots`]): the decision for one slot reads that slot's
//! claim and statuses, its service's dependencies, and, only when the slot
//! is unowned, the whole placement. Both scopes decide a slot by the same
//! rule (one function), so a node may reconcile only what changed and
//! keep a periodic full pass as a safety net.

use std::collections::{HashMap, HashSet};

use crate::key::{Key, KeyRef, Name};
use crate::placement::{Candidates, Index, Members, SlotClaim, fits};
use crate::record::{Claim, InstanceState, NodeRecord, Status};
use crate::services_view::missing_dependency;
use crate::spec::{EVERY_NODE_SLOT, Partition, ServiceSpec};
use crate::table::Table;
use crate::update;

/// Longest a draining node keeps an instance waiting for its replacement.
pub const DRAIN_TIMEOUT_MS: u64 = 30_000;

/// How long a claim naming a node membership never told of is left
/// alone: the claim of a node that just joined (a handover to it, say)
/// can arrive before membership tells of the node, and taking the slot
/// over then would stop its instance for nothing. Past this, the owner
/// counts as lost (a node that died while this one was away).
pub const UNHEARD_OWNER_GRACE_MS: u64 = 10_000;

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
    /// Handed over to even out the load, and the new owner's instance
    /// runs (or the handover timed out).
    HandedOver,
    /// At-most-once, and this node no longer sees a majority.
    NoMajority,
    /// An operator stopped the service (`mob-agent stop`).
    Stopped,
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
            Self::HandedOver => "handed over",
            Self::NoMajority => "no majority in sight (at-most-once)",
            Self::Stopped => "service stopped",
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
        /// Service (its spec is the table's live one).
        service: String,
        /// Slot.
        slot: u32,
        /// Version of the spec.
        version: u64,
        /// It replaces a running instance of an older instance spec: a
        /// step of a rolling update.
        update: bool,
    },
    /// This node's instance of a slot failed the update to instance
    /// version `since` (see [`crate::update`]).
    UpdateFailed {
        /// Service.
        service: String,
        /// Slot.
        slot: u32,
        /// The instance version that failed.
        since: u64,
        /// Why.
        why: String,
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
        key: Key,
    },
}

/// Which slots a pass decides.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every slot: live ones, and the gone ones this node still holds.
    All,
    /// The slots a change touched (`(service, slot)`, live or gone), in
    /// order.
    Slots(&'a [(Name, u32)]),
}

/// What one live slot's decision reads.
struct Slot<'a> {
    spec: &'a ServiceSpec,
    version: u64,
    /// The service's instance version.
    since: u64,
    slot: u32,
    owner: Option<&'a str>,
    /// Where placement puts it.
    target: Option<&'a str>,
    /// Its owner doesn't keep it (none, down, ineligible, failed there).
    open: bool,
    /// Nodes it failed on, for this version.
    failed: &'a [String],
    /// This node's status of it.
    status: Option<&'a Status>,
}

/// This node's drain, as reconcile sees it.
#[derive(Clone, Copy)]
struct Drain {
    /// Draining or leaving.
    on: bool,
    /// For longer than [`DRAIN_TIMEOUT_MS`].
    over: bool,
    /// The pass's time.
    now_ms: u64,
}

fn drain_of(table: &Table, me: &str, now_ms: u64) -> Drain {
    let record = table.node(me);
    Drain {
        on: record.is_some_and(|r| r.is_draining()),
        over: record.is_some_and(|r| now_ms.saturating_sub(r.drain_started_ms) >= DRAIN_TIMEOUT_MS),
        now_ms,
    }
}

fn owner_runs(table: &Table, owner: &str, service: &str, slot: u32) -> bool {
    table
        .status(owner, service, slot)
        .is_some_and(|s| s.state == InstanceState::Running)
}

/// Decides this node's actions over every slot. `now_ms` only bounds
/// drains.
pub fn reconcile(table: &Table, members: &Members, me: &str, now_ms: u64) -> Vec<Action> {
    reconcile_scope(table, members, me, now_ms, Scope::All).actions
}

/// What a pass decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// What to do, in slot order.
    pub actions: Vec<Action>,
    /// Unowned slots this node could run that placement gives to another
    /// node: decide them again when that node's claims arrive (it may be
    /// at its cap and leave them).
    pub waiting: Vec<Waiting>,
    /// When an at-most-once slot this node holds may start, the earliest
    /// if several wait: decide every slot again then.
    pub retry_at: Option<u64>,
    /// At-most-once slots this node holds whose claims have not settled:
    /// they wait for rounds with the live members.
    pub unsettled: Vec<Unsettled>,
}

/// An at-most-once slot waiting for its claim to settle
/// ([`crate::quorum::Quorum::settled`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsettled {
    /// Service.
    pub service: Name,
    /// Slot.
    pub slot: u32,
    /// When the claim was written: rounds begun later settle it.
    pub claimed: crate::quorum::Reading,
}

/// An unowned slot waiting for the node placement gives it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The node expected to claim it.
    pub on: String,
    /// Service.
    pub service: Name,
    /// Slot.
    pub slot: u32,
}

/// Decides this node's actions over the slots of `scope`.
pub fn reconcile_scope(
    table: &Table,
    members: &Members,
    me: &str,
    now_ms: u64,
    scope: Scope<'_>,
) -> Pass {
    let mut pass = Pass::default();
    let mut run = Run {
        table,
        members,
        me,
        drain: drain_of(table, me, now_ms),
        candidates: None,
        here: table.node(me),
        owners: HashMap::new(),
    };
    match scope {
        Scope::All => run.all(&mut pass),
        Scope::Slots(slots) => {
            let mut group = Group::default();
            for (service, slot) in slots {
                if group.service.as_ref() != Some(service) {
                    group = Group::new(table, run.here, service.clone());
                }
                run.one(&mut group, *slot, &mut pass);
            }
        }
    }
    pass
}

/// One pass: what every decision reads.
struct Run<'a> {
    table: &'a Table,
    members: &'a Members,
    me: &'a str,
    drain: Drain,
    /// Read at the first unowned slot this node could run.
    candidates: Option<Candidates<'a>>,
    /// This node's record.
    here: Option<&'a NodeRecord>,
    /// Owners seen: their node record if they are live.
    owners: HashMap<&'a str, Option<&'a NodeRecord>>,
}

impl<'a> Run<'a> {
    fn candidates(&mut self) -> &mut Candidates<'a> {
        let (table, members) = (self.table, self.members);
        self.candidates
            .get_or_insert_with(|| Candidates::new(table, members))
    }

    /// Decides `one`, and notes a claim of this node toward its load and a
    /// slot left to another node as waiting.
    fn decide(&mut self, one: &Slot<'_>, service: impl FnOnce() -> Name, pass: &mut Pass) {
        // Placement gives a slot to a node at the cap only when every
        // candidate looks at it (stale claims, or this pass's count of the
        // others' targets): this node claims nothing over the cap, and a
        // later pass, with the claims seen, places it.
        let me = self.me;
        let at_cap = one.open
            && one.target == Some(me)
            && self
                .candidates
                .as_ref()
                .is_some_and(|c| c.load_of(me).is_some_and(|load| load >= c.cap()));
        if at_cap {
            return;
        }
        // Hold a slot whose owner membership has not told of yet.
        if one
            .owner
            .is_some_and(|o| o != me && !self.members.heard_of(o))
        {
            let claimed = self
                .table
                .get_ref(KeyRef::Claim(&one.spec.name, one.slot))
                .map_or(0, |r| r.ts.wall_ms);
            let until = claimed.saturating_add(UNHEARD_OWNER_GRACE_MS);
            if until > self.drain.now_ms {
                pass.retry_at = Some(pass.retry_at.map_or(until, |r| r.min(until)));
                return;
            }
        }
        let before = pass.actions.len();
        decide(self.table, self.members, self.me, self.drain, one, pass);
        let claimed = pass.actions[before..]
            .iter()
            .any(|a| matches!(a, Action::Claim { .. }));
        if claimed {
            self.candidates().claimed(me);
        } else if let Some(target) = one.target.filter(|t| one.open && *t != self.me) {
            // The target will claim it: count it toward its load for the
            // rest of this pass, as it will, so that the next slots go
            // where the other nodes (seeing the same table) put them, and
            // a bulk deploy settles in one pass instead of a chain of
            // declines.
            if let Some(candidates) = self.candidates.as_mut() {
                candidates.claimed(target);
            }
            pass.waiting.push(Waiting {
                on: target.to_owned(),
                service: service(),
                slot: one.slot,
            });
        }
    }

    fn all(&mut self, pass: &mut Pass) {
        let (table, me) = (self.table, self.me);
        let index = Index::new(table);
        // This node's statuses: of live slots by flat number, of gone ones
        // in table order.
        let mut statuses = vec![None; index.slot_count()];
        let mut gone_statuses = Vec::new();
        for (key, service, slot, status) in table.statuses_of(me) {
            match index
                .service_index(service)
                .and_then(|si| index.slot_id(si, slot))
            {
                Some(id) => statuses[id] = Some(status),
                None => gone_statuses.push((service, slot, key, status)),
            }
        }
        let here = self.here;
        let fits_here = |spec: &ServiceSpec| here.is_some_and(|r| fits(r, spec));
        for (si, (spec, version)) in index.services.iter().enumerate() {
            let since = instance_since(table, &spec.name);
            if spec.every_node {
                let name = spec.name.as_str();
                let one = EveryNode {
                    spec,
                    version: *version,
                    since,
                    mine: table
                        .claim(name, EVERY_NODE_SLOT)
                        .filter(|c| c.owner.as_deref() == Some(me)),
                    status: table.status(me, name, EVERY_NODE_SLOT),
                };
                decide_every_node(table, self.members, me, self.here, self.drain, &one, pass);
                continue;
            }
            let claims = index.slot_claims(si);
            let targets = self.targets(spec, &claims, fits_here(spec));
            for ((slot, claim), (target, open)) in (0..spec.replicas).zip(&claims).zip(targets) {
                let one = Slot {
                    spec,
                    version: *version,
                    since,
                    slot,
                    owner: claim.owner,
                    target,
                    open,
                    failed: claim.failed,
                    status: index.slot_id(si, slot).and_then(|id| statuses[id]),
                };
                self.decide(&one, || spec.name.as_str().into(), pass);
            }
        }
        // Slots that are gone: this node's claims and instances of them.
        let mut released: HashSet<(&str, u32)> = HashSet::new();
        // An every-node service's slot of this node is decided above.
        let every_node = |service: &str, slot: u32| {
            table
                .live_service(service)
                .is_some_and(|(s, _)| s.every_node && s.has_slot(slot))
        };
        for (service, slot, c) in &index.orphan_claims {
            if c.owner.as_deref() == Some(me) && !every_node(service, *slot) {
                decide_gone(table, service, *slot, Some(c), None, &mut pass.actions);
                released.insert((service, *slot));
            }
        }
        for (service, slot, key, status) in gone_statuses {
            if !released.contains(&(service, slot)) && !every_node(service, slot) {
                decide_gone(
                    table,
                    service,
                    slot,
                    None,
                    Some((key, status)),
                    &mut pass.actions,
                );
            }
        }
    }

    /// Where each slot of a service goes, and whether it is open (its
    /// owner doesn't keep it). Placement runs only when a slot is open
    /// and this node could run it: else "not here" is all it would say.
    fn targets(
        &mut self,
        spec: &'a ServiceSpec,
        claims: &[SlotClaim<'a>],
        fits_here: bool,
    ) -> Vec<(Option<&'a str>, bool)> {
        let (table, members, me) = (self.table, self.members, self.me);
        let kept: Vec<Option<&'a str>> = claims
            .iter()
            .map(|c| {
                c.owner.filter(|o| {
                    let record = self
                        .owners
                        .entry(o)
                        .or_insert_with(|| members.is_live(o).then(|| table.node(o)).flatten());
                    record.is_some_and(|r| fits(r, spec)) && !c.failed.iter().any(|f| f == o)
                })
            })
            .collect();
        let place = fits_here
            && kept
                .iter()
                .zip(claims)
                .any(|(k, c)| k.is_none() && !c.failed.iter().any(|f| f == me));
        if place {
            let targets = self.candidates().place(spec, claims);
            targets
                .into_iter()
                .zip(kept)
                .map(|(t, k)| (t.ok(), k.is_none()))
                .collect()
        } else {
            kept.into_iter().map(|k| (k, k.is_none())).collect()
        }
    }

    fn one(&mut self, group: &mut Group<'a>, slot: u32, pass: &mut Pass) {
        let (table, me) = (self.table, self.me);
        let Some(service) = group.service.clone() else {
            return;
        };
        let claim = table.claim(&service, slot);
        let status = match table.get_key_value(KeyRef::Status(me, &service, slot)) {
            Some((key, record)) => match &record.value {
                crate::record::Value::Status(s) => Some((key, s)),
                _ => None,
            },
            None => None,
        };
        if let Some((spec, version)) = group
            .live
            .filter(|(s, _)| s.every_node && slot == EVERY_NODE_SLOT)
        {
            let one = EveryNode {
                spec,
                version,
                since: group.since,
                mine: claim.filter(|c| c.owner.as_deref() == Some(me)),
                status: status.map(|(_, s)| s),
            };
            decide_every_node(table, self.members, me, self.here, self.drain, &one, pass);
            return;
        }
        let Some((spec, version)) = group.live.filter(|(spec, _)| slot < spec.replicas) else {
            let mine = claim.filter(|c| c.owner.as_deref() == Some(me));
            decide_gone(table, &service, slot, mine, status, &mut pass.actions);
            return;
        };
        if group.targets.is_none() {
            let claims: Vec<SlotClaim<'a>> = (0..spec.replicas)
                .map(|k| {
                    let c = table.claim(spec.name.as_str(), k);
                    SlotClaim {
                        owner: c.and_then(|c| c.owner.as_deref()),
                        failed: match c {
                            Some(c) if c.version == version => &c.failed_on,
                            _ => &[],
                        },
                    }
                })
                .collect();
            let targets = self.targets(spec, &claims, group.fits_here);
            group.targets = Some((claims, targets));
        }
        let Some((claims, targets)) = &group.targets else {
            return;
        };
        let (Some(claim), Some((target, open))) =
            (claims.get(slot as usize), targets.get(slot as usize))
        else {
            return;
        };
        let one = Slot {
            spec,
            version,
            since: group.since,
            slot,
            owner: claim.owner,
            target: *target,
            open: *open,
            failed: claim.failed,
            status: status.map(|(_, s)| s),
        };
        self.decide(&one, || service.clone(), pass);
    }
}

/// A service's slots' claims, and where each goes and whether it is open.
type Targets<'a> = (Vec<SlotClaim<'a>>, Vec<(Option<&'a str>, bool)>);

/// What the touched slots of one service share: looked up once.
#[derive(Default)]
struct Group<'a> {
    service: Option<Name>,
    /// The live spec and version.
    live: Option<(&'a ServiceSpec, u64)>,
    /// Its instance version.
    since: u64,
    /// Whether this node's record fits the spec.
    fits_here: bool,
    /// Each slot's claim, target and whether it is open.
    targets: Option<Targets<'a>>,
}

impl<'a> Group<'a> {
    fn new(table: &'a Table, here: Option<&NodeRecord>, service: Name) -> Self {
        let live = table
            .live_service(&service)
            .filter(|(spec, _)| !spec.stopped);
        Self {
            live,
            since: instance_since(table, &service),
            fits_here: live.is_some_and(|(spec, _)| here.is_some_and(|r| fits(r, spec))),
            targets: None,
            service: Some(service),
        }
    }
}

/// Whether a live member other than `me` reports an active instance of
/// the slot.
fn runs_elsewhere(table: &Table, members: &Members, me: &str, service: &str, slot: u32) -> bool {
    members.names().any(|node| {
        node != me
            && table
                .status(node, service, slot)
                .is_some_and(|s| s.state.is_active())
    })
}

/// The instance version of a live service.
fn instance_since(table: &Table, name: &str) -> u64 {
    table.service(name).map_or(0, |r| r.instance_since)
}

/// Starts a slot this node owns (a no-op for the supervisor when it runs
/// already): at once, unless it replaces a running instance of an older
/// instance spec, which waits for its `turn` of the rolling update. And
/// judges how the instance fares on the new version.
#[allow(clippy::too_many_arguments)]
fn start(
    table: &Table,
    spec: &ServiceSpec,
    slot: u32,
    version: u64,
    since: u64,
    status: Option<&Status>,
    turn: impl FnOnce() -> update::Turn,
    now: u64,
    pass: &mut Pass,
) {
    let name = spec.name.as_str();
    let retry = |pass: &mut Pass, at: u64| {
        pass.retry_at = Some(pass.retry_at.map_or(at, |r| r.min(at)));
    };
    let replaces = status
        .is_some_and(|s| s.state == InstanceState::Running && !update::runs_version(s, since));
    if replaces {
        match turn() {
            update::Turn::Go => {}
            update::Turn::Wait(at) => {
                if let Some(at) = at {
                    retry(pass, at);
                }
                return;
            }
        }
    }
    if let Some(status) = status {
        judge(table, spec, slot, since, status, now, pass);
    }
    pass.actions.push(Action::Start {
        service: name.to_owned(),
        slot,
        version,
        update: replaces,
    });
}

/// Judges how this node's instance fares on the instance version: a
/// failure of an update (not of a first deploy) is an action, a deadline
/// to come a time to decide again.
fn judge(
    table: &Table,
    spec: &ServiceSpec,
    slot: u32,
    since: u64,
    status: &Status,
    now: u64,
    pass: &mut Pass,
) {
    match update::progress(spec, since, status, now) {
        update::Progress::Settled => {}
        update::Progress::Pending(at) => {
            pass.retry_at = Some(pass.retry_at.map_or(at, |r| r.min(at)));
        }
        update::Progress::Failed(why) => {
            if update::is_update(table, &spec.name, since) {
                pass.actions.push(Action::UpdateFailed {
                    service: spec.name.clone(),
                    slot,
                    since,
                    why,
                });
            }
        }
    }
}

/// The rule for one live slot.
fn decide(
    table: &Table,
    members: &Members,
    me: &str,
    drain: Drain,
    one: &Slot<'_>,
    pass: &mut Pass,
) {
    let (name, slot, version) = (one.spec.name.as_str(), one.slot, one.version);
    let once = one.spec.partition == Partition::AtMostOnce;
    let majority = members.quorum().majority();
    let active = one.status.is_some_and(|s| s.state.is_active());
    let release = |failed_on: Vec<String>, reason: Reason, out: &mut Vec<Action>| {
        out.push(Action::Release {
            service: name.to_owned(),
            slot,
            version,
            failed_on,
            reason,
        });
        out.push(Action::Stop {
            service: name.to_owned(),
            slot,
            reason,
        });
    };
    if one.owner == Some(me) {
        let failed_here = one
            .status
            .is_some_and(|s| s.state == InstanceState::Failed && s.version == version);
        if failed_here {
            if let Some(status) = one.status {
                judge(table, one.spec, slot, one.since, status, drain.now_ms, pass);
            }
            let mut failed_on = one.failed.to_vec();
            failed_on.push(me.to_owned());
            release(failed_on, Reason::Failed, &mut pass.actions);
        } else if one.target == Some(me) {
            if once && !majority {
                if active {
                    pass.actions.push(Action::Stop {
                        service: name.to_owned(),
                        slot,
                        reason: Reason::NoMajority,
                    });
                }
                return;
            }
            if once && !active {
                // Start only once no other instance can still run: the
                // members lost lately stopped theirs, the live ones say
                // so, and those back from a partition told what they did.
                if !members.quorum().caught_up() {
                    return;
                }
                let start_at = members.quorum().start_at(one.spec);
                if start_at > drain.now_ms {
                    pass.retry_at = Some(pass.retry_at.map_or(start_at, |r| r.min(start_at)));
                    return;
                }
                let Some(claimed) = table.get_ref(KeyRef::Claim(name, slot)).map(|r| &r.ts) else {
                    return;
                };
                if !members.quorum().settled(claimed) {
                    pass.unsettled.push(Unsettled {
                        service: name.into(),
                        slot,
                        claimed: (claimed.wall_ms, claimed.counter),
                    });
                    return;
                }
                if runs_elsewhere(table, members, me, name, slot) {
                    return;
                }
            }
            if missing_dependency(table, members, one.spec).is_none() {
                let turn = || update::turn(table, members, one.spec, one.since, slot, drain.now_ms);
                start(
                    table,
                    one.spec,
                    slot,
                    version,
                    one.since,
                    one.status,
                    turn,
                    drain.now_ms,
                    pass,
                );
            }
        } else if !drain.on {
            release(one.failed.to_vec(), Reason::Ineligible, &mut pass.actions);
        } else if drain.over {
            pass.actions.push(Action::Stop {
                service: name.to_owned(),
                slot,
                reason: Reason::Drained,
            });
        }
        return;
    }
    if one.target == Some(me) {
        if once && !majority {
            return;
        }
        pass.actions.push(Action::Claim {
            service: name.to_owned(),
            slot,
            version,
            previous: one.owner.map(str::to_owned),
            failed_on: one.failed.to_vec(),
        });
        return;
    }
    if active {
        let replacement_runs = one.owner.is_some_and(|o| owner_runs(table, o, name, slot));
        // This node handed the slot over (it wrote the claim naming the
        // new owner): like a drain, it keeps its instance until the new
        // one runs.
        let handed_over = table
            .get_ref(KeyRef::Claim(name, slot))
            .filter(|r| r.ts.node == me && one.owner.is_some_and(|o| o != me))
            .map(|r| drain.now_ms.saturating_sub(r.ts.wall_ms) < DRAIN_TIMEOUT_MS);
        // A race lost (a heal): the winner's instance is starting or
        // restarting: this one runs until it does, so the slot never runs
        // nowhere.
        let replacement_starting = one.owner.is_some_and(|o| {
            members.is_live(o)
                && table
                    .status(o, name, slot)
                    .is_some_and(|s| s.state.is_active() && s.version == version)
        }) && one
            .status
            .is_some_and(|s| s.state == InstanceState::Running);
        // At most once: stop first, the new owner waits for it.
        let keep = !once
            && !replacement_runs
            && ((drain.on && !drain.over) || handed_over == Some(true) || replacement_starting);
        if !keep {
            let reason = if drain.on {
                Reason::Drained
            } else if handed_over.is_some() {
                Reason::HandedOver
            } else {
                Reason::OwnedElsewhere
            };
            pass.actions.push(Action::Stop {
                service: name.to_owned(),
                slot,
                reason,
            });
        }
    }
}

/// This node's slot of an every-node service.
struct EveryNode<'a> {
    spec: &'a ServiceSpec,
    version: u64,
    since: u64,
    /// A claim of this node on the slot's number, left from a version
    /// with counted replicas.
    mine: Option<&'a Claim>,
    status: Option<&'a Status>,
}

/// The rule for this node's slot of an every-node service: it runs here
/// while this node is eligible, with no claim.
fn decide_every_node(
    table: &Table,
    members: &Members,
    me: &str,
    here: Option<&NodeRecord>,
    drain: Drain,
    one: &EveryNode<'_>,
    pass: &mut Pass,
) {
    let (name, slot, version) = (one.spec.name.as_str(), EVERY_NODE_SLOT, one.version);
    if let Some(c) = one.mine {
        pass.actions.push(Action::Release {
            service: name.to_owned(),
            slot,
            version: c.version,
            failed_on: Vec::new(),
            reason: Reason::ScaledDown,
        });
    }
    let eligible = here.is_some_and(|r| fits(r, one.spec));
    let active = one.status.is_some_and(|s| s.state.is_active());
    if eligible {
        let failed = one
            .status
            .is_some_and(|s| s.state == InstanceState::Failed && s.version == version);
        if !failed && missing_dependency(table, members, one.spec).is_none() {
            let turn =
                || update::turn_every_node(table, members, one.spec, one.since, me, drain.now_ms);
            start(
                table,
                one.spec,
                slot,
                version,
                one.since,
                one.status,
                turn,
                drain.now_ms,
                pass,
            );
        }
    } else if active {
        pass.actions.push(Action::Stop {
            service: name.to_owned(),
            slot,
            reason: if drain.on {
                Reason::Drained
            } else {
                Reason::Ineligible
            },
        });
    }
}

/// The rule for a slot that is gone (its service removed, or scaled
/// below it): release this node's claim and stop its instance, or delete
/// its stale status.
fn decide_gone(
    table: &Table,
    service: &str,
    slot: u32,
    mine: Option<&Claim>,
    status: Option<(&Key, &Status)>,
    out: &mut Vec<Action>,
) {
    let reason = match table.live_service(service) {
        Some((spec, _)) if spec.stopped => Reason::Stopped,
        Some(_) => Reason::ScaledDown,
        None => Reason::Removed,
    };
    if let Some(c) = mine {
        out.push(Action::Release {
            service: service.to_owned(),
            slot,
            version: c.version,
            failed_on: Vec::new(),
            reason,
        });
        out.push(Action::Stop {
            service: service.to_owned(),
            slot,
            reason,
        });
        return;
    }
    match status {
        Some((_, s)) if s.state.is_active() => out.push(Action::Stop {
            service: service.to_owned(),
            slot,
            reason,
        }),
        Some((key, _)) => out.push(Action::ForgetStatus { key: key.clone() }),
        None => {}
    }
}
