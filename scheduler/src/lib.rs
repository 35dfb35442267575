//! mob's pure core, with no I/O and no tokio: the service spec, the hybrid
//! logical clock, the CRDT service table and its digests, placement, and
//! `reconcile`, the function every agent runs to decide which slots it
//! claims, starts, stops and releases.
//!
//! # Layout
//! - [`spec`]: [`ServiceSpec`], providers, restart policy, validation,
//!   dependency cycles.
//! - [`spec_file`]: TOML and JSON spec files, the seed's JSON included.
//! - [`ports`]: named ports, fixed or picked by the owner.
//! - [`interpolate`]: `${…}` in what an instance runs.
//! - [`check`]: health checks, and the rule that makes an instance
//!   `running` or `unhealthy`.
//! - [`hlc`]: [`Clock`] and [`Timestamp`].
//! - [`key`]: [`Key`], typed record keys: `svc/`, `claim/`, `status/`, `node/`, `key/`,
//!   `hist/`.
//! - [`record`]: the values stored under them.
//! - [`table`]: [`Table`], the LWW map, with its merge laws.
//! - [`digest`]: bucket digests for anti-entropy.
//! - [`gc`]: which records the table can forget.
//! - [`placement`]: rendezvous hashing with bounded loads, [`Members`].
//! - [`quorum`]: the majority and margin of at-most-once slots.
//! - [`mod@reconcile`]: `reconcile(table, members, me, now) -> Vec<Action>`.
//! - [`node`]: [`Node`], the state machine every agent runs: operator
//!   writes, merges, the reconcile gate, what to broadcast and save.
//! - [`services_view`]: what `services` and `status` show, from the table.
//! - [`discovery`]: the address and port of each instance that serves.
//! - [`update`]: rolling updates without a leader: whose turn it is, and
//!   when an update failed.
//! - [`history`]: the last versions of each service, and their outcomes.
//! - [`deploy_wait`]: when `deploy --wait` may say a deploy is done.
//! - [`hash`]: the stable hash everything that must agree uses.
#![forbid(unsafe_code)]

pub mod check;
pub mod deploy_wait;
pub mod digest;
pub mod discovery;
pub mod gc;
pub mod hash;
pub mod history;
pub mod hlc;
pub mod interpolate;
pub mod key;
pub mod node;
pub mod placement;
pub mod ports;
pub mod quorum;
pub mod reconcile;
pub mod record;
pub mod services_view;
pub mod spec;
pub mod spec_file;
pub mod table;
pub mod update;

pub use digest::Digest;
pub use hlc::{Clock, Timestamp};
pub use key::Key;
pub use node::{Effect, Input, Node, NodeConfig};
pub use placement::Members;
pub use reconcile::{Action, reconcile};
pub use record::{Record, Records, ServiceRecord, Value};
pub use spec::{ServiceSpec, SpecError};
pub use table::Table;
