//! Every spec example in README.md (fences marked ```toml spec or
//! ```json spec) parses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use mob_scheduler::spec_file::parse_specs;

#[test]
fn every_readme_spec_example_parses() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut examples = 0;
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if !(line.starts_with("```") && line.ends_with(" spec")) {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let text = block.join("\n");
        let specs =
            parse_specs(&text).unwrap_or_else(|e| panic!("README example fails: {e}\n{text}"));
        assert!(!specs.is_empty());
        examples += 1;
    }
    assert!(
        examples >= 3,
        "found only {examples} spec examples in README.md"
    );
}
