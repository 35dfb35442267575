//! An opened datagram's payload, as the membership driver takes it: the
//! tag byte, then foca's decoder (a SWIM message) or a leave notice.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mob_membership::fuzzing::datagram_payload(data));
