//! The decoders past the envelope, as the `cargo fuzz` target in `fuzz/`
//! calls them. Not an API.

/// An opened datagram's payload, as the driver takes it: the tag byte,
/// then foca's decoder (a SWIM message) or a leave notice. Any bytes are
/// taken or refused; a panic is a bug.
pub fn datagram_payload(plain: &[u8]) {
    crate::driver::fuzz_payload(plain);
}
