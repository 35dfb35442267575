//! Restart policy as a pure function of an instance's exit history and
//! `now`: whether to restart, and after how long.
//!
//! - The first restart after a crash is immediate.
//! - Then the delay doubles from [`BACKOFF_MIN`] up to [`BACKOFF_MAX`], with
//!   ±20 % jitter so a fleet of crashing instances doesn't restart in step.
//! - More than `max_restarts` restarts within `restart_window`: failed.
//! - A run of at least `stable_after` resets the backoff.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mob_scheduler::spec::RestartPolicy;

/// Second restart's delay; each further one doubles.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between restarts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How an instance's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Could not be started at all.
    StartFailed,
}

impl Exit {
    /// A clean exit (code 0).
    pub fn is_success(self) -> bool {
        self == Exit::Code(0)
    }
}

/// The restart settings of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartRules {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Restarts allowed within `window`.
    pub max_restarts: u32,
    /// Window of `max_restarts`.
    pub window: Duration,
    /// Run time that resets the backoff.
    pub stable_after: Duration,
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start again after this delay (zero: at once).
    Restart(Duration),
    /// The restart budget is spent.
    Fail,
    /// The policy says not to restart.
    Stay,
}

/// Restart history of one instance.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    rules: RestartRules,
    /// When each restart within the window happened.
    recent: VecDeque<Instant>,
    /// Restarts since the instance last ran stably.
    streak: u32,
    /// Restarts in total (reported).
    total: u32,
}

impl RestartTracker {
    /// A tracker with no history.
    pub fn new(rules: RestartRules) -> Self {
        Self {
            rules,
            recent: VecDeque::new(),
            streak: 0,
            total: 0,
        }
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.total
    }

    /// Decides after an exit at `now` of a run that started at
    /// `started_at`; `jitter` in `0.8..=1.2` scales the delay. Records
    /// the restart when it decides one.
    pub fn on_exit(
        &mut self,
        exit: Exit,
        started_at: Instant,
        now: Instant,
        jitter: f64,
    ) -> Decision {
        let wanted = match self.rules.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.is_success(),
            RestartPolicy::Never => false,
        };
        if !wanted {
            return Decision::Stay;
        }
        if now.saturating_duration_since(started_at) >= self.rules.stable_after {
            self.streak = 0;
        }
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > self.rules.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.rules.max_restarts as usize {
            return Decision::Fail;
        }
        let delay = backoff(self.streak, jitter);
        self.recent.push_back(now);
        self.streak = self.streak.saturating_add(1);
        self.total = self.total.saturating_add(1);
        Decision::Restart(delay)
    }
}

/// Delay before restart number `streak` (0-based) of a crash streak.
pub fn backoff(streak: u32, jitter: f64) -> Duration {
    if streak == 0 {
        return Duration::ZERO;
    }
    let doubled = BACKOFF_MIN.saturating_mul(1u32.checked_shl(streak - 1).unwrap_or(u32::MAX));
    doubled
        .min(BACKOFF_MAX)
        .mul_f64(jitter.clamp(0.8, 1.2))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(policy: RestartPolicy) -> RestartRules {
        RestartRules {
            policy,
            max_restarts: 5,
            window: Duration::from_secs(60),
            stable_after: Duration::from_secs(10),
        }
    }

    const S: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn first_restart_is_immediate_then_doubling_to_the_cap() {
        assert_eq!(backoff(0, 1.0), Duration::ZERO);
        assert_eq!(backoff(1, 1.0), S(100));
        assert_eq!(backoff(2, 1.0), S(200));
        assert_eq!(backoff(3, 1.0), S(400));
        assert_eq!(backoff(9, 1.0), S(25_600));
        assert_eq!(backoff(10, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(40, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(2, 1.2), S(240));
        assert_eq!(backoff(2, 0.8), S(160));
        assert_eq!(backoff(2, 5.0), S(240), "jitter is clamped");
    }

    #[test]
    fn crash_loop_spends_the_budget_then_fails() {
        let mut t = RestartTracker::new(rules(RestartPolicy::Always));
        let t0 = Instant::now();
        let mut now = t0;
        let mut delays = Vec::new();
        loop {
            let started = now;
            now += S(5);
            match t.on_exit(Exit::Code(1), started, now, 1.0) {
                Decision::Restart(d) => {
                    delays.push(d);
                    now += d;
                }
                Decision::Fail => break,
                Decision::Stay => panic!("always stays"),
            }
        }
        assert_eq!(delays, vec![S(0), S(100), S(200), S(400), S(800)]);
        assert_eq!(t.restarts(), 5);
    }

    #[test]
    fn the_window_slides() {
        let mut r = rules(RestartPolicy::Always);
        r.max_restarts = 2;
        r.window = Duration::from_secs(10);
        let mut t = RestartTracker::new(r);
        let t0 = Instant::now();
        assert!(matches!(
            t.on_exit(Exit::Code(1), t0, t0, 1.0),
            Decision::Restart(_)
        ));
        assert!(matches!(
            t.on_exit(Exit::Code(1), t0, t0 + S(1), 1.0),
            Decision::Restart(_)
        ));
        assert_eq!(t.on_exit(Exit::Code(1), t0, t0 + S(2), 1.0), Decision::Fail);
        // 11 s later the old restarts left the window.
        let later = t0 + Duration::from_secs(11);
        assert!(matches!(
            t.on_exit(Exit::Code(1), later, later, 1.0),
            Decision::Restart(_)
        ));
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut t = RestartTracker::new(rules(RestartPolicy::Always));
        let t0 = Instant::now();
        t.on_exit(Exit::Code(1), t0, t0, 1.0);
        t.on_exit(Exit::Code(1), t0, t0 + S(10), 1.0);
        assert_eq!(
            t.on_exit(Exit::Code(1), t0, t0 + S(20), 1.0),
            Decision::Restart(S(200))
        );
        // Ran 10 s: the next restart is immediate again.
        let start = t0 + S(300);
        let end = start + Duration::from_secs(10);
        assert_eq!(
            t.on_exit(Exit::Code(1), start, end, 1.0),
            Decision::Restart(Duration::ZERO)
        );
        assert_eq!(t.restarts(), 4);
    }

    #[test]
    fn policies() {
        let t0 = Instant::now();
        let mut never = RestartTracker::new(rules(RestartPolicy::Never));
        assert_eq!(never.on_exit(Exit::Code(1), t0, t0, 1.0), Decision::Stay);
        let mut on_failure = RestartTracker::new(rules(RestartPolicy::OnFailure));
        assert_eq!(
            on_failure.on_exit(Exit::Code(0), t0, t0, 1.0),
            Decision::Stay
        );
        assert_eq!(
            on_failure.on_exit(Exit::Signal(9), t0, t0, 1.0),
            Decision::Restart(Duration::ZERO)
        );
        assert!(matches!(
            on_failure.on_exit(Exit::StartFailed, t0, t0, 1.0),
            Decision::Restart(_)
        ));
        let mut always = RestartTracker::new(rules(RestartPolicy::Always));
        assert_eq!(
            always.on_exit(Exit::Code(0), t0, t0, 1.0),
            Decision::Restart(Duration::ZERO)
        );
    }
}
