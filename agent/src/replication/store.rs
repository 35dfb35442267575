//! The table file, `DATA_DIR/table`:
//!
//! ```text
//! "MOBT" | version (3) | payload length (u64 LE) | FNV-1a 64 of payload (u64 LE) | postcard(Table)
//! ```
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory).
//! A file that fails any check is never overwritten: the agent refuses to
//! start, unless told to reset, in which case the file is moved aside.

use std::path::{Path, PathBuf};

use mob_scheduler::Table;
use mob_scheduler::hash::stable_hash;

const MAGIC: &[u8; 4] = b"MOBT";
/// 3: node records list their keys, and `key/` records exist.
const VERSION: u8 = 6;
const HEADER: usize = 4 + 1 + 8 + 8;
/// File name in the data dir.
pub(crate) const TABLE_FILE: &str = "table";

/// Why the table file can't be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The file is damaged; it was left as it is.
    #[error(
        "table file {path} is unreadable ({why}); refusing to start so nothing is lost. Move the file away, or start with --reset-table to set it aside and refill the table from peers"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What check failed.
        why: String,
    },
    /// Reading or writing failed.
    #[error("table file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Encodes a table (a [`Table`], or one with writes pending beside it)
/// into the file format.
pub(crate) fn encode(table: &impl serde::Serialize) -> Vec<u8> {
    let payload = postcard::to_stdvec(table).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&stable_hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes the file format.
pub(crate) fn decode(bytes: &[u8]) -> Result<Table, String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "truncated: {} bytes, header alone is {HEADER}",
            bytes.len()
        ));
    }
    if &bytes[..4] != MAGIC {
        return Err("not a mob table file (bad magic)".into());
    }
    if bytes[4] != VERSION {
        return Err(format!(
            "format version {}, this build reads version {VERSION} only (no conversion between development builds yet)",
            bytes[4]
        ));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let (len, sum) = (word(5), word(13));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(format!(
            "truncated: payload is {} bytes, header says {len}",
            payload.len()
        ));
    }
    if stable_hash(payload) != sum {
        return Err("checksum mismatch".into());
    }
    let mut table: Table =
        postcard::from_bytes(payload).map_err(|e| format!("undecodable: {e}"))?;
    table.rebuild_digest();
    Ok(table)
}

/// Loads the table; a missing file is an empty table.
pub(crate) fn load(dir: &Path) -> Result<Table, StoreError> {
    let path = dir.join(TABLE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes).map_err(|why| StoreError::Corrupt { path, why }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Table::new()),
        Err(source) => Err(StoreError::Io { path, source }),
    }
}

/// Moves a damaged table file aside (`table.corrupt.<unix ms>`); returns
/// where it went.
pub(crate) fn set_aside(dir: &Path, now_ms: u64) -> Result<PathBuf, StoreError> {
    let path = dir.join(TABLE_FILE);
    let aside = dir.join(format!("{TABLE_FILE}.corrupt.{now_ms}"));
    std::fs::rename(&path, &aside).map_err(|source| StoreError::Io { path, source })?;
    Ok(aside)
}

/// Writes encoded bytes atomically, mode 0600: the table holds the
/// cluster's keys.
pub(crate) fn save(dir: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let path = dir.join(TABLE_FILE);
    mob_membership::atomic_file::write_private(&path, bytes)
        .map_err(|source| StoreError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mob_scheduler::record::{ServiceRecord, Value};
    use mob_scheduler::{Record, Timestamp};

    fn table() -> Table {
        Table::from_records((0..20).map(|i| {
            (
                mob_scheduler::Key::Service(format!("s{i}").into()),
                Record {
                    ts: Timestamp {
                        wall_ms: i,
                        counter: 0,
                        node: "n".into(),
                    },
                    value: Value::Service(ServiceRecord {
                        version: i,
                        instance_since: i,
                        spec: None,
                    }),
                },
            )
        }))
    }

    #[test]
    fn save_and_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let t = table();
        save(dir.path(), &encode(&t)).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.digest(), t.digest());
    }

    #[test]
    fn every_truncation_and_any_flipped_byte_is_refused() {
        let bytes = encode(&table());
        for cut in [0, 3, HEADER - 1, HEADER, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in [0, 4, 6, 14, HEADER, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[at] ^= 0x40;
            assert!(decode(&b).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn corrupt_file_error_names_it_and_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TABLE_FILE);
        std::fs::write(&path, b"MOBT garbage").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("--reset-table"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"MOBT garbage");
        let aside = set_aside(dir.path(), 42).unwrap();
        assert_eq!(std::fs::read(aside).unwrap(), b"MOBT garbage");
        assert!(load(dir.path()).unwrap().is_empty());
    }
}
