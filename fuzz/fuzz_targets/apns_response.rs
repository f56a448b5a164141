//! An APNs answer: status (first two bytes) and body, classified into a push outcome.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]) % 600;
    let _ = magicpush_engine::apns::response::classify(status, Some("apns-id"), &data[2..]);
    let _ = magicpush_engine::apns::response::parse_error_body(&data[2..]);
});
