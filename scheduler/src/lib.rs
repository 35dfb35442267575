//! mob's pure core, with no I/O and no tokio: the service spec, the hybrid
//! logical clock, the CRDT service table and its digests. Placement and
//! `reconcile` come with the scheduler issue.
//!
//! # Layout
//! - [`spec`]: [`ServiceSpec`], providers, restart policy, validation,
//!   dependency cycles.
//! - [`spec_file`]: TOML and JSON spec files, the seed's JSON included.
//! - [`hlc`]: [`Clock`] and [`Timestamp`].
//! - [`record`]: keys and values: `svc/`, `claim/`, `status/`, `node/`.
//! - [`table`]: [`Table`], the LWW map, with its merge laws.
//! - [`digest`]: bucket digests for anti-entropy.
//! - [`services_view`]: what `services` and `status` show, from the table.
//! - [`hash`]: the stable hash everything that must agree uses.
#![forbid(unsafe_code)]

pub mod digest;
pub mod hash;
pub mod hlc;
pub mod record;
pub mod services_view;
pub mod spec;
pub mod spec_file;
pub mod table;

pub use digest::Digest;
pub use hlc::{Clock, Timestamp};
pub use record::{Record, ServiceRecord, Value};
pub use spec::{ServiceSpec, SpecError};
pub use table::Table;
