//! `Mdm-Signature`: the header's base64 and the CMS SignedData it holds, over a body. The
//! first byte chooses how the rest is split into signature and body.
#![no_main]
use magicpush_server::identity::signature::{decode_header, verify_detached};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (usize::from(split) * rest.len()) / 255;
    let (cms, body) = rest.split_at(at.min(rest.len()));
    let _ = verify_detached(cms, body);
    let _ = verify_detached(rest, b"");
    if let Ok(der) = decode_header(rest) {
        let _ = verify_detached(&der, body);
    }
});
