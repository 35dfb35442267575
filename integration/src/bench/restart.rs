//! Restart latency under mob, supervisord and runit: one program that
//! runs 1.1 s and exits 1, restarted by each; the latency is from the
//! moment it exits to the moment its replacement runs. The program marks
//! both with bash's `$EPOCHREALTIME` (no fork for the clock), so every
//! system is timed by the same clock the same way: the figure includes
//! reaping, the restart decision, fork, exec and bash's start.
//!
//! 1.1 s because runsv waits a second before restarting a service that
//! ran less than one; mob's `stable_after` is 10 ms and supervisord's
//! `startsecs` 0, so none of the three backs off.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::Mode;
use super::peers::{Runsv, Supervisord};
use super::report::{Samples, Section, ratio, samples_header};
use crate::{local_cluster, wait_until};

const CRASHER: &str = "#!/bin/bash\n\
    echo \"start $EPOCHREALTIME\" >> \"$1\"\n\
    sleep 1.1\n\
    echo \"exit $EPOCHREALTIME\" >> \"$1\"\n\
    exit 1\n";

/// Exit-to-start latencies (ms) from a marks file.
fn latencies(marks: &Path) -> Samples {
    let text = std::fs::read_to_string(marks).unwrap_or_default();
    let mut out = Samples::default();
    let mut exited: Option<f64> = None;
    for line in text.lines() {
        let Some((what, at)) = line.split_once(' ') else {
            continue;
        };
        let Ok(at) = at.trim().parse::<f64>() else {
            continue;
        };
        match what {
            "exit" => exited = Some(at),
            "start" => {
                if let Some(e) = exited.take() {
                    out.push((at - e) * 1000.0);
                }
            }
            _ => {}
        }
    }
    out
}

/// Waits until `marks` holds `crashes` restarts.
fn wait_restarts(marks: &Path, crashes: usize) -> anyhow::Result<Samples> {
    // (supervisord takes about a second to restart: its loop wakes once a
    // second.)
    let deadline = Duration::from_secs_f64(crashes as f64 * 3.0 + 20.0);
    wait_until(&format!("{crashes} restarts"), deadline, || {
        Ok(latencies(marks).len() >= crashes)
    })?;
    let mut samples = latencies(marks);
    samples.0.truncate(crashes);
    Ok(samples)
}

fn mob(dir: &Path, script: &Path, crashes: usize) -> anyhow::Result<Samples> {
    let marks = dir.join("marks-mob");
    let agents = local_cluster(&dir.join("mob"), 1)?;
    agents[0].deploy(&format!(
        r#"{{"name":"crasher","provider":"exec","max_restarts":{},"stable_after":"10ms","params":{{"command":["bash","{}","{}"]}}}}"#,
        crashes * 2 + 10,
        script.display(),
        marks.display()
    ))?;
    wait_restarts(&marks, crashes)
}

fn supervisord(dir: &Path, script: &Path, crashes: usize) -> anyhow::Result<Samples> {
    let marks = dir.join("marks-supervisord");
    let root = dir.join("supervisord");
    std::fs::create_dir_all(&root)?;
    let _supervisord = Supervisord::start(
        &root,
        "crasher",
        &format!("bash {} {}", script.display(), marks.display()),
        true,
    )?;
    wait_restarts(&marks, crashes)
}

fn runit(dir: &Path, script: &Path, crashes: usize) -> anyhow::Result<Samples> {
    let marks = dir.join("marks-runit");
    let root = dir.join("runit");
    std::fs::create_dir_all(&root)?;
    let _runsv = Runsv::start(
        &root,
        &format!(
            "#!/bin/sh\nexec bash {} {}\n",
            script.display(),
            marks.display()
        ),
        false,
    )?;
    wait_restarts(&marks, crashes)
}

/// Runs the part.
pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let crashes = mode.pick(2, 50);
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("mob"))?;
    let script = dir.path().join("crasher.sh");
    std::fs::write(&script, CRASHER)?;
    // The three one after the other: each alone on the machine.
    let mob = mob(dir.path(), &script, crashes).context("mob")?;
    let supervisord = supervisord(dir.path(), &script, crashes).context("supervisord")?;
    let runit = runit(dir.path(), &script, crashes).context("runit")?;
    let mut body = samples_header("exit → replacement running (ms)");
    for (label, s) in [
        ("mob", &mob),
        ("supervisord", &supervisord),
        ("runit (runsv)", &runit),
    ] {
        let _ = writeln!(body, "| {label} | {} |", s.cells(2));
    }
    let _ = writeln!(
        body,
        "\nRatios of medians: mob / supervisord {}, mob / runit {}. The program runs 1.1 s, \
         exits 1, and marks its start and exit with bash's `$EPOCHREALTIME`.",
        ratio(mob.median(), supervisord.median()),
        ratio(mob.median(), runit.median())
    );
    Ok(Section {
        part: "restart".into(),
        title: "Restart latency: mob, supervisord, runit".into(),
        body,
    })
}
