//! Runs a node's service instances as real processes or containers: it will
//! own the `Provider` trait with the `exec`, `shell` and `docker` providers,
//! the `Supervisor` and its restart policies, and per-instance log files.
//! It knows nothing of the cluster.
//!
//! Nothing lives here yet: the "supervisor" issue fills it.
