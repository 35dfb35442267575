//! DNS queries: dropped, or answered (over UDP and TCP) from a small table
//! with an answer that encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mob_agent::fuzzing::dns_query(data));
