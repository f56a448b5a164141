//! A command report body (`PUT /mdm/server`), and the same bytes through the dispatching
//! decoder (`PUT /mdm`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = magicpush_mdm::decode_report(data);
    let _ = magicpush_mdm::decode(data);
});
