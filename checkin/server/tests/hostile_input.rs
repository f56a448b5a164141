//! Hostile bodies cost at most a small, fixed multiple of their size: the peak memory that
//! decoding one allocates is measured here with a counting allocator (this test binary's
//! global allocator) and must stay within 32 × the body's length (plus 256 KiB: any body may hold 1,024 values).

use std::sync::Mutex;

use magicpush_mdm::{self as mdm, DecodeError};
use peak_alloc::PeakAlloc;

/// Counts live bytes and their high-water mark (this test binary only).
#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;
/// One measurement at a time (the test harness runs tests on several threads).
static MEASURING: Mutex<()> = Mutex::new(());

/// Peak bytes allocated above the starting point while decoding `body`, and the result.
fn measure(body: &[u8]) -> (usize, Result<mdm::Message, DecodeError>) {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let base = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let result = mdm::decode(body);
    let peak = ALLOC.peak_usage().saturating_sub(base);
    (peak, result)
}

/// A binary plist dictionary {"a": [v, v, …]} whose array references one `true` `n` times.
fn shared_scalar(n: usize) -> Vec<u8> {
    binary_array_of_shared(n, 0)
}

/// As [`shared_scalar`], with `padding` unused bytes after each... (a body 8 bytes a value).
fn shared_scalar_padded(n: usize) -> Vec<u8> {
    binary_array_of_shared(n, 7 * n)
}

fn binary_array_of_shared(n: usize, padding: usize) -> Vec<u8> {
    // Objects: 0 dict {1: 2}, 1 "a", 2 array of n × ref 3, 3 true. 4-byte refs and offsets.
    let mut body = b"bplist00".to_vec();
    let mut offsets = Vec::new();
    offsets.push(body.len() as u32);
    body.extend_from_slice(&[0xD1, 0, 0, 0, 1, 0, 0, 0, 2]);
    offsets.push(body.len() as u32);
    body.extend_from_slice(&[0x51, b'a']);
    offsets.push(body.len() as u32);
    body.extend_from_slice(&[0xAF, 0x12]);
    body.extend_from_slice(&(n as u32).to_be_bytes());
    for _ in 0..n {
        body.extend_from_slice(&3u32.to_be_bytes());
    }
    offsets.push(body.len() as u32);
    body.push(0x09); // true
    body.extend(std::iter::repeat_n(0u8, padding));
    let table = body.len() as u64;
    for o in offsets {
        body.extend_from_slice(&o.to_be_bytes());
    }
    let mut trailer = vec![0u8; 6];
    trailer.extend_from_slice(&[4, 4]);
    trailer.extend_from_slice(&4u64.to_be_bytes());
    trailer.extend_from_slice(&0u64.to_be_bytes());
    trailer.extend_from_slice(&table.to_be_bytes());
    body.extend_from_slice(&trailer);
    body
}

fn check_in(extra: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict>\
         <key>MessageType</key><string>Authenticate</string>\
         <key>UDID</key><string>U1</string>\
         <key>Topic</key><string>com.apple.mgmt.External.x</string>{extra}</dict></plist>"
    )
}

#[test]
fn bombs_and_big_bodies_cost_at_most_32_times_their_size() {
    const MIB: usize = 1 << 20;
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "binary, one array referencing itself a million times",
            magicpush_fixtures::plists::self_referencing_bplist(MIB),
            false,
        ),
        (
            "XML nested 100,000 deep",
            "<array>".repeat(100_000).into_bytes(),
            false,
        ),
        (
            "XML with 250,000 values",
            check_in(&format!(
                "<key>a</key><array>{}</array>",
                "<string>a value</string>".repeat(250_000)
            ))
            .into_bytes(),
            false,
        ),
        (
            "XML array of 150,000 booleans packed 7 bytes apart",
            check_in(&format!(
                "<key>a</key><array>{}</array>",
                "<true/>".repeat(150_000)
            ))
            .into_bytes(),
            false,
        ),
        (
            "binary array of 200,000 references to one value",
            shared_scalar(200_000),
            false,
        ),
        (
            "binary array of 100,000 references to one value, 8 bytes apart",
            shared_scalar_padded(100_000),
            true,
        ),
        (
            "XML dictionary with 40,000 keys",
            check_in(
                &(0..40_000)
                    .map(|i| format!("<key>k{i}</key><true/>"))
                    .collect::<String>(),
            )
            .into_bytes(),
            true,
        ),
        (
            "XML with a 1 MiB string",
            check_in(&format!(
                "<key>DeviceName</key><string>{}</string>",
                "x".repeat(MIB)
            ))
            .into_bytes(),
            true,
        ),
        (
            "XML array of 120,000 booleans, 8 bytes apart",
            check_in(&format!(
                "<key>a</key><array>{}</array>",
                "<true/>\n".repeat(120_000)
            ))
            .into_bytes(),
            true,
        ),
    ];
    // `true`: within the limits (decoded; it may still not be a check-in).
    for (what, body, within_limits) in cases {
        let (peak, result) = measure(&body);
        let too_complex = matches!(result, Err(DecodeError::TooComplex { .. }));
        assert_eq!(!too_complex, within_limits, "{what}: {result:?}");
        let bound = 32 * body.len() + 256 * 1024;
        assert!(
            peak <= bound,
            "{what}: {peak} bytes at peak for a {}-byte body (bound {bound})",
            body.len()
        );
    }
}

#[test]
fn fields_over_their_bounds_are_refused_naming_the_field() {
    let long = |n: usize| "x".repeat(n);
    let token_update = |udid: &str, topic: &str, magic: &str, token_len: usize| {
        let token = base64_encode(&vec![7u8; token_len]);
        format!(
            "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict>\
             <key>MessageType</key><string>TokenUpdate</string>\
             <key>UDID</key><string>{udid}</string><key>Topic</key><string>{topic}</string>\
             <key>PushMagic</key><string>{magic}</string><key>Token</key><data>{token}</data>\
             </dict></plist>"
        )
    };
    let topic = "com.apple.mgmt.External.x";
    assert!(mdm::decode(token_update("U1", topic, "M", 32).as_bytes()).is_ok());
    for (body, field) in [
        (token_update(&long(129), topic, "M", 32), "UDID"),
        (token_update("U1", &long(256), "M", 32), "Topic"),
        (token_update("U1", topic, &long(257), 32), "PushMagic"),
        (token_update("U1", topic, "M", 101), "Token"),
    ] {
        let err = mdm::decode(body.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, DecodeError::InvalidValue { key, .. } if key == field),
            "{field}: {err}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }
    let enrollment_id = check_in("").replace(
        "<key>UDID</key><string>U1</string>",
        &format!("<key>EnrollmentID</key><string>{}</string>", long(129)),
    );
    let err = mdm::decode(enrollment_id.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("EnrollmentID"), "{err}");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
