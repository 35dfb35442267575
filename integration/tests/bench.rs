//! The benchmark's smoke mode: every part runs once, against the real
//! peers (Serf, supervisord, runit), and reports its table. Not a
//! measurement: nothing here is timed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use mob_integration::requirement;

fn installed(binary: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join(binary).is_file())
}

/// The cells of the first table row whose first cell is `row`.
fn row<'a>(out: &'a str, row: &str) -> Vec<&'a str> {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("| {row} |")))
        .unwrap_or_else(|| panic!("no row {row:?} in:\n{out}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

#[test]
fn every_part_of_the_benchmark_reports_its_table_in_smoke_mode() {
    let root = nix::unistd::Uid::effective().is_root();
    let peers = ["serf", "supervisord", "runsv", "nft", "bash"]
        .iter()
        .all(|b| installed(b));
    if !requirement::met(
        root && peers,
        "MOB_REQUIRE_PEERS",
        "the benchmark needs root, serf, supervisor, runit and nftables",
    ) {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mob-bench"))
        .args(["all", "--smoke"])
        .env("MOB_AGENT_BIN", mob_integration::binary())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mob-bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in mob_integration::bench::PARTS {
        assert!(
            stdout.contains(&format!("<!-- part: {} -->", part.name))
                && stdout.contains(&format!("<!-- end: {} -->", part.name)),
            "no section for {}:\n{stdout}",
            part.name
        );
    }
    // Measured values, not placeholders: a kill is detected within the
    // trial's deadline, a restart takes a positive time under each system.
    let detected = row(
        &stdout,
        "kill -9 → all survivors report it failed: mob (default, suspect_to_down_after 1.5 s)",
    );
    let median: f64 = detected[3].parse().unwrap();
    assert!(median > 0.0 && median < 30.0, "{detected:?}");
    for system in ["mob", "supervisord", "runit (runsv)"] {
        let cells = row(&stdout, system);
        assert_eq!(cells[1], "2", "{cells:?}");
        assert!(cells[3].parse::<f64>().unwrap() > 0.0, "{cells:?}");
    }
    let footprint = row(&stdout, "mob (sealed)");
    assert!(footprint[1].parse::<f64>().unwrap() > 1.0, "{footprint:?}");
}
