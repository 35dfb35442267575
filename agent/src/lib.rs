//! `mob-agent`: run the agent, or talk to a running one over its control
//! socket. Exit codes: 0 ok, 1 operation failed, 2 usage error. The binary
//! is [`main`]; the library exists for it and for the fuzz targets
//! ([`fuzzing`]).
//!
//! # Layout
//! - `dispatch`: [`main`], the command line carried out.
//! - `cli`: flags as typed (clap derive).
//! - `config`: flags + `--config` file + environment, resolved.
//! - `agent`: `run`: membership and the control API, until SIGTERM/SIGINT.
//! - `control`: the unix-socket API (protocol, server, client).
//! - `dns`: DNS for the zone `mob.` (UDP and TCP), answered from the table.
//! - `replication`: the table task (I/O around the node core
//!   `mob_scheduler::Node`), its handle, the table file, anti-entropy.
//! - `supervisor_task`: the agent's side of supervision: the task that
//!   owns the providers' supervisor, starts and stops instances, and
//!   reports their states.
//! - `wall_clock`: unix milliseconds, the one clock of the agent.
//! - `log_service`: instance logs from whichever node runs them.
//! - `output`: tables and JSON for the CLI.
//! - `logging`: tracing setup.
//! - [`fuzzing`]: the decoders of what the agent reads from outside, for
//!   `cargo fuzz`.

mod agent;
mod cli;
mod config;
mod control;
mod dispatch;
mod dns;
mod events;
pub mod fuzzing;
mod http;
mod keys;
mod log_service;
mod logging;
mod output;
mod replication;
mod supervisor_task;
mod wall_clock;

pub use dispatch::main;
