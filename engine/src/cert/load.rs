//! Decoding certificate and key material: PEM (PKCS#8, PKCS#1, SEC1 keys), DER, PKCS#12.
//! Bytes in, DER out: nothing here parses a certificate (that is [`super::info`]) or looks
//! at a key's algorithm (that is [`super::key`]).

use std::path::Path;

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::error::CertError;

/// Reads a whole file, mapping failure to [`CertError::Io`].
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|cause| CertError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// Whether the input is PEM text (has a `-----BEGIN ` line).
pub(crate) fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Whether DER input looks like a PKCS#12 file (`PFX ::= SEQUENCE { version INTEGER (3), …`)
/// rather than a certificate (whose SEQUENCE starts with another SEQUENCE).
pub fn is_probably_pkcs12(bytes: &[u8]) -> bool {
    let body = match bytes {
        [0x30, l, rest @ ..] if *l < 0x80 => rest,
        [0x30, 0x81, _, rest @ ..] => rest,
        [0x30, 0x82, _, _, rest @ ..] => rest,
        [0x30, 0x83, _, _, _, rest @ ..] => rest,
        _ => return false,
    };
    body.starts_with(&[0x02, 0x01, 0x03])
}

/// The certificates in PEM text, in order; input that is not PEM is taken as one DER
/// certificate.
pub(crate) fn pem_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    if !looks_like_pem(bytes) {
        if bytes.is_empty() || is_probably_pkcs12(bytes) {
            return Err(CertError::NoCertificate);
        }
        return Ok(vec![CertificateDer::from(bytes.to_vec())]);
    }
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::InvalidPem {
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(certs)
}

/// The first private key in PEM text (PKCS#8, PKCS#1 RSA or SEC1 EC), or a DER key.
/// `path` names the key file in the encrypted-key message.
pub(crate) fn pem_private_key(
    bytes: &[u8],
    path: Option<&Path>,
) -> Result<PrivateKeyDer<'static>, CertError> {
    if is_encrypted_pem_key(bytes) {
        return Err(CertError::EncryptedKey {
            path: path.map(Path::to_path_buf),
        });
    }
    if !looks_like_pem(bytes) {
        if bytes.is_empty() {
            return Err(CertError::MissingKey);
        }
        return PrivateKeyDer::try_from(bytes.to_vec()).map_err(|reason| {
            CertError::UnsupportedKey {
                reason: reason.to_string(),
            }
        });
    }
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) = section.map_err(|e| CertError::InvalidPem {
            reason: e.to_string(),
        })?;
        let key = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(der.into()),
            SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.into()),
            SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(der.into()),
            _ => continue,
        };
        return Ok(key);
    }
    Err(CertError::MissingKey)
}

fn is_encrypted_pem_key(bytes: &[u8]) -> bool {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// The certificates and the private key of a PKCS#12 file.
pub(crate) fn pkcs12(
    der: &[u8],
    password: &str,
) -> Result<(Vec<CertificateDer<'static>>, Vec<PrivateKeyDer<'static>>), CertError> {
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(der, password).map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) | p12_keystore::error::Error::UnpadError => {
            CertError::WrongPassword
        }
        other => CertError::InvalidPkcs12 {
            reason: other.to_string(),
        },
    })?;
    let certs = archive
        .certs
        .iter()
        .map(|bag| CertificateDer::from(bag.cert.as_der().to_vec()))
        .collect();
    let keys = archive
        .keys
        .iter()
        .map(|bag| PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bag.key.as_der().to_vec())))
        .collect();
    Ok((certs, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs12_is_told_apart_from_a_certificate() {
        let p12 = magicpush_fixtures::read("certs/push.p12");
        assert!(is_probably_pkcs12(&p12));
        let pki = magicpush_fixtures::TestPki::generate().unwrap();
        assert!(!is_probably_pkcs12(&pki.push.cert_der));
        assert!(!is_probably_pkcs12(b"not der"));
    }

    #[test]
    fn encrypted_keys_are_detected_in_both_forms() {
        assert!(is_encrypted_pem_key(&magicpush_fixtures::read(
            "certs/push.encrypted.key.pem"
        )));
        let traditional = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(is_encrypted_pem_key(traditional));
        assert!(!is_encrypted_pem_key(&magicpush_fixtures::read(
            "certs/push.key.pem"
        )));
    }

    #[test]
    fn key_kinds_are_read_from_their_pem_labels() {
        let key = |name: &str| pem_private_key(&magicpush_fixtures::read(name), None).unwrap();
        assert!(matches!(key("certs/push.key.pem"), PrivateKeyDer::Pkcs8(_)));
        assert!(matches!(
            key("certs/push.rsa.key.pem"),
            PrivateKeyDer::Pkcs1(_)
        ));
        assert!(matches!(
            key("certs/push-ec.sec1.key.pem"),
            PrivateKeyDer::Sec1(_)
        ));
        // A bundle: the key after the certificate.
        assert!(matches!(
            key("certs/push.bundle.pem"),
            PrivateKeyDer::Pkcs8(_)
        ));
    }

    #[test]
    fn a_file_without_key_is_missing_key() {
        let err = pem_private_key(&magicpush_fixtures::read("certs/push.pem"), None).unwrap_err();
        assert!(matches!(err, CertError::MissingKey), "{err}");
    }

    #[test]
    fn broken_pem_is_invalid_pem() {
        let err = pem_certificates(
            b"-----BEGIN CERTIFICATE-----\n!!!notbase64\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err();
        assert!(matches!(err, CertError::InvalidPem { .. }), "{err}");
        let err = pem_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap_err();
        assert!(matches!(err, CertError::InvalidPem { .. }), "{err}");
    }
}
