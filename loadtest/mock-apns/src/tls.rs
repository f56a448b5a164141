//! The mock's TLS side: server configuration and the push topic of a client certificate.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_parser::der_parser::oid;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{ClientAuth, MockError};

/// Builds the server configuration: ALPN `h2`, client certificates verified against `client_ca_pem`.
pub fn server_config(
    server_cert_pem: &str,
    server_key_pem: &str,
    client_ca_pem: &str,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, MockError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| MockError::Pem {
                what: "server certificate",
                detail: e.to_string(),
            })?;
    if certs.is_empty() {
        return Err(MockError::Pem {
            what: "server certificate",
            detail: "no CERTIFICATE block".into(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(server_key_pem.as_bytes()).map_err(|e| MockError::Pem {
            what: "server key",
            detail: e.to_string(),
        })?;
    let mut roots = RootCertStore::empty();
    let mut added = 0;
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| MockError::Pem {
            what: "client CA",
            detail: e.to_string(),
        })?;
        roots.add(ca).map_err(|e| MockError::Tls {
            what: "client CA",
            detail: e.to_string(),
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(MockError::Pem {
            what: "client CA",
            detail: "no CERTIFICATE block".into(),
        });
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match client_auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    let verifier = builder.build().map_err(|e| MockError::Tls {
        what: "client certificate verifier",
        detail: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MockError::Tls {
            what: "protocol versions",
            detail: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| MockError::Tls {
            what: "server certificate and key",
            detail: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The UID attribute (OID 0.9.2342.19200300.100.1.1) of a certificate's subject: the push topic.
pub fn certificate_topic(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let uid = oid!(0.9.2342 .19200300 .100 .1 .1);
    let topic = cert
        .subject()
        .iter_attributes()
        .find(|attr| attr.attr_type() == &uid)
        .and_then(|attr| attr.as_str().ok())
        .map(str::to_owned);
    topic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_of_push_certificate() {
        let pki = magicpush_fixtures::TestPki::generate().expect("pki");
        assert_eq!(
            certificate_topic(&pki.push.cert_der).as_deref(),
            Some(pki.topic.as_str())
        );
        assert_eq!(certificate_topic(&pki.server.cert_der), None);
        assert!(server_config(
            &pki.server.cert_pem,
            &pki.server.key_pem,
            pki.ca.cert_pem(),
            ClientAuth::Required
        )
        .is_ok());
        assert!(matches!(
            server_config(
                &pki.server.cert_pem,
                &pki.server.key_pem,
                "",
                ClientAuth::Required
            ),
            Err(MockError::Pem {
                what: "client CA",
                ..
            })
        ));
    }
}
