//! The rustls client configuration: the push certificate as client identity, ALPN `h2`.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use crate::cert::PushCertificate;

/// The TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A trust anchor could not be parsed.
    #[error("invalid trust anchor: {0}")]
    TrustAnchor(rustls::Error),
    /// rustls refused the certificate or its key as a client identity.
    #[error("the push certificate cannot be used as a TLS client identity: {0}")]
    ClientIdentity(rustls::Error),
    /// Protocol versions not supported by the provider (a build problem).
    #[error("TLS setup failed: {0}")]
    Setup(rustls::Error),
}

/// The trust anchors: `extra_anchors`, plus the public web roots when `web_roots` is set
/// (Apple's gateways chain to one of them). Built once per client and shared by every
/// topic's configuration: the web roots alone are about 150 parsed anchors.
pub(crate) fn root_store(
    extra_anchors: &[CertificateDer<'static>],
    web_roots: bool,
) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    if web_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for anchor in extra_anchors {
        roots
            .add(anchor.clone())
            .map_err(TlsConfigError::TrustAnchor)?;
    }
    Ok(Arc::new(roots))
}

/// A client configuration that presents `cert` and trusts `roots`.
pub(crate) fn client_config(
    cert: &PushCertificate,
    roots: &Arc<RootCertStore>,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Setup)?
        .with_root_certificates(Arc::clone(roots))
        .with_client_auth_cert(cert.cert_chain(), cert.private_key())
        .map_err(TlsConfigError::ClientIdentity)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
