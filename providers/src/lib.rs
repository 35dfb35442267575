//! Runs a node's service instances as real processes or containers,
//! restarts them by policy, captures their logs, and leaves nothing
//! orphaned. It knows nothing of the cluster.
//!
//! # Layout
//! - [`provider`]: the [`Provider`] trait and [`InstanceSpec`].
//! - [`exec`], [`shell`], [`docker`]: the three providers. `exec` holds the
//!   crate's one `unsafe` block (setsid + parent-death signal in `pre_exec`).
//! - [`restart`]: restart policy and backoff, pure over time values.
//! - [`lifecycle`]: an instance's state machine, pure.
//! - [`probe`]: one probe of a health check (HTTP, TCP or a command).
//! - [`supervisor`]: [`Supervisor`], which runs instances through their
//!   lifecycle and reports transitions.
//! - [`logs`]: per-instance log files, rotation, tail and follow.
//! - [`leftovers`]: processes an earlier run of the agent left behind.
//! - [`ports`]: host ports of the instances, fixed or picked from a range.

pub mod docker;
mod error;
pub mod exec;
pub mod leftovers;
pub mod lifecycle;
pub mod logs;
pub mod ports;
pub mod probe;
pub mod provider;
pub mod restart;
pub mod shell;
pub mod supervisor;

pub use error::ProviderError;
pub use provider::{InstanceSpec, Provider};
pub use supervisor::{Providers, Report, Supervisor};
