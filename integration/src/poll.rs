//! Polling with a deadline: the only way tests wait.

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Ok(true)` or `timeout`
/// passes. Errors from `check` are remembered and reported on timeout.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match check() {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_error
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
