//! The agent's copy of the service table and how it spreads.
//!
//! - [`replica`]: the table, the clock, and the operations (deploy, remove,
//!   scale, merge), pure: time comes in as an argument.
//! - [`store`]: the table file: checksummed, written atomically.
//! - [`anti_entropy`]: digest exchange over a sealed stream.
//! - [`collector`]: when the table forgets old deletions and the records of
//!   nodes gone for good.
//! - [`task`]: the task that owns the replica; deltas out on the membership
//!   broadcast, anti-entropy rounds, debounced saves.

pub(crate) mod anti_entropy;
pub(crate) mod collector;
pub(crate) mod replica;
pub(crate) mod store;
pub(crate) mod task;
