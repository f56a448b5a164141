//! One SCEP enrollment handled whole (`magicpush_scep::handle`: an RSA-2048 device's PKCSReq,
//! AES-128-CBC, SHA-256, as iOS sends it; the built-in CA's RSA-3072 key decrypts it, signs the
//! certificate and the CertRep) beside the private-key operations it is made of, measured in
//! the same run: one RSA-2048 operation (the unit) and one RSA-3072 operation (the
//! CA's). BENCHMARKS.md §6b reads the ratio `enrollment / rsa2048_private_op`.

use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use magicpush_scep::client::{EnrollmentRequest, RequestSigner};
use magicpush_scep::rand_core::OsRng;
use magicpush_scep::{handle, ChallengeStore, ContentCipher, DeviceCa, NothingRevoked, PkiStatus};
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};

/// Every challenge is good: the store's cost is not what this measures.
struct AnyChallenge;

impl ChallengeStore for AnyChallenge {
    fn consume(&mut self, _challenge: &str, _now: SystemTime) -> Option<String> {
        Some("bench".into())
    }
}

fn fixture_ca() -> DeviceCa {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../checkin/scep/tests/data");
    let cert = std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem");
    let key = std::fs::read_to_string(dir.join("ca.key.pem")).expect("ca.key.pem");
    DeviceCa::from_pem(&cert, &key).expect("the fixture CA loads")
}

/// A private-key operation of `bits`: PKCS#1 v1.5 decryption with blinding, as the server
/// decrypts a request's content key.
fn private_op(bits: usize) -> (RsaPrivateKey, Vec<u8>) {
    let key = RsaPrivateKey::new(&mut OsRng, bits).expect("an RSA key");
    let ciphertext = RsaPublicKey::from(&key)
        .encrypt(&mut OsRng, Pkcs1v15Encrypt, &[7u8; 16])
        .expect("encrypts");
    (key, ciphertext)
}

fn scep(c: &mut Criterion) {
    let ca = fixture_ca();
    let device_key = RsaPrivateKey::new(&mut OsRng, 2048).expect("a device key");
    let signer = RequestSigner::new(&device_key).expect("a request signer");
    let (message, _) = signer
        .pkcs_req(
            &EnrollmentRequest {
                common_name: "bench device",
                challenge: "any",
                ca_cert_der: ca.certificate_der(),
                cipher: ContentCipher::Aes128Cbc,
            },
            &mut OsRng,
        )
        .expect("a PKCSReq");
    let check = handle(
        &message,
        &ca,
        &mut AnyChallenge,
        &NothingRevoked,
        SystemTime::now(),
        &mut OsRng,
    )
    .expect("answered");
    assert_eq!(check.status, PkiStatus::Success, "{:?}", check.reason);

    let (k2048, c2048) = private_op(2048);
    let (k3072, c3072) = private_op(3072);
    let mut group = c.benchmark_group("scep");
    group.bench_function("enrollment", |b| {
        b.iter(|| {
            handle(
                &message,
                &ca,
                &mut AnyChallenge,
                &NothingRevoked,
                SystemTime::now(),
                &mut OsRng,
            )
            .expect("answered")
        })
    });
    group.bench_function("rsa2048_private_op", |b| {
        b.iter(|| {
            k2048
                .decrypt_blinded(&mut OsRng, Pkcs1v15Encrypt, &c2048)
                .expect("decrypts")
        })
    });
    group.bench_function("rsa3072_private_op", |b| {
        b.iter(|| {
            k3072
                .decrypt_blinded(&mut OsRng, Pkcs1v15Encrypt, &c3072)
                .expect("decrypts")
        })
    });
    group.finish();
}

criterion_group!(benches, scep);
criterion_main!(benches);
