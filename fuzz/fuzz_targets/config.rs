//! The `--config` file: any text resolves to a configuration or is refused
//! with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mob_agent::fuzzing::config_file(data));
