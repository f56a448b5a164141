//! What the engine's tests against the mock APNs share: a test PKI with the mock started on
//! a loopback port, and push certificates from the PKI's files.

use std::net::SocketAddr;

use magicpush_engine::cert::PushCertificate;
use magicpush_fixtures::{CertKey, TestPki};
use magicpush_mock_apns::{MockApns, MockConfig, MockHandle};

pub(crate) struct Setup {
    pub(crate) pki: TestPki,
    pub(crate) mock: MockHandle,
}

/// A fresh PKI and the mock, with `config`, serving its server certificate.
pub(crate) async fn setup(config: MockConfig) -> Setup {
    let pki = TestPki::generate().expect("test PKI");
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mock = MockApns::start(
        addr,
        &pki.server.cert_pem,
        &pki.server.key_pem,
        pki.ca.cert_pem(),
        config,
    )
    .await
    .expect("mock APNs starts");
    Setup { pki, mock }
}

/// The push certificate of a test PKI pair.
pub(crate) fn cert(ck: &CertKey) -> PushCertificate {
    PushCertificate::from_pem(ck.cert_pem.as_bytes(), ck.key_pem.as_bytes()).expect("push cert")
}
