//! Start a program by command, mob next to supervisord and runit: from
//! the moment the operator's command is run (`mob-agent deploy` of a new
//! exec service, `supervisorctl start`, `sv up`) to the moment the
//! program runs, which it marks with bash's `$EPOCHREALTIME` (the same
//! clock the command's start is read from). Trials interleave the three;
//! between trials the program is stopped (`remove`, `supervisorctl stop`,
//! `sv down`), and each system gets a second between its trials (runsv
//! holds back a start that comes within a second of the last one). mob's
//! deploy returns only once the write is on disk.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::Mode;
use super::peers::{Runsv, Supervisord};
use super::report::{Samples, Section, ratio, samples_header};
use crate::{local_cluster, wait_until};

const MARKER: &str = "#!/bin/bash\n\
    echo \"start $EPOCHREALTIME\" >> \"$1\"\n\
    exec sleep 100000\n";

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The start marks in `marks`, in order.
fn marks(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("start "))
        .filter_map(|t| t.trim().parse().ok())
        .collect()
}

/// Runs `command`, then waits for start mark number `n` (from 0); the
/// delay in ms from just before the command.
fn timed(
    marks_file: &Path,
    n: usize,
    command: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let before = now_secs();
    command()?;
    let mut at = None;
    wait_until("the program to start", Duration::from_secs(30), || {
        at = marks(marks_file).get(n).copied();
        Ok(at.is_some())
    })?;
    Ok((at.context("mark")? - before) * 1000.0)
}

/// Runs the part.
pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let trials = mode.pick(2, 20);
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("marker.sh");
    std::fs::write(&script, MARKER)?;
    let command = |marks: &Path| format!("bash {} {}", script.display(), marks.display());

    std::fs::create_dir_all(dir.path().join("mob"))?;
    let agents = local_cluster(&dir.path().join("mob"), 1)?;
    let mob_marks = dir.path().join("marks-mob");

    let sup_root = dir.path().join("supervisord");
    std::fs::create_dir_all(&sup_root)?;
    let sup_marks = dir.path().join("marks-supervisord");
    let supervisord = Supervisord::start(&sup_root, "marker", &command(&sup_marks), false)?;

    let runit_root = dir.path().join("runit");
    std::fs::create_dir_all(&runit_root)?;
    let runit_marks = dir.path().join("marks-runit");
    let runsv = Runsv::start(
        &runit_root,
        &format!("#!/bin/sh\nexec {}\n", command(&runit_marks)),
        true,
    )?;

    let (mut mob, mut sup, mut runit) =
        (Samples::default(), Samples::default(), Samples::default());
    for trial in 0..trials {
        // runsv holds a start back until a second after the last one: each
        // system gets that second between its trials.
        std::thread::sleep(Duration::from_millis(1100));
        for k in 0..3 {
            match (k + trial) % 3 {
                0 => {
                    let name = format!("marker-{trial}");
                    let spec = format!(
                        r#"{{"name":"{name}","provider":"exec","stop_timeout":"1s","params":{{"command":["bash","{}","{}"]}}}}"#,
                        script.display(),
                        mob_marks.display()
                    );
                    mob.push(timed(&mob_marks, trial, || {
                        agents[0].deploy(&spec).map(drop)
                    })?);
                    agents[0].cli(&["remove", &name])?;
                }
                1 => {
                    sup.push(timed(&sup_marks, trial, || {
                        supervisord.ctl(&["start", "marker"]).map(drop)
                    })?);
                    supervisord.ctl(&["stop", "marker"])?;
                }
                _ => {
                    runit.push(timed(&runit_marks, trial, || runsv.sv(&["up"]).map(drop))?);
                    runsv.sv(&["-w", "5", "down"])?;
                }
            }
        }
    }
    let mut body = samples_header("command → program running (ms)");
    for (label, s) in [
        ("`mob-agent deploy` (a new exec service)", &mob),
        ("`supervisorctl start`", &sup),
        ("`sv up`", &runit),
    ] {
        let _ = writeln!(body, "| {label} | {} |", s.cells(1));
    }
    let _ = writeln!(
        body,
        "\nRatios of medians: mob / supervisorctl {}, mob / sv {}. From just before the \
         command runs to the program's first line (bash's `$EPOCHREALTIME`); one agent, \
         one supervisord, one runsv, trials interleaved.",
        ratio(mob.median(), sup.median()),
        ratio(mob.median(), runit.median())
    );
    Ok(Section {
        part: "deploy".into(),
        title: "Command to running: mob, supervisord, runit".into(),
        body,
    })
}
