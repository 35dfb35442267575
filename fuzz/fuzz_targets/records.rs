//! Table records as they arrive from a peer (a delta, an anti-entropy
//! chunk, a push): decoding any bytes never panics; what decodes is
//! admitted or dropped, and merging it keeps the table's digest equal to
//! one computed afresh, and a second merge changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mob_scheduler::node::admission::admits;
use mob_scheduler::{Records, Table};

const NOW_MS: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(mut records) = postcard::from_bytes::<Records>(data) else {
        return;
    };
    records.retain(|(key, record)| admits(key, record, NOW_MS));
    let mut table = Table::new();
    table.merge_records(records.clone());
    let kept = table.digest();
    table.rebuild_digest();
    assert_eq!(kept, table.digest());
    assert!(table.merge_records(records).is_empty());
});
