//! Whether a test's outside requirement (root, namespaces, a library) is
//! met: a test without it skips with a note, unless CI set the variable
//! that says it must run.

/// `true` when `available`; otherwise a note and `false` (the test skips),
/// or a panic when the environment variable `require` is set.
pub fn met(available: bool, require: &str, missing: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        std::env::var_os(require).is_none(),
        "{require} is set but {missing}"
    );
    eprintln!("skipped: {missing}");
    false
}
