//! The state machine of one instance, pure (time is passed in):
//!
//! ```text
//! starting -> running -> (exit) -> backoff -> starting -> ...
//!                             \-> starting (first restart: at once)
//!                             \-> failed   (budget spent)
//!                             \-> stopped  (policy says stay, or stop asked)
//! ```
//!
//! With a health check, a started process stays `starting` until its
//! first probe passes, and `failures` failed probes in a row make it
//! `unhealthy`: the supervisor stops it, and the stop is an exit like any
//! other for the restart policy. A run that never passed its check counts
//! as a failure at once (never as a stable run that resets the budget).

use std::time::{Duration, Instant};

use mob_scheduler::record::InstanceState;

use crate::restart::{Decision, Exit, RestartRules, RestartTracker};

/// What the runner does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start the process now.
    Start,
    /// Wait this long, then start.
    Wait(Duration),
    /// Nothing more: the instance is failed or stopped for good.
    Done,
}

/// One instance's state.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    state: InstanceState,
    tracker: RestartTracker,
    started_at: Option<Instant>,
    pid: Option<u32>,
    last_exit: Option<Exit>,
}

impl Lifecycle {
    /// A new instance, about to start.
    pub fn new(rules: RestartRules) -> Self {
        Self {
            state: InstanceState::Starting,
            tracker: RestartTracker::new(rules),
            started_at: None,
            pid: None,
            last_exit: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> InstanceState {
        self.state
    }

    /// Pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.tracker.restarts()
    }

    /// How the last run ended.
    pub fn last_exit(&self) -> Option<Exit> {
        self.last_exit
    }

    /// The process started with `pid` at `now`: running, or, `checked`,
    /// starting until its check passes.
    pub fn started(&mut self, pid: u32, now: Instant, checked: bool) {
        self.state = if checked {
            InstanceState::Starting
        } else {
            InstanceState::Running
        };
        self.pid = Some(pid);
        self.started_at = Some(now);
    }

    /// Its check passed: running.
    pub fn healthy(&mut self) {
        if self.pid.is_some() {
            self.state = InstanceState::Running;
        }
    }

    /// Its check failed too often, at `now`: unhealthy, about to be
    /// stopped. `ever_passed` false: the run counts as failing at once.
    pub fn unhealthy(&mut self, now: Instant, ever_passed: bool) {
        self.state = InstanceState::Unhealthy;
        if !ever_passed {
            self.started_at = Some(now);
        }
    }

    /// The run ended (or never began: [`Exit::StartFailed`]) at `now`.
    pub fn exited(&mut self, exit: Exit, now: Instant, jitter: f64) -> Next {
        self.pid = None;
        self.last_exit = Some(exit);
        let started = self.started_at.take().unwrap_or(now);
        match self.tracker.on_exit(exit, started, now, jitter) {
            Decision::Restart(delay) if delay.is_zero() => {
                self.state = InstanceState::Starting;
                Next::Start
            }
            Decision::Restart(delay) => {
                self.state = InstanceState::Backoff;
                Next::Wait(delay)
            }
            Decision::Fail => {
                self.state = InstanceState::Failed;
                Next::Done
            }
            Decision::Stay => {
                self.state = InstanceState::Stopped;
                Next::Done
            }
        }
    }

    /// The backoff elapsed: starting again.
    pub fn restarting(&mut self) {
        self.state = InstanceState::Starting;
    }

    /// Stopped on request; `exit` is how the process ended, if it ran.
    pub fn stopped(&mut self, exit: Option<Exit>) {
        self.pid = None;
        self.started_at = None;
        if exit.is_some() {
            self.last_exit = exit;
        }
        self.state = InstanceState::Stopped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mob_scheduler::spec::RestartPolicy;

    fn lifecycle(policy: RestartPolicy, max: u32) -> Lifecycle {
        Lifecycle::new(RestartRules {
            policy,
            max_restarts: max,
            window: Duration::from_secs(60),
            stable_after: Duration::from_secs(10),
        })
    }

    #[test]
    fn crash_loop_walks_the_states_to_failed() {
        let mut l = lifecycle(RestartPolicy::Always, 2);
        let t0 = Instant::now();
        assert_eq!(l.state(), InstanceState::Starting);
        l.started(10, t0, false);
        assert_eq!((l.state(), l.pid()), (InstanceState::Running, Some(10)));
        assert_eq!(l.exited(Exit::Code(3), t0, 1.0), Next::Start);
        assert_eq!((l.state(), l.pid()), (InstanceState::Starting, None));
        l.started(11, t0, false);
        assert_eq!(
            l.exited(Exit::Signal(9), t0, 1.0),
            Next::Wait(Duration::from_millis(100))
        );
        assert_eq!(l.state(), InstanceState::Backoff);
        l.restarting();
        l.started(12, t0, false);
        assert_eq!(l.exited(Exit::Code(1), t0, 1.0), Next::Done);
        assert_eq!(l.state(), InstanceState::Failed);
        assert_eq!(l.restarts(), 2);
        assert_eq!(l.last_exit(), Some(Exit::Code(1)));
    }

    #[test]
    fn never_and_on_failure_stop_at_a_clean_exit() {
        let t0 = Instant::now();
        let mut l = lifecycle(RestartPolicy::Never, 5);
        l.started(1, t0, false);
        assert_eq!(l.exited(Exit::Code(1), t0, 1.0), Next::Done);
        assert_eq!(l.state(), InstanceState::Stopped);
        let mut l = lifecycle(RestartPolicy::OnFailure, 5);
        l.started(1, t0, false);
        assert_eq!(l.exited(Exit::Code(0), t0, 1.0), Next::Done);
        assert_eq!(l.state(), InstanceState::Stopped);
    }

    #[test]
    fn a_checked_instance_runs_once_healthy_and_an_unhealthy_one_restarts_by_policy() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        let mut l = lifecycle(RestartPolicy::Always, 1);
        l.started(7, t0, true);
        assert_eq!((l.state(), l.pid()), (InstanceState::Starting, Some(7)));
        l.healthy();
        assert_eq!(l.state(), InstanceState::Running);
        // Never healthy, 60 s in: not a stable run; the budget of 1 is spent
        // by the first restart, the second unhealthy stop fails it.
        let mut l = lifecycle(RestartPolicy::Always, 1);
        l.started(8, t0, true);
        l.unhealthy(later, false);
        assert_eq!(l.state(), InstanceState::Unhealthy);
        assert_eq!(l.exited(Exit::Signal(15), later, 1.0), Next::Start);
        l.started(9, later, true);
        l.unhealthy(later, false);
        assert_eq!(l.exited(Exit::Signal(15), later, 1.0), Next::Done);
        assert_eq!(l.state(), InstanceState::Failed);
    }
}
