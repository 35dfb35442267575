//! mob's membership: SWIM failure detection with [foca] over sealed UDP, a
//! push-pull over sealed TCP that heals partitions in one round trip, and a
//! best-effort broadcast channel. It knows nothing of services.
//!
//! Every datagram and stream frame is sealed with the cluster key
//! ([`Envelope`]); anything that fails to open is dropped and counted, never
//! trusted.
//!
//! # Layout
//! - [`identity`]: [`NodeId`] `{ name, addr, epoch }` and its foca identity.
//! - [`atomic_file`]: files replaced whole or not at all.
//! - [`epoch`]: the epoch persisted in the data dir, newer on every start.
//! - [`freshness`]: the send-time window and seen nonces that refuse replayed datagrams.
//! - [`key`]: the 32-byte [`ClusterKey`].
//! - [`keyring`]: the primary key and the others that open, and their file.
//! - [`envelope`]: seal and open, `MOB | version | nonce | AEAD`.
//! - [`peer_keys`]: the keys each peer holds, for sealing to it.
//! - [`timings`]: every timing as a config value, LAN defaults.
//! - [`member`]: [`MemberView`], [`MemberState`], [`MemberEvent`].
//! - `view`: foca's state turned into one event per change.
//! - `broadcast`: foca's custom-broadcast handler.
//! - [`stream`]: sealed, length-delimited TCP streams with a channel hello.
//! - `push_pull`: the membership exchange over a stream.
//! - `driver`: the one task that owns foca, its timers and its socket.
//! - [`membership`]: [`Membership`], the handle the agent holds.
//! - [`stats`]: counters such as rejected packets.
//! - [`fuzzing`]: the driver's decoding of an opened datagram, for the fuzz
//!   target.

pub mod atomic_file;
pub mod envelope;
pub mod epoch;
mod error;
pub mod freshness;
pub mod fuzzing;
pub mod identity;
pub mod key;
pub mod keyring;
pub mod member;
pub mod membership;
pub mod peer_keys;
pub mod stats;
pub mod stream;
pub mod timings;

mod broadcast;
mod driver;
mod push_pull;
mod reject_log;
mod view;

pub use broadcast::MAX_BROADCAST;
pub use envelope::Envelope;
pub use error::Error;
pub use identity::NodeId;
pub use key::{ClusterKey, KeyId};
pub use keyring::Keyring;
pub use member::{MemberEvent, MemberState, MemberView};
pub use membership::{Channels, Membership, MembershipConfig};
pub use stats::{Rejected, StatsSnapshot};
pub use stream::{Channel, IncomingStream, SealedStream};
pub use timings::Timings;
