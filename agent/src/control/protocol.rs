//! Control requests and responses. A request carries [`PROTOCOL_VERSION`];
//! the agent answers a different version with an error, never a crash.

use mob_membership::{MemberView, StatsSnapshot};
use mob_scheduler::ServiceSpec;
use mob_scheduler::history::History;
use mob_scheduler::services_view::ServiceView;
use serde::{Deserialize, Serialize};

use crate::events::EventLine;
use crate::log_service::LogRequest;
use mob_scheduler::node::Deployed;
use mob_scheduler::node::keyring::KeyView;

/// Bumped on every incompatible change of [`Request`] or [`Response`].
pub(crate) const PROTOCOL_VERSION: u16 = 11;
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
    /// Add or update services (already parsed and validated by the CLI;
    /// the agent validates again).
    Deploy(Vec<ServiceSpec>),
    /// Remove a service.
    Remove(String),
    /// Set a service's replicas.
    Scale(String, u32),
    /// `stop`, `start`, `restart` or `rollback` of a service.
    Verb(String, Verb),
    /// A service's kept versions.
    History(String),
    /// Every live service with its slots.
    Services,
    /// Mark this node draining (`true`) or eligible again (`false`).
    Drain(bool),
    /// The cluster's keyring: list, install, use, remove.
    Keys(KeysRequest),
    /// Log lines of an instance: answered by `LogLines` frames, then
    /// `LogEnd` (never, when following, until the client hangs up).
    Logs(LogRequest),
    /// The agent's events: the recent ones, then each as it happens, as
    /// `Event` frames until the client hangs up.
    Events,
    /// Announce this agent to other agents (`join ADDR...`).
    Join(Vec<std::net::SocketAddr>),
    /// Mark another node draining (`true`) or eligible again (`drain
    /// --node`).
    DrainNode(String, bool),
    /// Forget a down or left node now (`force-leave`).
    ForceLeave(String),
}

/// A verb on one service that writes a new version of it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Verb {
    /// Stop every instance, keep the spec.
    Stop,
    /// Run a stopped service again.
    Start,
    /// Restart every instance by the update policy, or one slot's.
    Restart(Option<u32>),
    /// Write a kept version (by default the previous one) again.
    Rollback(Option<u64>),
}

/// What `keys` asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum KeysRequest {
    /// Which keys there are and who holds them.
    List,
    /// Every agent accepts this key (base64).
    Install(String),
    /// Every agent seals with the key of this fingerprint.
    Use(String),
    /// No agent accepts the key of this fingerprint.
    Remove(String),
}

/// A member, with what this agent's table says of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MemberReport {
    /// As membership sees it.
    pub(crate) member: MemberView,
    /// Slots it holds (its claims in the table).
    pub(crate) slots: usize,
    /// Its clock's offset from this agent's (ms, positive: ahead), from
    /// its datagrams of the last minute; 0 for this agent itself.
    pub(crate) clock_offset_ms: Option<i64>,
    /// Its node record in this agent's table (tags, providers, draining,
    /// version), once it reached this agent.
    #[serde(default)]
    pub(crate) record: Option<mob_scheduler::record::NodeRecord>,
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Response {
    /// See [`RequestBody::Members`].
    Members(Vec<MemberReport>),
    /// See [`RequestBody::Stats`].
    Stats(StatsReport),
    /// See [`RequestBody::Deploy`]: per service, the version written.
    Deployed(Vec<Deployed>),
    /// See [`RequestBody::Remove`], [`RequestBody::Scale`] and
    /// [`RequestBody::Verb`]: the version written.
    Written(u64),
    /// See [`RequestBody::Services`].
    Services(Vec<ServiceView>),
    /// See [`RequestBody::History`]; `None`: no versions kept.
    History(Option<History>),
    /// See [`KeysRequest::List`]: the live members, and the keys.
    Keys(Vec<String>, Vec<KeyView>),
    /// Done.
    Ok,
    /// Some log lines.
    LogLines(Vec<String>),
    /// No more log lines.
    LogEnd,
    /// An event (see [`RequestBody::Events`]).
    Event(Box<EventLine>),
    /// See [`RequestBody::Join`]: the agents that answered.
    Joined(Vec<String>),
    /// Events this client fell behind by and missed.
    EventsMissed(u64),
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
    /// Records in the table (tombstones included).
    pub(crate) table_records: u64,
    /// Broadcast deltas that failed to decode.
    pub(crate) deltas_rejected: u64,
    /// Anti-entropy rounds this node initiated that completed.
    pub(crate) anti_entropy_rounds: u64,
    /// Anti-entropy rounds this node initiated that failed.
    pub(crate) anti_entropy_failures: u64,
    /// Broadcast deltas received and decoded.
    pub(crate) deltas_received: u64,
    /// Records from peers dropped as malformed.
    pub(crate) records_rejected: u64,
    /// Records forgotten by garbage collection.
    pub(crate) table_forgotten: u64,
    /// Saves of the table file that failed (a full disk, say).
    #[serde(default)]
    pub(crate) table_save_failures: u64,
    /// DNS queries answered.
    #[serde(default)]
    pub(crate) dns_queries: u64,
    /// DNS packets dropped as malformed.
    #[serde(default)]
    pub(crate) dns_malformed: u64,
}
