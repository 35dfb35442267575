//! The persisted epoch: every start of an agent is a newer incarnation.
//!
//! The epoch is `max(persisted + 1, unix time in ms)`, so a restarted agent
//! beats its old self even when its data dir was wiped, and two starts within
//! one millisecond still differ.
//!
//! If the new epoch cannot be persisted (a full disk), the agent starts
//! with it all the same: the wall clock alone keeps the next start newer,
//! unless the clock is set back past this start before then.

use std::path::Path;

use crate::Error;

/// File name of the epoch inside the data dir.
pub const EPOCH_FILE: &str = "epoch";

/// This start's epoch.
#[derive(Debug)]
pub struct NextEpoch {
    /// The epoch.
    pub epoch: u64,
    /// Why it could not be persisted, if it could not.
    pub not_persisted: Option<Error>,
}

/// Computes the epoch for this start from the data dir's `epoch` file and
/// `now_ms`, and persists it (atomically). An unreadable epoch file is an
/// error; a failed write is not (see [`NextEpoch::not_persisted`]).
pub fn next_epoch(data_dir: &Path, now_ms: u64) -> Result<NextEpoch, Error> {
    let path = data_dir.join(EPOCH_FILE);
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            text.trim()
                .parse::<u64>()
                .map_err(|e| Error::BadEpochFile {
                    path: path.clone(),
                    why: e.to_string(),
                })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(Error::Io { path, source }),
    };
    let epoch = previous.map_or(0, |p| p.saturating_add(1)).max(now_ms);
    let not_persisted = store_epoch(data_dir, epoch).err();
    Ok(NextEpoch {
        epoch,
        not_persisted,
    })
}

/// Persists `epoch` (e.g. after foca renewed the identity) atomically:
/// temp file, fsync, rename.
pub fn store_epoch(data_dir: &Path, epoch: u64) -> Result<(), Error> {
    let path = data_dir.join(EPOCH_FILE);
    crate::atomic_file::write(&path, format!("{epoch}\n").as_bytes())
        .map_err(|source| Error::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_is_newer() {
        let dir = tempfile::tempdir().unwrap();
        let next = |now| next_epoch(dir.path(), now).unwrap().epoch;
        assert_eq!(next(1_000), 1_000);
        // Clock went backwards or didn't move: still newer.
        assert_eq!(next(500), 1_001);
        assert_eq!(next(1_001), 1_002);
        // Clock moved on: follow it.
        assert_eq!(next(9_000), 9_000);
    }

    #[test]
    fn an_epoch_that_cannot_be_persisted_is_used_all_the_same() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(EPOCH_FILE), "41\n").unwrap();
        // A directory where the temp file goes makes the write fail.
        std::fs::create_dir(dir.path().join("epoch.tmp")).unwrap();
        let next = next_epoch(dir.path(), 7).unwrap();
        assert_eq!(next.epoch, 42);
        assert!(next.not_persisted.is_some());
    }

    #[test]
    fn corrupt_epoch_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(EPOCH_FILE), "xyz").unwrap();
        let err = next_epoch(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("epoch"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(EPOCH_FILE)).unwrap(),
            "xyz"
        );
    }
}
