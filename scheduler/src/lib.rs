//! mob's pure core, with no I/O and no tokio: it will own the service spec
//! (parse and validate), the hybrid logical clock, the CRDT service table and
//! its digests, rendezvous placement, and `reconcile(table, members, me, now)`.
//!
//! Nothing lives here yet: the "table" and "scheduler" issues fill it.
#![forbid(unsafe_code)]
