//! A chaos run in CI: 5 agents on namespace hosts, faults drawn from fixed
//! seeds (kill -9, graceful stops, wiped data dirs, SIGSTOP, partitions,
//! one-way loss, CPU saturation, floods), writes during them, and every
//! promise checked after each heal. A failure prints the seed, the promise
//! broken, the run's journal and every agent's log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use mob_integration::Netns;
use mob_integration::chaos::{Config, run};

/// Rounds per seed: about 7 s each, with the heal.
const ROUNDS: usize = 10;

#[test]
fn every_promise_holds_after_each_heal_of_seeded_faults() {
    if !Netns::usable() {
        return;
    }
    for seed in [1, 2] {
        let report = run(&Config::rounds(seed, ROUNDS)).unwrap();
        eprintln!("{report}");
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
        assert!(
            report.false_downs.is_empty(),
            "seed {seed}: {:?}",
            report.false_downs
        );
        // The run did what it says: faults, acknowledged writes, heals.
        let acked: usize = report.writes.values().map(|(a, _)| a).sum();
        assert!(report.faults.values().sum::<usize>() == ROUNDS && acked > 0);
        assert_eq!(
            report.heals.len(),
            ROUNDS,
            "every heal was followed by every promise holding"
        );
    }
}
