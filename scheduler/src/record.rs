//! The records of the table: values and their kinds, under a
//! [`Key`].
//!
//! | key | value | written by |
//! |---|---|---|
//! | `svc/<name>` | [`ServiceRecord`] (spec, or removed) | any node (CLI) |
//! | `claim/<name>/<slot>` | [`Claim`] | the claiming node |
//! | `status/<node>/<name>/<slot>` | [`Status`] | the owner only |
//! | `node/<node>` | [`NodeRecord`] | that node only |
//! | `key/<fingerprint>` | [`KeyRecord`] (or removed) | any node (CLI) |
//! | `hist/<name>` | [`History`] | whoever writes `svc/<name>` |

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::history::History;
use crate::hlc::Timestamp;
use crate::key::Key;
use crate::spec::{ProviderKind, ServiceSpec};

/// A timestamped value: one LWW register of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When and by whom it was written.
    pub ts: Timestamp,
    /// What was written.
    pub value: Value,
}

/// Records with their keys, as they travel and merge. Shared: a record
/// merged into many tables (the simulation's thousand nodes) is one value.
pub type Records = Vec<(Key, Arc<Record>)>;

impl Value {
    /// Whether this value may be stored under `key`: each kind of key
    /// takes its own kind of value, and a tombstone deletes a claim, a
    /// status or a node record (a service is removed by a spec-less
    /// [`ServiceRecord`], which keeps its version).
    pub fn fits(&self, key: &Key) -> bool {
        matches!(
            (key, self),
            (Key::Service(_), Value::Service(_))
                | (Key::Claim(..), Value::Claim(_) | Value::Tombstone)
                | (Key::Status(..), Value::Status(_) | Value::Tombstone)
                | (Key::Node(_), Value::Node(_) | Value::Tombstone)
                | (Key::ClusterKey(_), Value::ClusterKey(_) | Value::Tombstone)
                | (Key::History(_), Value::History(_) | Value::Tombstone)
        )
    }
}

/// The value of a record.
// (Records live behind an `Arc`, one copy per write: the size of the
// largest variant, a service's spec, costs nothing per table.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// `svc/`.
    Service(ServiceRecord),
    /// `claim/`.
    Claim(Claim),
    /// `status/`.
    Status(Status),
    /// `node/`.
    Node(NodeRecord),
    /// A deleted record of any other kind (kept until garbage-collected so
    /// the deletion wins over older copies).
    Tombstone,
    /// `key/` (the variants before keep their numbers on the wire and in
    /// the table file).
    ClusterKey(KeyRecord),
    /// `hist/`.
    History(History),
}

/// A service, or the tombstone of a removed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Grows by one on every deploy, scale or remove of this name.
    pub version: u64,
    /// The spec; `None` once removed.
    pub spec: Option<ServiceSpec>,
    /// The first version whose instance spec its instances run now: a
    /// change that doesn't reach the process (a scale, a new update
    /// policy) keeps it, so a status at or after it is up to date (see
    /// [`crate::update`]).
    pub instance_since: u64,
}

/// Who owns a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Owner's node name; `None` when released.
    pub owner: Option<String>,
    /// Nodes where the slot spent its restart budget (for `version`).
    pub failed_on: Vec<String>,
    /// Service version `failed_on` applies to; a redeploy starts afresh.
    pub version: u64,
}

/// State of an instance, as its supervisor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// Not placed or not started yet.
    Pending,
    /// Being started.
    Starting,
    /// Running.
    Running,
    /// Waiting to restart after an exit.
    Backoff,
    /// Restart budget spent.
    Failed,
    /// Stopped on purpose, or exited and not restarted.
    Stopped,
    /// Its node is down; shown until the slot runs elsewhere (views only).
    Lost,
    /// Up, but its health check failed `failures` times in a row: being
    /// stopped, then restarted by its policy.
    Unhealthy,
}

impl InstanceState {
    /// Starting, running or waiting to restart: a process exists or will.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Running | Self::Backoff | Self::Unhealthy
        )
    }

    /// The lowercase name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Backoff => "backoff",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Lost => "lost",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// `status/<node>/<name>/<slot>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Current state.
    pub state: InstanceState,
    /// Process id (or container's init pid), while running.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u32,
    /// Since when (unix ms) it is in this state.
    pub since_ms: u64,
    /// Exit code of the last exit, if any.
    pub last_exit: Option<i32>,
    /// Signal that ended the last run, if any.
    pub last_signal: Option<i32>,
    /// Why the last run ended badly, as the views show it (`last start
    /// failed: …` while starts fail, `health check failed: …` after a stop
    /// as unhealthy); at most [`MAX_ERROR_LEN`] bytes.
    pub last_error: Option<String>,
    /// Version of the service spec the instance runs.
    pub version: u64,
    /// When (unix ms) this node first started an instance of this
    /// instance spec for the slot (restarts by policy keep it).
    pub started_ms: u64,
    /// The instance ran healthy for the update's `min_healthy_time` since
    /// `started_ms` (kept by the node core from the reports).
    pub proven: bool,
    /// The IP its node advertises.
    pub ip: Option<std::net::IpAddr>,
    /// Its host ports, by name.
    pub ports: BTreeMap<String, u16>,
}

/// Longest [`Status::last_error`] kept in the table.
pub const MAX_ERROR_LEN: usize = 256;

impl NodeRecord {
    /// Draining, or leaving: takes no slots, hands its slots over.
    pub fn is_draining(&self) -> bool {
        self.draining || self.leaving
    }
}

/// `key/<fingerprint>`: a key of the cluster's keyring, installed by
/// `keys install` or made the primary by `keys use`; `keys remove` writes
/// a tombstone. The primary is the key of the newest record with
/// `primary` set. Key holders may read it: they can seal anything already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key, base64 as `mob-agent keygen` prints it.
    pub key: String,
    /// Written by `keys use`: every agent seals with it.
    pub primary: bool,
}

impl KeyRecord {
    /// Whether it has the shape of a key under a fingerprint: 16 lowercase
    /// hex digits, and 44 base64 characters (the agent checks that the two
    /// match).
    pub fn is_well_formed(&self, fingerprint: &str) -> bool {
        fingerprint.len() == 16
            && fingerprint
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && self.key.len() == 44
            && self
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    }
}

/// `node/<node>`: what a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Gossip address the node advertises (a restarted agent rejoins
    /// through the addresses its table remembers).
    pub addr: String,
    /// Providers available on the node.
    pub providers: Vec<ProviderKind>,
    /// Tags for placement constraints.
    pub tags: BTreeMap<String, String>,
    /// Whether the node is draining.
    pub draining: bool,
    /// When draining began (unix ms); 0 when not draining.
    pub drain_started_ms: u64,
    /// The agent is shutting down gracefully: handled like a drain, but not
    /// kept when the agent starts again (an operator's `drain` is).
    pub leaving: bool,
    /// mob version of the agent.
    pub version: String,
    /// When the agent started (unix ms).
    pub started_at_ms: u64,
    /// Fingerprints of the keys the agent holds, its primary first.
    pub keys: Vec<String>,
}
