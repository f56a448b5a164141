//! Private keys: a *ring* signing key from DER, the name of a key's algorithm, and whether a
//! key belongs to a certificate (compared by SubjectPublicKeyInfo, so this needs no parsed
//! certificate).

use std::sync::Arc;

use rustls::sign::SigningKey;
use rustls_pki_types::PrivateKeyDer;
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::error::CertError;

/// The name of a public key algorithm by its OID: `RSA`, `RSA-PSS`, `EC`, `Ed25519`, `Ed448`.
pub(crate) fn key_algorithm(oid: &str) -> &'static str {
    match oid {
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.113549.1.1.10" => "RSA-PSS",
        "1.2.840.10045.2.1" => "EC",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        _ => "an unknown algorithm",
    }
}

/// A rustls signing key for the private key (RSA, ECDSA, Ed25519 via *ring*).
pub(crate) fn signing_key(key: &PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>, CertError> {
    rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| CertError::UnsupportedKey {
        reason: e.to_string(),
    })
}

/// Whether the signing key's public key is the certificate's (`cert_spki`: its
/// SubjectPublicKeyInfo, DER): same algorithm and the same public key bits (parameters'
/// encoding may differ between tools, so SPKI bytes are not compared directly).
pub(crate) fn key_matches(cert_spki: &[u8], key: &dyn SigningKey) -> bool {
    let Some(key_spki) = key.public_key() else {
        return false;
    };
    let (Ok((_, cert_spki)), Ok((_, key_spki))) = (
        SubjectPublicKeyInfo::from_der(cert_spki),
        SubjectPublicKeyInfo::from_der(key_spki.as_ref()),
    ) else {
        return false;
    };
    cert_spki.algorithm.algorithm == key_spki.algorithm.algorithm
        && cert_spki.subject_public_key.data == key_spki.subject_public_key.data
}

/// The algorithm name of the signing key's public key, for messages.
pub(crate) fn key_algorithm_of(key: &dyn SigningKey) -> &'static str {
    key.public_key()
        .and_then(|spki| {
            SubjectPublicKeyInfo::from_der(spki.as_ref())
                .ok()
                .map(|(_, s)| key_algorithm(&s.algorithm.algorithm.to_id_string()))
        })
        .unwrap_or("an unknown algorithm")
}
