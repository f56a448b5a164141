//! The structural checks alone (depth, value budget, a binary plist's object graph): they run
//! on unauthenticated bytes before any parser, so they must never panic or loop.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = magicpush_mdm::check_limits(data);
    // The same bytes as a binary plist whatever they start with.
    let mut binary = b"bplist00".to_vec();
    binary.extend_from_slice(data);
    let _ = magicpush_mdm::check_limits(&binary);
});
