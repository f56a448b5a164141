//! Hostile PKIOperation messages cost at most a small multiple of their size: the peak memory
//! that answering one allocates is measured with a counting allocator (this test binary's
//! global allocator). Lengths claimed in the input never size an allocation.

mod common;

use std::sync::Mutex;
use std::time::SystemTime;

use magicpush_scep::{prepare, DeviceCa, MAX_MESSAGE};
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;
static MEASURING: Mutex<()> = Mutex::new(());

/// Peak bytes allocated above the starting point while preparing `message`.
fn measure(ca: &DeviceCa, message: &[u8]) -> usize {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let base = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let _ = prepare(message, ca, SystemTime::now(), &mut rand_core::OsRng);
    ALLOC.peak_usage().saturating_sub(base)
}

/// A DER header: `tag`, then `len` in the long form.
fn header(tag: u8, len: usize) -> Vec<u8> {
    let mut h = vec![tag, 0x83];
    h.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    h
}

/// ContentInfo { signedData, [0] { SEQUENCE { body } } }.
fn signed_data_around(body: &[u8]) -> Vec<u8> {
    let oid = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
    ];
    let mut seq = header(0x30, body.len());
    seq.extend_from_slice(body);
    let mut explicit = header(0xa0, seq.len());
    explicit.extend_from_slice(&seq);
    let mut inner = oid.to_vec();
    inner.extend_from_slice(&explicit);
    let mut out = header(0x30, inner.len());
    out.extend_from_slice(&inner);
    out
}

#[test]
fn hostile_messages_cost_at_most_a_small_multiple_of_their_size() {
    const MIB: usize = 1 << 20;
    let ca = common::fixture_ca();
    let real = std::fs::read(common::data_dir().join("scepclient-pkcsreq.der")).unwrap();

    // SignedData { version, digestAlgorithms = SET OF n empty AlgorithmIdentifiers, … }.
    let mut many = vec![0x02, 0x01, 0x01];
    let n = 15_000;
    many.extend_from_slice(&header(0x31, 2 * n));
    for _ in 0..n {
        many.extend_from_slice(&[0x30, 0x00]);
    }

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "nested indefinite lengths",
            [0x30, 0x80].repeat(MAX_MESSAGE / 2),
        ),
        (
            "a SEQUENCE claiming 4 GiB",
            [vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff], vec![0; 100]].concat(),
        ),
        (
            "an OCTET STRING claiming 16 MiB inside a SignedData",
            signed_data_around(&[vec![0x04, 0x84, 0x01, 0, 0, 0], vec![0; 1000]].concat()),
        ),
        (
            "a SET OF 15,000 empty algorithm identifiers",
            signed_data_around(&many),
        ),
        (
            "a real request padded to the limit",
            [real.clone(), vec![0; MAX_MESSAGE - real.len()]].concat(),
        ),
        ("a real request", real),
    ];
    for (name, message) in cases {
        assert!(message.len() <= MAX_MESSAGE, "{name}");
        let peak = measure(&ca, &message);
        eprintln!("{name}: {} bytes -> peak {peak}", message.len());
        assert!(
            peak <= 32 * message.len() + MIB,
            "{name}: {} bytes cost {peak}",
            message.len()
        );
    }
}
