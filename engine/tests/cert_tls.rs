//! A loaded `PushCertificate` works as a TLS client identity: an in-memory handshake (no
//! sockets) against a rustls server that requires a client certificate from the test CA, the
//! way APNs authenticates a provider.

use std::sync::Arc;

use magicpush_engine::cert::{CertificateInfo, PushCertificate};
use magicpush_fixtures::TestPki;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(ca_der: &[u8], cert_pem: &str, key_pem: &str) -> Arc<ServerConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

fn client_config(ca_der: &[u8], identity: &PushCertificate) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(identity.cert_chain(), identity.private_key())
            .unwrap(),
    )
}

/// Runs the handshake by shuttling bytes in memory; returns the client certificate the
/// server saw, or the first error.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> Result<CertificateDer<'static>, rustls::Error> {
    let mut c = ClientConnection::new(client, ServerName::try_from("localhost").unwrap())?;
    let mut s = ServerConnection::new(server)?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            let seen = s.peer_certificates().expect("client certificate")[0].clone();
            return Ok(seen);
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn an_ecdsa_push_certificate_authenticates_the_client() {
    let pki = TestPki::generate().unwrap();
    let identity =
        PushCertificate::from_pem(pki.push.cert_pem.as_bytes(), pki.push.key_pem.as_bytes())
            .unwrap();
    let seen = handshake(
        client_config(pki.ca.cert_der(), &identity),
        server_config(pki.ca.cert_der(), &pki.server.cert_pem, &pki.server.key_pem),
    )
    .unwrap();
    // What the server would read the topic from.
    assert_eq!(CertificateInfo::from_der(seen).unwrap().topic(), pki.topic);
}

#[test]
fn the_committed_rsa_push_certificate_authenticates_with_a_pkcs1_key() {
    let read = |name: &str| magicpush_fixtures::read(name);
    let identity =
        PushCertificate::from_pem(&read("certs/push.pem"), &read("certs/push.rsa.key.pem"))
            .unwrap();
    let ca_der = CertificateDer::from_pem_slice(&read("certs/ca.pem")).unwrap();
    let server_pem = String::from_utf8(read("certs/server.pem")).unwrap();
    let server_key = String::from_utf8(read("certs/server.key.pem")).unwrap();
    let seen = handshake(
        client_config(&ca_der, &identity),
        server_config(&ca_der, &server_pem, &server_key),
    )
    .unwrap();
    assert_eq!(seen.as_ref(), identity.info().der().as_ref());
}

#[test]
fn a_server_that_does_not_trust_the_issuer_rejects_the_client() {
    let pki = TestPki::generate().unwrap();
    let stranger = TestPki::generate().unwrap();
    let identity = PushCertificate::from_pem(
        stranger.push.cert_pem.as_bytes(),
        stranger.push.key_pem.as_bytes(),
    )
    .unwrap();
    let err = handshake(
        client_config(pki.ca.cert_der(), &identity),
        server_config(pki.ca.cert_der(), &pki.server.cert_pem, &pki.server.key_pem),
    )
    .unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}
