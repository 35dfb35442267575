//! The agent's side of the replicated table: I/O around the node core
//! (`mob_scheduler::Node`), which takes every decision.
//!
//! - [`handle`]: [`handle::TableHandle`], how the control API and the
//!   anti-entropy streams reach the table task.
//! - [`task`]: the table task: one select loop turning sockets, channels,
//!   timers and file results into the node's inputs, and its effects into
//!   broadcasts, rounds, supervisor commands, saves and answers.
//! - [`anti_entropy`]: the digest exchange over a sealed stream.
//! - [`store`]: the table file: checksummed, written atomically.

pub(crate) mod anti_entropy;
pub(crate) mod handle;
pub(crate) mod store;
pub(crate) mod task;
