//! Messages of an anti-entropy round, as a peer sends them inside the
//! sealed stream: refused, or decoded to something that encodes back to
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mob_agent::fuzzing::anti_entropy_frame(data));
