//! Failover: 5 agents; the agent whose node runs a one-slot service is
//! stopped until the service runs elsewhere. Trials rotate: kill -9 with
//! a plain service (until the new owner logs `instance started`), kill -9
//! with a health check (until it logs `instance healthy`: a command check
//! every 500 ms), and SIGTERM (a graceful stop: the agent hands its slots
//! over and leaves, so the new instance may run before the node has left).
//! For each kill also the new owner's own detection (`member down`) and
//! the time from that to the start: what placement and the supervisor add
//! to membership.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::report::{Samples, Section, samples_header};
use super::{Mode, mob_delays};
use crate::{Agent, local_cluster, wait_until};

/// Where `name`'s slot 0 runs, once it does.
fn running_on(agents: &[Agent], asker: usize, name: &str) -> anyhow::Result<String> {
    let mut owner = None;
    wait_until("the service to run", Duration::from_secs(15), || {
        let svc = agents[asker]
            .services()?
            .into_iter()
            .find(|s| s["name"] == name);
        owner = svc.and_then(|s| {
            (s["slots"][0]["state"] == "running")
                .then(|| s["slots"][0]["node"].as_str().map(str::to_owned))
                .flatten()
        });
        Ok(owner.is_some())
    })?;
    owner.context("owner")
}

#[derive(Default)]
struct Figures {
    running: Samples,
    detected: Samples,
    after_detection: Samples,
}

/// Runs the part.
pub fn run(mode: Mode) -> anyhow::Result<Section> {
    let trials = mode.pick(3, 60);
    let dir = tempfile::tempdir()?;
    let mut agents = local_cluster(dir.path(), 5)?;
    let (mut plain, mut checked, mut graceful) =
        (Figures::default(), Figures::default(), Figures::default());
    for trial in 0..trials {
        let with_check = trial % 3 == 1;
        let gracefully = trial % 3 == 2;
        let name = format!("fo-{trial}");
        let asker = trial % 5;
        let check = if with_check {
            r#","check":{"command":["true"],"interval":"500ms"}"#
        } else {
            ""
        };
        agents[asker].deploy(&format!(
            r#"{{"name":"{name}","provider":"exec","stop_timeout":"1s"{check},"params":{{"command":["sleep","100000"]}}}}"#
        ))?;
        let owner = running_on(&agents, asker, &name)?;
        let index = agents
            .iter()
            .position(|a| a.name() == owner)
            .context("owner agent")?;
        // Steady probing before the kill, at a different phase each trial.
        std::thread::sleep(Duration::from_millis(1000 + 200 * (trial as u64 % 5)));
        let at = SystemTime::now();
        if gracefully {
            agents[index].terminate()?;
        } else {
            agents[index].kill9()?;
        }
        let message = if with_check {
            "instance healthy"
        } else {
            "instance started"
        };
        let mut first = None;
        wait_until(
            "the service to run elsewhere",
            Duration::from_secs(30),
            || {
                first = agents
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != index)
                    .filter_map(|(i, a)| {
                        mob_delays(std::slice::from_ref(a), message, "service", &name, at)[0]
                            .map(|d| (d, i))
                    })
                    .reduce(|a, b| if b.0 < a.0 { b } else { a });
                Ok(first.is_some())
            },
        )?;
        let (delay, new_owner) = first.context("delay")?;
        let gone = if gracefully {
            "member left"
        } else {
            "member down"
        };
        let detected = mob_delays(
            std::slice::from_ref(&agents[new_owner]),
            gone,
            "node",
            &owner,
            at,
        )[0]
        .with_context(|| format!("the new owner never logged {gone} of the owner"))?;
        let figures = match (with_check, gracefully) {
            (true, _) => &mut checked,
            (_, true) => &mut graceful,
            _ => &mut plain,
        };
        figures.running.push(delay);
        figures.detected.push(detected);
        figures.after_detection.push((delay - detected) * 1000.0);
        eprintln!(
            "failover trial {trial}: {name} on {owner} stopped; {message} on {} after {delay:.3} s ({gone} after {detected:.3} s)",
            agents[new_owner].name()
        );
        agents[index].restart()?;
        let names: Vec<String> = agents.iter().map(|a| a.name().to_owned()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        wait_until(
            "the cluster to be whole again",
            Duration::from_secs(30),
            || Ok(agents.iter().all(|a| a.sees_alive(&names).unwrap_or(false))),
        )?;
        agents[asker].cli(&["remove", &name])?;
    }
    let mut body = samples_header("the owner's agent stopped");
    for (label, f) in [
        ("kill -9 → running elsewhere (s)", &plain),
        (
            "kill -9 → healthy elsewhere, command check every 500 ms (s)",
            &checked,
        ),
        ("SIGTERM → running elsewhere (s)", &graceful),
    ] {
        let _ = writeln!(body, "| {label} | {} |", f.running.cells(3));
    }
    let detected = Samples(
        plain
            .detected
            .0
            .iter()
            .chain(&checked.detected.0)
            .copied()
            .collect(),
    );
    let _ = writeln!(
        body,
        "| kill -9 → the new owner logs the owner down (s) | {} |",
        detected.cells(3)
    );
    let _ = writeln!(
        body,
        "| down → running, on the new owner (ms) | {} |",
        plain.after_detection.cells(1)
    );
    let _ = writeln!(
        body,
        "| down → healthy, on the new owner (ms) | {} |",
        checked.after_detection.cells(1)
    );

    let _ = writeln!(
        body,
        "\nOne 5-agent cluster; each trial deploys a new one-slot `sleep` service, stops the \
         agent running it and starts that agent again; the three kinds of trial rotate. \
         Times from the agents' log timestamps."
    );
    Ok(Section {
        part: "failover".into(),
        title: "Failover: kill -9 or SIGTERM of the owner, with and without a health check".into(),
        body,
    })
}
