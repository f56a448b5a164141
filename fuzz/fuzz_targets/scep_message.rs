//! A SCEP PKIOperation message, answered by the pure handler with the fixed test CA. A
//! challenge store that knows the seed's challenge lets mutated seeds reach issuance.
#![no_main]
use std::sync::OnceLock;
use std::time::SystemTime;

use magicpush_scep::{handle, ChallengeStore, DeviceCa, NothingRevoked};

struct Fixed;

impl ChallengeStore for Fixed {
    fn consume(&mut self, challenge: &str, _now: SystemTime) -> Option<String> {
        magicpush_scep::ct_eq(challenge.as_bytes(), b"good-1").then(|| "enr-fuzz".to_string())
    }
}

fn ca() -> &'static DeviceCa {
    static CA: OnceLock<DeviceCa> = OnceLock::new();
    CA.get_or_init(|| {
        DeviceCa::from_pem(
            include_str!("../../checkin/scep/tests/data/ca.pem"),
            include_str!("../../checkin/scep/tests/data/ca.key.pem"),
        )
        .expect("the test CA loads")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = handle(
        data,
        ca(),
        &mut Fixed,
        &NothingRevoked,
        SystemTime::now(),
        &mut magicpush_scep::rand_core::OsRng,
    );
});
