//! The MDM push certificate: loading (PEM, PKCS#12), parsing, key matching, renewal checks.
//!
//! - [`PushCertificate`]: certificate chain + private key, checked to belong together and to
//!   be an MDM push certificate; the TLS client identity of the APNs connections. Cheap to
//!   clone, so it can be swapped at run time.
//! - [`CertificateInfo`]: what a certificate says (topic, subject, serial, validity), without
//!   a key — for `inspect` and renewal checks.
//! - [`check_renewal`]: whether a new certificate may replace the registered one (E320).
//!
//! Time is always passed in (`now`), never read from the clock here.

mod dn;
mod error;
mod info;
mod key;
mod load;
mod renewal;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

pub use error::CertError;
pub use info::{
    CertificateInfo, Environment, DEVELOPMENT_EXT_OID, MDM_TOPIC_PREFIX, PRODUCTION_EXT_OID,
    UID_OID,
};
pub use load::is_probably_pkcs12;
pub use renewal::{check_renewal, RenewalError};

/// An MDM push certificate with its private key: the TLS client identity for APNs.
///
/// Every constructor checks that the certificate is an MDM push certificate (topic
/// `com.apple.mgmt.…`) and that the private key belongs to it. Clones share one allocation.
#[derive(Clone)]
pub struct PushCertificate {
    inner: Arc<Inner>,
}

struct Inner {
    info: CertificateInfo,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    certified: Arc<CertifiedKey>,
}

impl PushCertificate {
    /// From a PEM (or DER) certificate — optionally followed by its chain — and a PEM (or DER)
    /// private key: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`). Encrypted keys are refused with [`CertError::EncryptedKey`].
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<PushCertificate, CertError> {
        Self::from_pem_inner(cert_pem, key_pem, None)
    }

    fn from_pem_inner(
        cert_pem: &[u8],
        key_pem: &[u8],
        key_path: Option<&Path>,
    ) -> Result<PushCertificate, CertError> {
        let chain = load::pem_certificates(cert_pem)?;
        mdm_candidates(&chain)?;
        let key = load::pem_private_key(key_pem, key_path)?;
        PushCertificate::from_parts(chain, vec![key])
    }

    /// Reads a certificate file and a key file (see [`PushCertificate::from_pem`]); errors
    /// name the file.
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<PushCertificate, CertError> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let cert_pem = load::read(cert_path)?;
        let key_pem = load::read(key_path)?;
        let chain = load::pem_certificates(&cert_pem).map_err(|e| e.in_file(cert_path))?;
        mdm_candidates(&chain).map_err(|e| e.in_file(cert_path))?;
        let key =
            load::pem_private_key(&key_pem, Some(key_path)).map_err(|e| e.in_file(key_path))?;
        PushCertificate::from_parts(chain, vec![key]).map_err(|e| match e {
            CertError::KeyMismatch { .. } | CertError::UnsupportedKey { .. } => e.in_file(key_path),
            other => other.in_file(cert_path),
        })
    }

    /// From one PEM text holding the certificate followed by its key (what the admin API
    /// receives as an upload).
    pub fn from_pem_bundle(bundle: &[u8]) -> Result<PushCertificate, CertError> {
        Self::from_pem(bundle, bundle)
    }

    /// Reads a PEM bundle file (see [`PushCertificate::from_pem_bundle`]).
    pub fn from_pem_bundle_file(path: impl AsRef<Path>) -> Result<PushCertificate, CertError> {
        let path = path.as_ref();
        let bytes = load::read(path)?;
        Self::from_pem_inner(&bytes, &bytes, Some(path)).map_err(|e| e.in_file(path))
    }

    /// From a PKCS#12 (`.p12`) file's bytes, as exported from a keychain. An empty password is
    /// the empty string. A wrong password is [`CertError::WrongPassword`].
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<PushCertificate, CertError> {
        let (chain, keys) = load::pkcs12(der, password)?;
        if chain.is_empty() {
            return Err(CertError::NoCertificate);
        }
        mdm_candidates(&chain)?;
        if keys.is_empty() {
            return Err(CertError::MissingKey);
        }
        PushCertificate::from_parts(chain, keys)
    }

    /// Reads a PKCS#12 file (see [`PushCertificate::from_pkcs12`]).
    pub fn from_pkcs12_file(
        path: impl AsRef<Path>,
        password: &str,
    ) -> Result<PushCertificate, CertError> {
        let path = path.as_ref();
        let der = load::read(path)?;
        Self::from_pkcs12(&der, password).map_err(|e| e.in_file(path))
    }

    /// From decoded parts: the leaf is the first MDM push certificate in `chain` whose public
    /// key matches one of `keys`; it is moved to the front, the others follow in order.
    pub fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        keys: Vec<PrivateKeyDer<'static>>,
    ) -> Result<PushCertificate, CertError> {
        let candidates = mdm_candidates(&chain)?;
        if keys.is_empty() {
            return Err(CertError::MissingKey);
        }
        let mut signing_keys = Vec::with_capacity(keys.len());
        for key in &keys {
            signing_keys.push(key::signing_key(key)?);
        }
        for (index, info) in &candidates {
            for (key, signer) in keys.iter().zip(&signing_keys) {
                if key::key_matches(info.spki_der(), signer.as_ref()) {
                    let mut ordered = Vec::with_capacity(chain.len());
                    ordered.push(chain[*index].clone());
                    ordered.extend(
                        chain
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| i != index)
                            .map(|(_, c)| c.clone()),
                    );
                    let certified =
                        Arc::new(CertifiedKey::new(ordered.clone(), Arc::clone(signer)));
                    return Ok(PushCertificate {
                        inner: Arc::new(Inner {
                            info: info.clone(),
                            chain: ordered,
                            key: key.clone_key(),
                            certified,
                        }),
                    });
                }
            }
        }
        let (_, info) = &candidates[0];
        Err(CertError::KeyMismatch {
            subject: info.subject().to_string(),
            cert_key: info.key_algorithm().to_string(),
            key: key::key_algorithm_of(signing_keys[0].as_ref()).to_string(),
        })
    }

    /// What the certificate says.
    pub fn info(&self) -> &CertificateInfo {
        &self.inner.info
    }

    /// The APNs topic (`com.apple.mgmt.External.<uuid>`), the `apns-topic` header value.
    pub fn topic(&self) -> &str {
        self.inner.info.topic()
    }

    /// The certificate chain, leaf first, for a TLS client configuration.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        self.inner.chain.clone()
    }

    /// The private key, for a TLS client configuration.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.inner.key.clone_key()
    }

    /// The chain and a ready *ring* signing key, for a rustls client certificate resolver.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.inner.certified)
    }

    /// Whole days until expiry at `now`, see [`CertificateInfo::days_left`].
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        self.inner.info.days_left(now)
    }

    /// Whether the certificate has expired at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.inner.info.is_expired(now)
    }

    /// Whether two handles hold the same certificate (same DER), e.g. to tell whether a
    /// reloaded certificate changed.
    pub fn same_certificate(&self, other: &PushCertificate) -> bool {
        self.inner.info.der() == other.inner.info.der()
    }
}

impl fmt::Debug for PushCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushCertificate")
            .field("info", &self.inner.info)
            .field("chain_len", &self.inner.chain.len())
            .finish_non_exhaustive()
    }
}

/// The MDM push certificates in a chain with their positions; if there is none, the error of
/// the first certificate (e.g. [`CertError::NotMdmCertificate`]).
fn mdm_candidates(
    chain: &[CertificateDer<'static>],
) -> Result<Vec<(usize, CertificateInfo)>, CertError> {
    let mut first_error = None;
    let mut found = Vec::new();
    for (i, der) in chain.iter().enumerate() {
        match CertificateInfo::from_der(der.clone()) {
            Ok(info) => found.push((i, info)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if found.is_empty() {
        return Err(first_error.unwrap_or(CertError::NoCertificate));
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
