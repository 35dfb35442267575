//! [`DeployWait`]: when `deploy --wait` may say a deploy is done, fed the
//! `services` view again and again. Pure: time is passed in.
//!
//! # The rule
//! - Done only once every slot of every deployed service runs the
//!   deployed version (or a newer one) and has been seen `running` by the
//!   same process for the service's `min_healthy_time` (its `[update]`
//!   policy, 3 s by default): a crash loop, a process that
//!   exits after half a second, or one whose check never passes never
//!   gets there. (`running` already means "passing its check" for a
//!   service with one.) The time is the caller's own clock, counted from
//!   when it first saw that process running, so clocks of other hosts
//!   don't matter.
//! - Failed as soon as one slot of the deployed version (or newer) is
//!   `failed` (or failed on every node, so owned by none), naming the slot
//!   and its last error. A failure of an older version is not this
//!   deploy's (it is retried).

use std::collections::BTreeMap;

use crate::record::InstanceState;
use crate::services_view::ServiceView;

/// What the wait knows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitState {
    /// Every slot counts: done.
    Done,
    /// Not yet: how many slots count, of how many.
    Waiting {
        /// Slots that count.
        ready: usize,
        /// Slots of the deployed services.
        slots: usize,
    },
    /// A slot failed: why, naming it.
    Failed(String),
}

/// The wait for one deploy.
#[derive(Debug, Clone)]
pub struct DeployWait {
    /// Each deployed service and the version written.
    versions: Vec<(String, u64)>,
    /// `(service, slot)` → the process seen running, and since when.
    seen: BTreeMap<(String, u32), (Option<u32>, u64)>,
}

impl DeployWait {
    /// A wait for these services at these versions.
    pub fn new(versions: Vec<(String, u64)>) -> Self {
        Self {
            versions,
            seen: BTreeMap::new(),
        }
    }

    /// Takes in the `services` view as of `now_ms`.
    pub fn observe(&mut self, services: &[ServiceView], now_ms: u64) -> WaitState {
        let mut seen = BTreeMap::new();
        let (mut ready, mut slots) = (0, 0);
        for (name, version) in &self.versions {
            // (A service not in the view yet: its slots are not known.)
            let Some(service) = services.iter().find(|s| &s.name == name) else {
                return WaitState::Waiting { ready, slots };
            };
            let min_healthy = service.spec.update.min_healthy_ms();
            for slot in &service.slots {
                slots += 1;
                let current = slot.version.is_some_and(|v| v >= *version);
                // (A slot failed on every node has no owner, so no version:
                // it failed at the latest version.)
                let failed_now = slot.version.is_none_or(|v| v >= *version);
                if failed_now && slot.state == InstanceState::Failed {
                    return WaitState::Failed(format!(
                        "{name} slot {} failed{}",
                        slot.slot,
                        slot.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ));
                }
                if !(current && slot.state == InstanceState::Running) {
                    continue;
                }
                let key = (name.clone(), slot.slot);
                let since = match self.seen.get(&key) {
                    Some((pid, since)) if *pid == slot.pid => *since,
                    _ => now_ms,
                };
                if now_ms.saturating_sub(since) >= min_healthy {
                    ready += 1;
                }
                seen.insert(key, (slot.pid, since));
            }
        }
        self.seen = seen;
        if ready == slots {
            WaitState::Done
        } else {
            WaitState::Waiting { ready, slots }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services_view::SlotView;
    use crate::spec_file::parse_specs;

    fn view(slots: Vec<SlotView>) -> Vec<ServiceView> {
        let spec =
            parse_specs(r#"{"name": "web", "provider": "exec", "update": {"min_healthy_time": "1s"}, "params": {"command": "x"}}"#)
                .unwrap()
                .remove(0);
        vec![ServiceView {
            name: "web".into(),
            provider: spec.params.provider(),
            replicas: slots.len() as u32,
            every_node: false,
            version: 2,
            origin: "n1".into(),
            slots,
            spec,
        }]
    }

    fn slot(state: InstanceState, pid: u32, version: u64) -> SlotView {
        SlotView {
            slot: 0,
            node: Some("n1".into()),
            state,
            pid: Some(pid),
            restarts: 0,
            since_ms: None,
            reason: Some("exit code 1".into()),
            version: Some(version),
            health: None,
            last_exit: None,
            last_signal: None,
            addr: None,
            ports: Default::default(),
        }
    }

    #[test]
    fn done_only_after_the_same_process_ran_long_enough() {
        let mut wait = DeployWait::new(vec![("web".into(), 2)]);
        let running = |pid| view(vec![slot(InstanceState::Running, pid, 2)]);
        assert_eq!(
            wait.observe(&running(10), 0),
            WaitState::Waiting { ready: 0, slots: 1 }
        );
        // A new process (a restart) starts the count again.
        assert!(matches!(
            wait.observe(&running(11), 900),
            WaitState::Waiting { .. }
        ));
        assert!(matches!(
            wait.observe(&running(11), 1_800),
            WaitState::Waiting { .. }
        ));
        assert_eq!(wait.observe(&running(11), 1_900), WaitState::Done);
        // Not running in between: counted again from the next sight.
        let mut wait = DeployWait::new(vec![("web".into(), 2)]);
        wait.observe(&running(12), 0);
        wait.observe(&view(vec![slot(InstanceState::Backoff, 12, 2)]), 500);
        assert!(matches!(
            wait.observe(&running(12), 1_000),
            WaitState::Waiting { .. }
        ));
    }

    #[test]
    fn an_older_version_never_counts_and_its_failure_is_not_this_deploys() {
        let mut wait = DeployWait::new(vec![("web".into(), 2)]);
        let old = view(vec![slot(InstanceState::Running, 10, 1)]);
        wait.observe(&old, 0);
        assert!(matches!(
            wait.observe(&old, 5_000),
            WaitState::Waiting { .. }
        ));
        let old_failed = view(vec![slot(InstanceState::Failed, 10, 1)]);
        assert!(matches!(
            wait.observe(&old_failed, 6_000),
            WaitState::Waiting { .. }
        ));
        let failed = view(vec![slot(InstanceState::Failed, 10, 2)]);
        assert_eq!(
            wait.observe(&failed, 7_000),
            WaitState::Failed("web slot 0 failed: exit code 1".into())
        );
        // Failed on every node: released, with no version.
        let mut released = slot(InstanceState::Failed, 10, 2);
        released.version = None;
        assert!(matches!(
            DeployWait::new(vec![("web".into(), 2)]).observe(&view(vec![released]), 0),
            WaitState::Failed(_)
        ));
    }
}
