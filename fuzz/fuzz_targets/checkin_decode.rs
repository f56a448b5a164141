//! A check-in body (`PUT /mdm/checkin`): decoded or refused, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = magicpush_checkin::mdm::decode_checkin(data);
});
