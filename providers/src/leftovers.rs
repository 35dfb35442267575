//! Processes that an earlier run of this agent left behind.
//!
//! A kill -9 of the agent takes each instance's main process along (the
//! parent-death signal), but not the processes *those* started: the
//! signal is not inherited across fork. Every instance carries
//! [`MARKER_ENV`] = the agent's identity on this host (its control socket),
//! and its children inherit it; at start the agent finds the
//! processes that carry its identity and kills them, as it removes its
//! leftover containers. A process that cleared its environment escapes.

use std::io::Read;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The environment variable naming the agent an instance belongs to, for
/// this sweep only. Instances also get `MOB_AGENT` (the socket the CLI
/// talks to), but an operator may export that one in a shell: never a
/// reason to kill the shell.
pub const MARKER_ENV: &str = "MOB_INSTANCE_OF";

/// Largest environment read per process (the kernel caps it near 2 MiB;
/// the variable we look for comes from the agent, early in the list).
const ENVIRON_LIMIT: u64 = 1 << 20;

/// Kills, with SIGKILL, every process on this host whose environment holds
/// `MOB_INSTANCE_OF=<agent>`, except this process and its ancestors.
/// Returns their pids. Processes that vanish meanwhile or whose environment
/// can't be read are skipped.
pub fn kill_leftover_processes(agent: &str) -> Vec<u32> {
    let spared = ancestry();
    let wanted = format!("{MARKER_ENV}={agent}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if spared.contains(&pid) || !carries(pid, wanted.as_bytes()) {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok() {
            killed.push(pid);
        }
    }
    killed
}

/// This process and its ancestors (an agent started from inside an
/// instance must not kill what started it).
fn ancestry() -> Vec<u32> {
    let mut chain = vec![std::process::id()];
    while let Some(parent) = chain.last().and_then(|pid| parent_of(*pid)) {
        if parent <= 1 || chain.contains(&parent) || chain.len() > 64 {
            break;
        }
        chain.push(parent);
    }
    chain
}

/// The parent pid, from `/proc/<pid>/stat` (the field after the
/// parenthesised command name, which may itself hold spaces).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `/proc/<pid>/environ` holds exactly the entry `wanted`.
fn carries(pid: u32, wanted: &[u8]) -> bool {
    let Ok(file) = std::fs::File::open(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let mut environ = Vec::new();
    if file.take(ENVIRON_LIMIT).read_to_end(&mut environ).is_err() {
        return false;
    }
    environ.split(|b| *b == 0).any(|entry| entry == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_kills_only_processes_carrying_the_identity() {
        let ours = format!("test-{}", std::process::id());
        let mut mine = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_ENV, &ours)
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_ENV, format!("{ours}-other"))
            .spawn()
            .unwrap();
        // An operator's shell pointing the CLI at this agent is no instance.
        let shell = std::process::Command::new("sleep")
            .arg("30")
            .env("MOB_AGENT", &ours)
            .spawn()
            .unwrap();
        let killed = kill_leftover_processes(&ours);
        assert_eq!(killed, vec![mine.id()]);
        assert!(mine.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(
            other.try_wait().unwrap().is_none(),
            "the other one still runs"
        );
        for mut child in [other, shell] {
            assert!(child.try_wait().unwrap().is_none(), "killed a stranger");
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert!(ancestry().len() >= 2, "this test has a parent");
    }
}
