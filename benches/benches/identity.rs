//! Micro-benchmarks of a device request's identity check, on the openssl-made fixtures
//! (`fixtures/mdm-signature/`): the `Mdm-Signature` verification alone for each key type, the
//! chain walk, and the whole check of a steady device (signature + kept chain verdict), which
//! is what every check-in and report pays.
//!
//! `cargo bench -p magicpush-benches --bench identity`

use std::hint::black_box;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use magicpush_server::identity::authenticator::parse_sources;
use magicpush_server::identity::signature::verify_detached;
use magicpush_server::identity::{DeviceAuthenticator, DeviceTrust};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::macros::datetime;

use magicpush_fixtures::mdm_signature as fixture;

fn body() -> &'static [u8] {
    fixture("body.plist")
}

fn trust() -> DeviceTrust {
    let ca = CertificateDer::from_pem_slice(fixture("device-ca.pem")).unwrap();
    DeviceTrust::new(&[ca], Vec::new()).unwrap()
}

fn signatures(c: &mut Criterion) {
    let mut g = c.benchmark_group("mdm_signature");
    let cases: [(&str, &[u8]); 5] = [
        ("verify_p256_sha256", fixture("ec-sha256.der")),
        ("verify_rsa2048_sha256", fixture("rsa-sha256.der")),
        ("verify_rsa2048_sha1", fixture("rsa-sha1.der")),
        ("verify_rsa2048_ber", fixture("rsa-ber.der")),
        ("verify_p384_sha512", fixture("p384-sha512.der")),
    ];
    for (name, cms) in cases {
        g.bench_function(name, |b| {
            b.iter(|| black_box(verify_detached(black_box(cms), black_box(body())).unwrap()))
        });
    }
    g.finish();
}

fn chain_and_request(c: &mut Criterion) {
    let now = datetime!(2030-01-01 0:00 UTC);
    let trust = trust();
    let ec = CertificateDer::from_pem_slice(fixture("device-ec.pem")).unwrap();
    let mut g = c.benchmark_group("device_identity");
    g.bench_function("chain_walk_p256", |b| {
        b.iter(|| black_box(trust.verify(black_box(&ec), now).unwrap()))
    });
    let auth = DeviceAuthenticator::new(parse_sources("signature").unwrap(), trust, None).unwrap();
    let mut headers = HeaderMap::new();
    let b64 = base64::engine::general_purpose::STANDARD.encode(fixture("ec-sha256.der"));
    headers.insert("mdm-signature", HeaderValue::from_str(&b64).unwrap());
    auth.authenticate(&headers, None, body(), now).unwrap();
    g.bench_function("request_steady_device_p256", |b| {
        b.iter(|| {
            black_box(
                auth.authenticate(black_box(&headers), None, body(), now)
                    .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, signatures, chain_and_request);
criterion_main!(benches);
