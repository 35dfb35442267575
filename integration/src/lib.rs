//! Test harness: real `mob-agent` processes, each with its own data dir,
//! ready file and log file; network-namespace hosts for partitions.
//!
//! # Layout
//! - [`agent`]: [`Agent`], one spawned `mob-agent run`, killed on drop, its
//!   log printed when a test fails.
//! - [`bench`](mod@bench): the benchmark's parts, mob next to Serf, supervisord and
//!   runit, and `BENCHMARKS.md` written from them (`mob-bench`).
//! - [`chaos`]: faults drawn from a seed on namespace hosts, a workload of
//!   operator writes, the promises checked after every heal (the CI chaos
//!   test and `mob-chaos`, the long run).
//! - [`netns`]: [`Netns`], hosts with their own IPs on a bridge, links that
//!   can be cut (wraps `scripts/netns.sh`).
//! - [`poll`]: [`wait_until`], polling with a deadline instead of sleeping.
//! - [`requirement`]: skip a test whose requirement is missing, unless CI
//!   requires it.
//!
//! The binary is `$MOB_AGENT_BIN`, or `target/debug/mob-agent`, built once
//! on first use.

pub mod agent;
pub mod bench;
pub mod chaos;
pub mod netns;
pub mod poll;
pub mod requirement;

pub use agent::{
    Agent, AgentSpec, Member, all_see_alive, binary, count_processes_with_args, local_cluster,
    local_cluster_on, local_cluster_with, new_key_file, pids_with_args, processes_with_arg,
};
pub use netns::Netns;
pub use poll::wait_until;
