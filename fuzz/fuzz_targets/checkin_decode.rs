//! A check-in body (`PUT /mdm/checkin`): decoded or refused, never a panic. And wherever the
//! one-pass scanner (`mdm::scan_xml`) reads a body, the plist parser reads the same dictionary.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = magicpush_mdm::decode_checkin(data);
    if let Some(fast) = magicpush_mdm::scan_xml(data) {
        match plist::Value::from_reader_xml(data) {
            Ok(plist::Value::Dictionary(full)) => assert_eq!(fast, full),
            other => panic!("the fast path read a body the parser reads as {other:?}"),
        }
    }
});
