//! The spec parser (TOML and JSON): any text is parsed or refused without
//! a panic, and what it accepts prints (as JSON and as TOML) to text that
//! parses back to the same specs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mob_scheduler::spec_file::{parse_specs, to_json, to_toml};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(specs) = parse_specs(text) else {
        return;
    };
    let json = to_json(&specs);
    assert_eq!(parse_specs(&json).as_ref().ok(), Some(&specs), "{json}");
    if let Ok(toml) = to_toml(&specs) {
        assert_eq!(parse_specs(&toml).as_ref().ok(), Some(&specs), "{toml}");
    }
});
