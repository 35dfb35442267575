//! Control requests and responses. A request carries [`PROTOCOL_VERSION`];
//! the agent answers a different version with an error, never a crash.

use mob_membership::{MemberView, StatsSnapshot};
use serde::{Deserialize, Serialize};

/// Bumped on every incompatible change of [`Request`] or [`Response`].
pub(crate) const PROTOCOL_VERSION: u16 = 1;
/// Largest control frame either side accepts.
pub(crate) const MAX_FRAME: usize = 16 * 1024 * 1024;

/// A request from the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    /// [`PROTOCOL_VERSION`] of the client.
    pub(crate) version: u16,
    /// What is asked.
    pub(crate) body: RequestBody,
}

/// What a request asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RequestBody {
    /// The member list, this node first.
    Members,
    /// Counters.
    Stats,
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Response {
    /// See [`RequestBody::Members`].
    Members(Vec<MemberView>),
    /// See [`RequestBody::Stats`].
    Stats(StatsReport),
    /// The request failed; the message says why.
    Error(String),
}

/// Counters of one agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StatsReport {
    /// Node name.
    pub(crate) node: String,
    /// Seconds since the agent started.
    pub(crate) uptime_secs: f64,
    /// Membership counters.
    pub(crate) membership: StatsSnapshot,
}
