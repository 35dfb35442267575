//! The envelope: opening any bytes never panics, and what is sealed opens
//! to itself (as a message and as a datagram).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mob_membership::freshness::ReplayGuard;
use mob_membership::{ClusterKey, Envelope};

const NOW_MS: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = ClusterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=") else {
        return;
    };
    let envelope = Envelope::new(&key);
    let _ = envelope.open(data, 64 * 1024);
    let mut guard = ReplayGuard::default();
    let _ = envelope.open_datagram(data, 64 * 1024, NOW_MS, &mut guard);

    let sealed = envelope.seal(data);
    assert_eq!(
        envelope.open(&sealed, usize::MAX).ok().as_deref(),
        Some(data)
    );
    let datagram = envelope.seal_datagram(data, NOW_MS, &[]);
    let mut guard = ReplayGuard::default();
    let opened = envelope
        .open_datagram(&datagram, usize::MAX, NOW_MS, &mut guard)
        .expect("a datagram sealed here opens");
    assert_eq!(opened.payload, data);
    assert_eq!(opened.sent_ms, NOW_MS);
    assert!(opened.fresh.is_ok());
    // The same datagram again is a replay.
    let again = envelope.open_datagram(&datagram, usize::MAX, NOW_MS, &mut guard);
    assert!(again.is_ok_and(|d| d.fresh.is_err()));
});
