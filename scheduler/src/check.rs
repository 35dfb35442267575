//! [`Check`]: how an instance shows it is healthy, and [`Health`], the
//! rule that turns check results into `starting`, `running` and
//! `unhealthy`. Pure: time is passed in; the agent runs the probes.
//!
//! # The rule
//! - Before the first passing probe an instance is `starting`; the first
//!   pass makes it `running`.
//! - Each failed probe counts, except in the first `grace` after the
//!   start; a pass resets the count. At `failures` failures in a row the
//!   instance is `unhealthy`: the supervisor stops it, and its restart
//!   policy decides what follows (the stop counts toward `max_restarts`).
//! - A probe every `interval`, one at a time per instance, each bounded
//!   by `timeout` (a probe still running when the next is due delays it:
//!   probes never pile up).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default time between two probes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default bound on one probe.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time after a start in which failures don't count.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// Default failures in a row that make an instance unhealthy.
pub const DEFAULT_FAILURES: u32 = 3;
/// Shortest interval accepted: a tighter loop costs more than it tells.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A service's health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Check {
    /// What is probed.
    pub probe: Probe,
    /// Time between two probes.
    pub interval: Duration,
    /// Bound on one probe: one that takes longer fails.
    pub timeout: Duration,
    /// Failures in this long after a start don't count.
    pub grace: Duration,
    /// Failures in a row that make the instance unhealthy (at least 1).
    pub failures: u32,
}

/// What a check probes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Probe {
    /// An HTTP GET of this `http://` URL: a 2xx or 3xx answer passes.
    Http(String),
    /// A TCP connect to `host:port`: an accepted connection passes.
    Tcp(String),
    /// A command, run beside the instance (inside its container for
    /// docker): exit status 0 passes.
    Command(Vec<String>),
}

impl Probe {
    /// `http`, `tcp` or `command`.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Http(_) => "http",
            Probe::Tcp(_) => "tcp",
            Probe::Command(_) => "command",
        }
    }
}

impl Check {
    /// Checks the rules serde can't, naming the field at fault (relative
    /// to `check.`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match &self.probe {
            Probe::Http(url) => {
                let rest = url.strip_prefix("http://").ok_or((
                    "http",
                    format!("{url:?} is not an http:// URL (https is not supported)"),
                ))?;
                let host = rest.split('/').next().unwrap_or_default();
                if host.is_empty() {
                    return Err(("http", format!("{url:?} has no host")));
                }
            }
            Probe::Tcp(addr) => {
                let port = addr
                    .rsplit_once(':')
                    .filter(|(host, _)| !host.is_empty())
                    .map(|(_, port)| port);
                if !port.is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p > 0)) {
                    return Err(("tcp", format!("{addr:?} is not host:port")));
                }
            }
            Probe::Command(argv) => {
                if argv.first().is_none_or(|c| c.is_empty()) {
                    return Err(("command", "is empty".into()));
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return Err(("command", "contains a NUL byte".into()));
                }
            }
        }
        if self.interval < MIN_INTERVAL {
            return Err((
                "interval",
                format!(
                    "{} ms is shorter than {} ms",
                    self.interval.as_millis(),
                    MIN_INTERVAL.as_millis()
                ),
            ));
        }
        if self.timeout.is_zero() {
            return Err(("timeout", "is zero".into()));
        }
        if self.failures == 0 {
            return Err(("failures", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// What one probe result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to report.
    Same,
    /// Passing now (the first pass, or again after failures).
    Healthy,
    /// `failures` failures in a row: stop the instance.
    Unhealthy,
}

/// One running instance's health, as its probes tell it.
#[derive(Debug, Clone)]
pub struct Health {
    failures: u32,
    grace_ms: u64,
    started_ms: u64,
    failed_in_a_row: u32,
    passed: bool,
}

impl Health {
    /// An instance of a service with `check`, started at `started_ms`.
    pub fn new(check: &Check, started_ms: u64) -> Self {
        Self {
            failures: check.failures.max(1),
            grace_ms: u64::try_from(check.grace.as_millis()).unwrap_or(u64::MAX),
            started_ms,
            failed_in_a_row: 0,
            passed: false,
        }
    }

    /// Whether a probe has passed since the start.
    pub fn passed(&self) -> bool {
        self.passed
    }

    /// Failed probes in a row that counted.
    pub fn failed_in_a_row(&self) -> u32 {
        self.failed_in_a_row
    }

    /// A probe ended at `now_ms`, passing or not.
    pub fn observe(&mut self, passed: bool, now_ms: u64) -> Verdict {
        if passed {
            let was_failing = self.failed_in_a_row > 0;
            self.failed_in_a_row = 0;
            if !self.passed || was_failing {
                self.passed = true;
                return Verdict::Healthy;
            }
            return Verdict::Same;
        }
        if now_ms.saturating_sub(self.started_ms) < self.grace_ms {
            return Verdict::Same;
        }
        self.failed_in_a_row += 1;
        if self.failed_in_a_row >= self.failures {
            Verdict::Unhealthy
        } else {
            Verdict::Same
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(probe: Probe) -> Check {
        Check {
            probe,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            grace: Duration::from_secs(5),
            failures: 3,
        }
    }

    #[test]
    fn the_first_pass_makes_it_healthy_and_failures_in_a_row_unhealthy() {
        let c = check(Probe::Tcp("127.0.0.1:80".into()));
        let mut h = Health::new(&c, 0);
        assert!(!h.passed());
        // In the grace period failures don't count.
        assert_eq!(h.observe(false, 1_000), Verdict::Same);
        assert_eq!(h.failed_in_a_row(), 0);
        assert_eq!(h.observe(true, 2_000), Verdict::Healthy);
        assert_eq!(h.observe(true, 4_000), Verdict::Same);
        assert_eq!(h.observe(false, 6_000), Verdict::Same);
        assert_eq!(h.observe(false, 8_000), Verdict::Same);
        // A pass resets the count.
        assert_eq!(h.observe(true, 10_000), Verdict::Healthy);
        assert_eq!(h.observe(false, 12_000), Verdict::Same);
        assert_eq!(h.observe(false, 14_000), Verdict::Same);
        assert_eq!(h.observe(false, 16_000), Verdict::Unhealthy);
    }

    #[test]
    fn an_instance_that_never_passes_is_unhealthy_after_grace() {
        let c = check(Probe::Command(vec!["false".into()]));
        let mut h = Health::new(&c, 0);
        let verdicts: Vec<_> = (1..=6).map(|i| h.observe(false, i * 2_000)).collect();
        // 2 s and 4 s are in the grace; 6, 8 and 10 s count.
        assert_eq!(verdicts[..4], [Verdict::Same; 4]);
        assert_eq!(verdicts[4], Verdict::Unhealthy);
        assert!(!h.passed());
    }

    #[test]
    fn bad_checks_name_the_field() {
        let field = |c: Check| c.validate().map_err(|(f, _)| f);
        assert_eq!(field(check(Probe::Http("https://x/".into()))), Err("http"));
        assert_eq!(field(check(Probe::Http("http:///h".into()))), Err("http"));
        assert_eq!(field(check(Probe::Tcp("localhost".into()))), Err("tcp"));
        assert_eq!(field(check(Probe::Tcp(":80".into()))), Err("tcp"));
        assert_eq!(field(check(Probe::Command(vec![]))), Err("command"));
        let mut c = check(Probe::Tcp("h:1".into()));
        c.interval = Duration::from_millis(10);
        assert_eq!(field(c.clone()), Err("interval"));
        c.interval = DEFAULT_INTERVAL;
        c.failures = 0;
        assert_eq!(field(c.clone()), Err("failures"));
        c.failures = 1;
        c.timeout = Duration::ZERO;
        assert_eq!(field(c), Err("timeout"));
        assert_eq!(
            check(Probe::Http("http://127.0.0.1:8080/health".into())).validate(),
            Ok(())
        );
    }
}
