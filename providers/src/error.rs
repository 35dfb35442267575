//! Errors of providers and the supervisor.

/// Why an instance could not be started or stopped. Nothing was started
/// when `start` returns one of these.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The service's parameters can't be run (no command, unknown user).
    #[error("service {service}: {message}")]
    BadParams {
        /// Service name.
        service: String,
        /// What is wrong.
        message: String,
    },
    /// The provider is not available on this node (e.g. no Docker Engine).
    #[error("provider {0} is not available on this node")]
    Unavailable(String),
    /// Spawning the process failed.
    #[error("service {service}: cannot start {program}: {source}")]
    Spawn {
        /// Service name.
        service: String,
        /// Program that failed to start.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Its ports could not be had.
    #[error("service {service}: {source}")]
    Port {
        /// Service name.
        service: String,
        /// Which port, and why.
        source: crate::ports::PortError,
    },
    /// A `${…}` could not be interpolated (validation prevents it).
    #[error("service {service}: {message}")]
    Interpolate {
        /// Service name.
        service: String,
        /// What is wrong.
        message: String,
    },
    /// The instance's log could not be opened.
    #[error("service {service}: cannot open its log: {source}")]
    Log {
        /// Service name.
        service: String,
        /// The OS error.
        source: std::io::Error,
    },
}
