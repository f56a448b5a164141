//! TLS for the check-in server (rustls, *ring* provider), from a PEM certificate chain and key,
//! asking devices for their identity certificate when the `tls` source is on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The server's TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("{path}: no PEM certificate found ({detail})")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// Parser detail.
        detail: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("{path}: no PEM private key found ({detail})")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// Parser detail.
        detail: String,
    },
    /// rustls refused the pair (for example, the key does not match the certificate).
    #[error("TLS certificate {cert} with key {key} refused: {cause}")]
    Config {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// Why.
        cause: rustls::Error,
    },
}

/// Builds a server config from PEM files, offering HTTP/2 and HTTP/1.1 over ALPN. With
/// `client_hints`, clients are asked for a certificate (naming those CA subjects, DER of each
/// `Name`) and may present one: the handshake proves the client holds its key, and each
/// request then checks it ([`crate::identity`]): its chain, and its binding to the device.
/// Clients without one still connect (the admin API and health checks need none), and a
/// certificate of the wrong CA is answered with a 403 that says so rather than a failed
/// handshake a device cannot explain.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
    client_hints: Option<Vec<Vec<u8>>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|cause| TlsError::Read {
            path: path.to_owned(),
            cause,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: cert_path.to_owned(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
            detail: "the file has no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_owned(),
        detail: e.to_string(),
    })?;
    let config_err = |cause| TlsError::Config {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        cause,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?;
    let builder = match client_hints {
        None => builder.with_no_client_auth(),
        Some(subjects) => builder.with_client_cert_verifier(Arc::new(DeviceCertificates {
            hints: subjects
                .iter()
                .map(|s| DistinguishedName::in_sequence(s))
                .collect(),
            algorithms: provider.signature_verification_algorithms,
        })),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(config_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Asks for a client certificate and accepts any well-formed one, checking only the
/// handshake's proof of possession of its key; trust and binding are per request.
#[derive(Debug)]
struct DeviceCertificates {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeviceCertificates {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        X509Certificate::from_der(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
