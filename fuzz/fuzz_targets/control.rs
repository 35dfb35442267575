//! Control-socket frames: any bytes are refused, or decode (as a request
//! the agent reads, or a response the CLI reads) to something that
//! encodes and decodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mob_agent::fuzzing::control_frame(data));
