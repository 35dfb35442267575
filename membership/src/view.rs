//! The member list as the operator sees it, and the events that turn one
//! list into the next.
//!
//! foca notifies up and down but not suspicion, and reports a graceful leave
//! as an ordinary down. So the view is derived from foca's full membership
//! state after every call, and a member that sent us a leave notice is
//! reported `left` rather than `down`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use crate::NodeId;
use crate::member::{MemberEvent, MemberState, MemberView};

/// Latest identity and state per member address.
#[derive(Debug, Default)]
pub(crate) struct View {
    members: HashMap<SocketAddr, MemberView>,
}

impl View {
    /// Replaces the view with `current` (foca's membership state) and
    /// returns the events the change amounts to. Identities at `me`, our own
    /// address, are left out: after a rejoin foca may hear of our previous
    /// epoch as down, and that is not another member.
    pub(crate) fn update<'a>(
        &mut self,
        me: SocketAddr,
        current: impl Iterator<Item = (&'a NodeId, foca::State)>,
        left: &HashSet<NodeId>,
        forgotten: &BTreeSet<String>,
        now_ms: u64,
    ) -> Vec<MemberEvent> {
        let mut events = Vec::new();
        let mut next = HashMap::with_capacity(self.members.len());
        // A forgotten member is left out while it is gone, without an
        // event: it went down or left before, and that was told then.
        let shown = |(id, state): &(&NodeId, foca::State)| {
            id.addr != me && !(*state == foca::State::Down && forgotten.contains(&id.name))
        };
        for (id, state) in current.filter(shown) {
            let state = match state {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down if left.contains(id) => MemberState::Left,
                foca::State::Down => MemberState::Down,
            };
            let previous = self.members.get(&id.addr);
            // State of this very identity before, if we knew it.
            let before = previous.filter(|p| &p.id == id).map(|p| p.state);
            // Whether anything at this address was a live member before.
            let was_active = previous.is_some_and(|p| p.state.is_active());
            use MemberState::{Alive, Down, Left, Suspect};
            match (before, state) {
                (Some(Alive | Suspect), Alive) | (Some(Suspect), Suspect) => {}
                (_, Alive) => events.push(MemberEvent::Up(id.clone())),
                (Some(Alive), Suspect) => events.push(MemberEvent::Suspect(id.clone())),
                (_, Suspect) => {
                    events.push(MemberEvent::Up(id.clone()));
                    events.push(MemberEvent::Suspect(id.clone()));
                }
                (_, Down) if was_active => events.push(MemberEvent::Down(id.clone())),
                (_, Left) if was_active => events.push(MemberEvent::Left(id.clone())),
                // Already gone, or only heard of as gone: nothing happened here.
                (_, Down | Left) => {}
            }
            next.insert(
                id.addr,
                MemberView {
                    id: id.clone(),
                    state,
                    since_ms: match previous {
                        Some(p) if before == Some(state) => p.since_ms,
                        _ => now_ms,
                    },
                },
            );
        }
        self.members = next;
        events
    }

    /// Members, ourselves excluded, sorted by name.
    pub(crate) fn list(&self) -> Vec<MemberView> {
        let mut list: Vec<_> = self.members.values().cloned().collect();
        list.sort_by(|a, b| (&a.id.name, a.id.addr).cmp(&(&b.id.name, b.id.addr)));
        list
    }

    /// Members alive or suspect, ourselves excluded.
    pub(crate) fn active(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.state.is_active())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::State;

    fn id(name: &str, port: u16, epoch: u64) -> NodeId {
        NodeId {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            epoch,
        }
    }

    fn step(view: &mut View, members: &[(NodeId, State)], left: &[NodeId]) -> Vec<MemberEvent> {
        step_at(view, members, left, &[], 0)
    }

    /// [`step`], with names forgotten and the wall clock at `now_ms`.
    fn step_at(
        view: &mut View,
        members: &[(NodeId, State)],
        left: &[NodeId],
        forgotten: &[&str],
        now_ms: u64,
    ) -> Vec<MemberEvent> {
        let left: HashSet<NodeId> = left.iter().cloned().collect();
        let forgotten: BTreeSet<String> = forgotten.iter().map(|n| (*n).to_owned()).collect();
        let me = SocketAddr::from(([127, 0, 0, 1], 1));
        view.update(
            me,
            members.iter().map(|(i, s)| (i, *s)),
            &left,
            &forgotten,
            now_ms,
        )
    }

    #[test]
    fn lifecycle_emits_one_event_per_change() {
        let mut v = View::default();
        let b = id("b", 2, 1);
        assert_eq!(
            step(&mut v, &[(b.clone(), State::Alive)], &[]),
            vec![MemberEvent::Up(b.clone())]
        );
        assert_eq!(step(&mut v, &[(b.clone(), State::Alive)], &[]), vec![]);
        assert_eq!(
            step(&mut v, &[(b.clone(), State::Suspect)], &[]),
            vec![MemberEvent::Suspect(b.clone())]
        );
        assert_eq!(step(&mut v, &[(b.clone(), State::Alive)], &[]), vec![]);
        assert_eq!(
            step(&mut v, &[(b.clone(), State::Down)], &[]),
            vec![MemberEvent::Down(b.clone())]
        );
        assert_eq!(step(&mut v, &[(b.clone(), State::Down)], &[]), vec![]);
        assert_eq!(v.active(), 0);
        // Restart: next epoch at the same address comes up.
        let b2 = id("b", 2, 2);
        assert_eq!(
            step(&mut v, &[(b2.clone(), State::Alive)], &[]),
            vec![MemberEvent::Up(b2.clone())]
        );
        assert_eq!(v.active(), 1);
    }

    #[test]
    fn a_forgotten_member_is_left_out_while_gone_without_an_event() {
        let mut v = View::default();
        let (b, c) = (id("b", 2, 1), id("c", 3, 1));
        let down = [(b.clone(), State::Down), (c.clone(), State::Down)];
        let events = step_at(&mut v, &down, &[], &["c"], 0);
        assert_eq!(events, vec![]);
        assert_eq!(v.list().len(), 1);
        assert_eq!(v.list()[0].id, b);
        // Back with a new epoch: listed, and up.
        let c2 = id("c", 3, 2);
        let up = [(c.clone(), State::Down), (c2.clone(), State::Alive)];
        let events = step_at(&mut v, &up, &[], &["c"], 0);
        assert_eq!(events, vec![MemberEvent::Up(c2.clone())]);
        assert_eq!(
            v.list().iter().map(|m| &m.id).collect::<Vec<_>>(),
            vec![&c2]
        );
    }

    #[test]
    fn since_is_when_this_agent_saw_the_state_change() {
        let mut v = View::default();
        let b = id("b", 2, 1);
        let mut at = |state: State, now: u64| {
            step_at(&mut v, &[(b.clone(), state)], &[], &[], now);
            v.list()[0].since_ms
        };
        assert_eq!(at(State::Alive, 100), 100);
        assert_eq!(at(State::Alive, 200), 100);
        assert_eq!(at(State::Down, 300), 300);
        assert_eq!(at(State::Down, 400), 300);
    }

    #[test]
    fn our_own_previous_epoch_is_not_a_member() {
        let mut v = View::default();
        let old_me = id("a", 1, 1);
        let b = id("b", 2, 1);
        let events = step(
            &mut v,
            &[(old_me, State::Down), (b.clone(), State::Alive)],
            &[],
        );
        assert_eq!(events, vec![MemberEvent::Up(b.clone())]);
        assert_eq!(v.list().len(), 1);
        assert_eq!(v.list()[0].id, b);
    }

    #[test]
    fn leave_is_left_not_down() {
        let mut v = View::default();
        let c = id("c", 3, 1);
        step(&mut v, &[(c.clone(), State::Alive)], &[]);
        let events = step(
            &mut v,
            &[(c.clone(), State::Down)],
            std::slice::from_ref(&c),
        );
        assert_eq!(events, vec![MemberEvent::Left(c.clone())]);
        assert_eq!(v.list()[0].state, MemberState::Left);
    }

    #[test]
    fn members_only_heard_of_as_down_raise_nothing() {
        let mut v = View::default();
        assert_eq!(step(&mut v, &[(id("d", 4, 1), State::Down)], &[]), vec![]);
        assert_eq!(v.list().len(), 1);
    }
}
