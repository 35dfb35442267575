//! The decoders of what the agent reads from outside, as the `cargo fuzz`
//! targets in `fuzz/` call them. Each takes any bytes and panics only where
//! a property the agent relies on fails: a crash is a bug. Not an API.

/// A control-socket frame, as the agent decodes a request and the CLI a
/// response: refused, or decoded to something that encodes and decodes
/// again.
pub fn control_frame(bytes: &[u8]) {
    use crate::control::protocol::{Request, Response};
    if let Ok(request) = postcard::from_bytes::<Request>(bytes) {
        let encoded = postcard::to_stdvec(&request).unwrap_or_default();
        assert!(
            postcard::from_bytes::<Request>(&encoded).is_ok(),
            "a request that does not decode once encoded"
        );
    }
    if let Ok(response) = postcard::from_bytes::<Response>(bytes) {
        let encoded = postcard::to_stdvec(&response).unwrap_or_default();
        assert!(
            postcard::from_bytes::<Response>(&encoded).is_ok(),
            "a response that does not decode once encoded"
        );
    }
}

/// A message of an anti-entropy round, as a peer sends it inside the
/// sealed stream: refused, or decoded to something that encodes back to
/// itself.
pub fn anti_entropy_frame(bytes: &[u8]) {
    crate::replication::anti_entropy::fuzz_frame(bytes);
}

/// A DNS query (UDP or TCP): dropped, or answered from a small table with
/// an answer that encodes.
pub fn dns_query(bytes: &[u8]) {
    crate::dns::fuzz_query(bytes);
}

/// A `--config` file: resolved to a configuration or refused with an
/// error, never a panic. (Seeds named by host, key and token files are
/// left out: they would touch the machine.)
pub fn config_file(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let dir = std::env::temp_dir().join("mob-fuzz-config");
    let _ = crate::config::AgentConfig::resolve_text(text, &dir);
}
