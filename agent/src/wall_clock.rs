//! The one wall clock of the agent: unix milliseconds, as the node core
//! and the table's timestamps count time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    ms_of(SystemTime::now())
}

/// `at` in unix milliseconds (0 before 1970, saturating far ahead).
pub(crate) fn ms_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
