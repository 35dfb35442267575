//! Errors of the membership layer.

use std::path::PathBuf;

/// What can go wrong starting or using membership. Each variant leaves the
/// running membership (if any) unchanged unless it says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cluster key given as text is malformed.
    #[error("bad cluster key: {0}")]
    BadKey(String),
    /// A key file exists but doesn't hold a key.
    #[error("bad key file {path}: {why}")]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The epoch file in the data dir is corrupt; it is left untouched.
    #[error("bad epoch file {path}: {why}")]
    BadEpochFile {
        /// The epoch file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Binding the gossip address failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A timing or size in the configuration is out of range.
    #[error("invalid membership config: {0}")]
    Config(String),
    /// A custom broadcast is larger than a datagram can carry. Nothing was
    /// queued; send it over a stream instead.
    #[error("broadcast of {size} bytes exceeds the limit of {limit}")]
    BroadcastTooLarge {
        /// Size of the payload.
        size: usize,
        /// [`crate::MAX_BROADCAST`].
        limit: usize,
    },
    /// Too many broadcasts are still queued for gossip. Nothing was
    /// queued; spread the data another way (anti-entropy).
    #[error("broadcast backlog full ({0} items queued)")]
    BroadcastBacklogFull(usize),
    /// The membership task has stopped (the agent is shutting down).
    #[error("membership is shut down")]
    Stopped,
    /// A stream peer misbehaved or the connection failed.
    #[error("stream: {0}")]
    Stream(String),
    /// A stream frame failed to open or decode (wrong key, damage, garbage).
    /// Counted, and logged at most once a second per peer where it
    /// happens: callers need not log it again.
    #[error("stream frame rejected: {0}")]
    Rejected(String),
}

impl Error {
    /// Whether this is a stream frame that failed to open or decode:
    /// counted and logged (rate-limited) where it was read, so callers
    /// need not log it again.
    pub fn is_rejected_frame(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }
}
