//! The built-in device CA: an RSA-3072 key and a self-signed certificate that issues the
//! devices' identity certificates, and whose key SCEP requests are encrypted to (no separate
//! RA certificate: GetCACert answers this one certificate).
//!
//! **Where the enrollment id goes.** An issued certificate's subject is
//! `OU=<enrollment id>, CN=<the requested CN>`: the CSR's other subject attributes are dropped,
//! and the OU is always the CA's, never the requester's. The OU was chosen over a private
//! extension because every tool shows it (`openssl x509 -subject`), it needs no OID of our own,
//! and it survives renewal by being read back from the old certificate
//! ([`enrollment_id_of`]). An enrollment id is 1 to 64 characters (RFC 5280's upper bound for
//! an organizationalUnitName).
//!
//! **Key usage.** The CA certificate's keyUsage is keyCertSign + cRLSign, as specified; yet
//! the same key also signs CertReps and decrypts requests (no RA). scepclient and OpenSSL
//! (with `-purpose any`) accept that; whether Apple's SCEP client insists on
//! digitalSignature/keyEncipherment in the CA certificate is to be checked on a device.

use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use rand_core::CryptoRngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use time::OffsetDateTime;
use x509_cert::Certificate;

use crate::attrs::any_string;
use crate::digest::{self, Digest};
use crate::error::CaError;
use crate::oid;

/// The CA certificate's common name.
pub const CA_COMMON_NAME: &str = "magicpush device CA";
/// The CA key's size in bits.
pub const CA_KEY_BITS: usize = 3072;
/// How long the CA certificate is valid: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a device certificate is valid unless the caller says otherwise: one year.
pub const DEFAULT_DEVICE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this much before `now`, for clocks a little behind ours.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The longest enrollment id (ub-organizational-unit-name, RFC 5280 appendix A.1).
pub const MAX_ENROLLMENT_ID: usize = 64;

/// The device CA: its certificate and private key.
pub struct DeviceCa {
    cert: Certificate,
    cert_der: Vec<u8>,
    key: RsaPrivateKey,
    key_pem: String,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCa")
            .field("fingerprint_sha256", &self.fingerprint_sha256())
            .finish_non_exhaustive()
    }
}

/// What goes into a device certificate.
#[derive(Debug, Clone)]
pub struct DeviceCertRequest<'a> {
    /// The subject public key, a DER SubjectPublicKeyInfo (from the CSR).
    pub public_key_der: &'a [u8],
    /// The subject's common name (from the CSR).
    pub common_name: &'a str,
    /// The enrollment the certificate belongs to (from the challenge, or the renewed
    /// certificate); written as the subject's OU.
    pub enrollment_id: &'a str,
    /// From `now` (less [`BACKDATE`]) to `now + validity`.
    pub validity: Duration,
}

fn to_offset(t: SystemTime) -> Result<OffsetDateTime, CaError> {
    let t = OffsetDateTime::from(t);
    // RFC 5280 dates stop at 9999; refuse rather than let the encoder fail obscurely.
    if t.year() > 9999 || t.year() < 1950 {
        return Err(CaError::Invalid(format!("a date out of range: {t}")));
    }
    Ok(t)
}

fn random_serial(rng: &mut impl CryptoRngCore) -> SerialNumber {
    // 128 random bits; rcgen writes them as a positive INTEGER (a leading zero when needed).
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    serial[0] |= 0x01; // never all zeros
    SerialNumber::from_slice(&serial)
}

fn signing_key(key_pem: &str) -> Result<KeyPair, CaError> {
    KeyPair::from_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| CaError::Key(e.to_string()))
}

impl DeviceCa {
    /// Creates a CA: a fresh RSA-3072 key and a self-signed certificate (CN
    /// [`CA_COMMON_NAME`], O `organisation`, valid ten years from `now`, basicConstraints
    /// CA:true pathlen 0, keyUsage keyCertSign + cRLSign + digitalSignature + keyEncipherment,
    /// subjectKeyIdentifier). RFC 8894 §2.1.2: a SCEP CA's keyUsage MUST allow
    /// digitalSignature (it signs the CertReps) and keyEncipherment (requests are encrypted to
    /// its key: there is no separate RA). Key generation takes a few seconds.
    pub fn generate(
        organisation: &str,
        now: SystemTime,
        rng: &mut impl CryptoRngCore,
    ) -> Result<DeviceCa, CaError> {
        if organisation.trim().is_empty() || organisation.chars().count() > 64 {
            return Err(CaError::Invalid(
                "the organisation must be 1 to 64 characters".into(),
            ));
        }
        let key = RsaPrivateKey::new(rng, CA_KEY_BITS).map_err(|e| CaError::Key(e.to_string()))?;
        let key_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| CaError::Key(e.to_string()))?
            .to_string();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        dn.push(DnType::OrganizationName, organisation);
        params.distinguished_name = dn;
        params.not_before = to_offset(now - BACKDATE)?;
        params.not_after = to_offset(now + CA_VALIDITY)?;
        params.serial_number = Some(random_serial(rng));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params
            .self_signed(&signing_key(&key_pem)?)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        DeviceCa::from_parts(cert.der().to_vec(), key, key_pem)
    }

    /// Loads a CA back: its certificate (PEM `CERTIFICATE`) and its PKCS#8 private key (PEM
    /// `PRIVATE KEY`), which must belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<DeviceCa, CaError> {
        let cert = pem::parse(cert_pem).map_err(|e| CaError::Pem(e.to_string()))?;
        if cert.tag() != "CERTIFICATE" {
            return Err(CaError::Pem(format!(
                "a {} block, not CERTIFICATE",
                cert.tag()
            )));
        }
        let key =
            RsaPrivateKey::from_pkcs8_pem(key_pem).map_err(|e| CaError::Key(e.to_string()))?;
        DeviceCa::from_parts(cert.into_contents(), key, key_pem.to_string())
    }

    fn from_parts(
        cert_der: Vec<u8>,
        key: RsaPrivateKey,
        key_pem: String,
    ) -> Result<DeviceCa, CaError> {
        let cert =
            Certificate::from_der(&cert_der).map_err(|e| CaError::Certificate(e.to_string()))?;
        if key.size() * 8 < 2048 {
            return Err(CaError::Key("an RSA key of fewer than 2048 bits".into()));
        }
        let public = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| CaError::Key(e.to_string()))?;
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| CaError::Certificate(e.to_string()))?;
        if public.as_bytes() != spki.as_slice() {
            return Err(CaError::KeyMismatch);
        }
        // rcgen must accept the key too (it signs the certificates).
        signing_key(&key_pem)?;
        Ok(DeviceCa {
            cert,
            cert_der,
            key,
            key_pem,
        })
    }

    /// The CA certificate, DER: the GetCACert answer (`application/x-x509-ca-cert`).
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.cert_der.clone()))
    }

    /// The CA private key, PKCS#8 PEM (`PRIVATE KEY`): a secret, store it as one.
    pub fn private_key_pem(&self) -> &str {
        &self.key_pem
    }

    /// SHA-256 of the certificate's DER, lowercase hex (`magicpush ca show`, the SCEP
    /// payload's CAFingerprint).
    pub fn fingerprint_sha256(&self) -> String {
        hex::encode(Digest::Sha256.hash(&self.cert_der))
    }

    /// SHA-1 of the certificate's DER, lowercase hex (the CAFingerprint older profiles use).
    pub fn fingerprint_sha1(&self) -> String {
        hex::encode(Digest::Sha1.hash(&self.cert_der))
    }

    /// The key usages RFC 8894 §2.1.2 asks of a SCEP CA that this CA's certificate lacks
    /// (`digitalSignature`: it signs the CertReps; `keyEncipherment`: requests are encrypted
    /// to its key), by name. Empty for a CA [`DeviceCa::generate`] makes now; a CA created
    /// before it set them lacks both, and Apple's SCEP client may refuse it.
    pub fn missing_key_usages(&self) -> Vec<&'static str> {
        use der::asn1::ObjectIdentifier;
        use x509_cert::ext::pkix::KeyUsage;
        const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
        let usage = self
            .cert
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
            .find(|e| e.extn_id == KEY_USAGE)
            .and_then(|e| KeyUsage::from_der(e.extn_value.as_bytes()).ok());
        let Some(usage) = usage else {
            // No keyUsage extension: every usage is allowed.
            return Vec::new();
        };
        let mut missing = Vec::new();
        if !usage.digital_signature() {
            missing.push("digitalSignature");
        }
        if !usage.key_encipherment() {
            missing.push("keyEncipherment");
        }
        missing
    }

    pub(crate) fn certificate(&self) -> &Certificate {
        &self.cert
    }

    pub(crate) fn key(&self) -> &RsaPrivateKey {
        &self.key
    }

    /// Whether this CA signed `cert` (issuer name and signature; not its validity).
    pub fn issued(&self, cert: &Certificate) -> bool {
        if cert.tbs_certificate().issuer() != self.cert.tbs_certificate().subject() {
            return false;
        }
        let Some(digest) = digest::of_signature_algorithm(&cert.signature_algorithm().oid) else {
            return false;
        };
        let Ok(tbs) = cert.tbs_certificate().to_der() else {
            return false;
        };
        let Some(signature) = cert.signature().as_bytes() else {
            return false;
        };
        digest::verify(
            self.cert.tbs_certificate().subject_public_key_info(),
            digest,
            &tbs,
            signature,
        )
    }

    /// Issues a device certificate: subject `OU=<enrollment id>, CN=<common name>`, the
    /// request's public key, clientAuth EKU, keyUsage digitalSignature + keyEncipherment, a
    /// random 128-bit serial, authority and subject key identifiers, SHA-256 with RSA.
    /// Returns its DER.
    pub fn issue(
        &self,
        request: &DeviceCertRequest<'_>,
        now: SystemTime,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, CaError> {
        let id = request.enrollment_id;
        if id.trim().is_empty() || id.chars().count() > MAX_ENROLLMENT_ID {
            return Err(CaError::Invalid(format!(
                "an enrollment id must be 1 to {MAX_ENROLLMENT_ID} characters"
            )));
        }
        let cn = request.common_name;
        if cn.trim().is_empty() || cn.chars().count() > 64 {
            return Err(CaError::Invalid(
                "the common name must be 1 to 64 characters".into(),
            ));
        }
        let public = rcgen::SubjectPublicKeyInfo::from_der(request.public_key_der)
            .map_err(|e| CaError::Invalid(format!("the public key: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationalUnitName, id);
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.not_before = to_offset(now - BACKDATE)?;
        params.not_after = to_offset(now + request.validity)?;
        params.serial_number = Some(random_serial(rng));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = signing_key(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), &key)
            .map_err(|e| CaError::Certificate(e.to_string()))?;
        let cert = params
            .signed_by(&public, &issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Ok(cert.der().to_vec())
    }
}

/// The enrollment id a certificate carries (its subject's OU), if any.
pub fn enrollment_id_of(cert: &Certificate) -> Option<String> {
    name_attribute(
        cert.tbs_certificate().subject(),
        oid::AT_ORGANIZATIONAL_UNIT,
    )
}

/// The first value of attribute `oid` in `name`, as text.
pub(crate) fn name_attribute(
    name: &x509_cert::name::Name,
    oid: der::asn1::ObjectIdentifier,
) -> Option<String> {
    name.iter()
        .find(|atv| atv.oid == oid)
        .and_then(|atv| any_string(&atv.value))
}
