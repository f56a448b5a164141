//! The push certificate request: a fresh RSA-2048 key, its CSR, and — when the MDM vendor's
//! signing identity is at hand — the vendor-signed request that Apple's Push Certificates
//! Portal takes (the base64 of an XML plist with `PushCertRequestCSR`,
//! `PushCertCertificateChain` and `PushCertSignature`). Pure: no files, time passed in.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{RsaKeyPair, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

/// Why a request could not be made, read or verified.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The key could not be generated or encoded.
    #[error("cannot generate the request's RSA key: {0}")]
    KeyGeneration(String),
    /// The CSR could not be built (a subject field is not encodable).
    #[error("cannot build the CSR: {0}")]
    Csr(String),
    /// A subject field is not acceptable.
    #[error("{field}: {why}")]
    Subject {
        /// `email`, `common_name` or `country`.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The vendor certificate or key cannot be used.
    #[error("vendor signing identity: {0}")]
    Vendor(String),
    /// A CSR file is neither PEM nor DER of a certification request.
    #[error("not a certificate signing request: {0}")]
    NotCsr(String),
    /// A vendor-signed request does not decode.
    #[error("not a vendor-signed push certificate request: {0}")]
    Malformed(String),
    /// The signature does not verify with the vendor certificate.
    #[error("the vendor signature does not verify with the first certificate of PushCertCertificateChain")]
    BadSignature,
}

/// The subject of the request (what Keychain Access asks for: e-mail, common name, country).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// `emailAddress`, e.g. the administrator's address.
    pub email: Option<String>,
    /// `CN`, e.g. the company's name.
    pub common_name: Option<String>,
    /// `C`, two letters (ISO 3166).
    pub country: Option<String>,
}

impl Subject {
    /// Checks the fields: each at most 128 characters, an e-mail with one `@` and ASCII only,
    /// a two-letter country; at least a common name or an e-mail.
    pub fn validate(&self) -> Result<(), RequestError> {
        let bad = |field, why: &str| RequestError::Subject {
            field,
            why: why.to_owned(),
        };
        for (field, value) in [
            ("email", &self.email),
            ("common_name", &self.common_name),
            ("country", &self.country),
        ] {
            if let Some(v) = value {
                if v.trim().is_empty() || v.chars().count() > 128 {
                    return Err(bad(field, "must be 1 to 128 characters"));
                }
                if v.chars().any(char::is_control) {
                    return Err(bad(field, "must not contain control characters"));
                }
            }
        }
        if let Some(email) = &self.email {
            if !email.is_ascii() || email.matches('@').count() != 1 {
                return Err(bad("email", "must be an ASCII address with one @"));
            }
        }
        if let Some(c) = &self.country {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(bad("country", "must be two letters (ISO 3166), e.g. JP"));
            }
        }
        if self.email.is_none() && self.common_name.is_none() {
            return Err(bad(
                "common_name",
                "give a common name or an e-mail address for the request's subject",
            ));
        }
        Ok(())
    }
}

/// A new RSA-2048 private key, PKCS#8 DER. (*ring* cannot generate RSA keys; RustCrypto's
/// `rsa` does.)
pub fn generate_key() -> Result<Vec<u8>, RequestError> {
    use rsa::pkcs8::EncodePrivateKey as _;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .map_err(|e| RequestError::KeyGeneration(e.to_string()))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| RequestError::KeyGeneration(e.to_string()))?;
    Ok(der.as_bytes().to_vec())
}

/// The CSR (DER) for `key_pkcs8` (an RSA key, PKCS#8 DER) with `subject`, signed with
/// SHA-256.
pub fn build_csr(key_pkcs8: &[u8], subject: &Subject) -> Result<Vec<u8>, RequestError> {
    use rcgen::{DistinguishedName, DnType, DnValue};
    subject.validate()?;
    let key = rcgen::KeyPair::try_from(key_pkcs8).map_err(|e| RequestError::Csr(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    if let Some(email) = &subject.email {
        let value = email
            .as_str()
            .try_into()
            .map_err(|e: rcgen::Error| RequestError::Csr(e.to_string()))?;
        dn.push(
            DnType::CustomDnType(EMAIL_ADDRESS_OID.to_vec()),
            DnValue::Ia5String(value),
        );
    }
    if let Some(cn) = &subject.common_name {
        dn.push(DnType::CommonName, cn.as_str());
    }
    if let Some(c) = &subject.country {
        let value = c
            .to_ascii_uppercase()
            .try_into()
            .map_err(|e: rcgen::Error| RequestError::Csr(e.to_string()))?;
        dn.push(DnType::CountryName, DnValue::PrintableString(value));
    }
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| RequestError::Csr(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// PKCS#9 emailAddress, 1.2.840.113549.1.9.1.
const EMAIL_ADDRESS_OID: &[u64] = &[1, 2, 840, 113549, 1, 9, 1];

/// The public key (SubjectPublicKeyInfo DER) of a CSR, checking the CSR's own signature.
pub fn csr_public_key(csr_der: &[u8]) -> Result<Vec<u8>, RequestError> {
    use x509_parser::prelude::FromDer as _;
    let (rest, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
            .map_err(|e| RequestError::NotCsr(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RequestError::NotCsr("bytes after the request".into()));
    }
    csr.verify_signature()
        .map_err(|e| RequestError::NotCsr(format!("its own signature does not verify: {e}")))?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// A CSR read from a file: PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) or DER.
pub fn read_csr(bytes: &[u8]) -> Result<Vec<u8>, RequestError> {
    let der = if bytes.trim_ascii_start().starts_with(b"-----") {
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(bytes)
            .map_err(|e| RequestError::NotCsr(e.to_string()))?
            .as_ref()
            .to_vec()
    } else {
        bytes.to_vec()
    };
    csr_public_key(&der)?;
    Ok(der)
}

/// PEM text of a DER object (LF line endings, 64 columns).
pub fn pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The MDM vendor's signing identity: the vendor certificate Apple issued (its chain after
/// it) and its RSA key.
pub struct VendorIdentity {
    chain_pem: String,
    leaf_der: Vec<u8>,
    key: RsaKeyPair,
    name: String,
}

impl std::fmt::Debug for VendorIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorIdentity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl VendorIdentity {
    /// From the vendor certificate PEM (its first certificate is the vendor's), the key PEM
    /// (PKCS#8 or PKCS#1 RSA) and an optional chain PEM (intermediates and root, in order).
    /// `name` overrides the vendor name taken from the certificate (its O, else its CN).
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        chain_pem: Option<&[u8]>,
        name: Option<&str>,
    ) -> Result<VendorIdentity, RequestError> {
        let bad = |why: String| RequestError::Vendor(why);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("--vendor-cert: {e}")))?;
        let leaf = certs
            .first()
            .ok_or_else(|| bad("--vendor-cert holds no CERTIFICATE".into()))?
            .to_vec();
        let mut all = certs;
        if let Some(chain) = chain_pem {
            for c in CertificateDer::pem_slice_iter(chain) {
                all.push(c.map_err(|e| bad(format!("--vendor-chain: {e}")))?);
            }
        }
        let key = match PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| bad(format!("--vendor-key: {e}")))?
        {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(bad(
                    "--vendor-key must be an RSA key (PKCS#8 or PKCS#1)".into()
                ))
            }
        }
        .map_err(|e| bad(format!("--vendor-key is not a usable RSA key: {e}")))?;
        let spki = certificate_spki(&leaf).map_err(bad)?;
        if !rsa_key_matches(&spki, &key) {
            return Err(bad(
                "--vendor-key does not belong to the first certificate of --vendor-cert".into(),
            ));
        }
        let name = match name {
            Some(n) => n.to_owned(),
            None => vendor_name_of(&leaf).map_err(bad)?,
        };
        let chain_pem = all.iter().map(|c| pem("CERTIFICATE", c)).collect();
        Ok(VendorIdentity {
            chain_pem,
            leaf_der: leaf,
            key,
            name,
        })
    }

    /// The vendor name for file names, `[A-Z0-9]` only.
    pub fn file_name_part(&self) -> String {
        vendor_tag(&self.name)
    }

    /// The vendor certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.leaf_der
    }

    /// The vendor-signed push certificate request for `csr_der`: base64 of the XML plist.
    pub fn sign_request(&self, csr_der: &[u8]) -> Result<String, RequestError> {
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                csr_der,
                &mut signature,
            )
            .map_err(|_| RequestError::Vendor("the RSA signature failed".into()))?;
        let mut dict = plist::Dictionary::new();
        dict.insert(
            "PushCertRequestCSR".into(),
            plist::Value::String(B64.encode(csr_der)),
        );
        dict.insert(
            "PushCertCertificateChain".into(),
            plist::Value::String(self.chain_pem.clone()),
        );
        dict.insert(
            "PushCertSignature".into(),
            plist::Value::String(B64.encode(&signature)),
        );
        let mut xml = Vec::new();
        plist::Value::Dictionary(dict)
            .to_writer_xml(&mut xml)
            .map_err(|e| RequestError::Vendor(format!("cannot write the plist: {e}")))?;
        Ok(B64.encode(xml))
    }
}

/// A vendor-signed request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorRequest {
    /// The CSR, DER.
    pub csr_der: Vec<u8>,
    /// `PushCertCertificateChain`, PEM.
    pub chain_pem: String,
    /// `PushCertSignature`, raw.
    pub signature: Vec<u8>,
}

impl VendorRequest {
    /// Decodes the file's text (base64 of the XML plist; whitespace ignored).
    pub fn decode(text: &str) -> Result<VendorRequest, RequestError> {
        let bad = |why: String| RequestError::Malformed(why);
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let xml = B64
            .decode(compact)
            .map_err(|e| bad(format!("not base64: {e}")))?;
        let dict: plist::Dictionary =
            plist::from_bytes(&xml).map_err(|e| bad(format!("not a plist dictionary: {e}")))?;
        let field = |key: &str| {
            dict.get(key)
                .and_then(plist::Value::as_string)
                .ok_or_else(|| bad(format!("no {key} string")))
        };
        let decode = |key: &str| -> Result<Vec<u8>, RequestError> {
            let compact: String = field(key)?.chars().filter(|c| !c.is_whitespace()).collect();
            B64.decode(compact)
                .map_err(|e| bad(format!("{key} is not base64: {e}")))
        };
        Ok(VendorRequest {
            csr_der: decode("PushCertRequestCSR")?,
            chain_pem: field("PushCertCertificateChain")?.to_owned(),
            signature: decode("PushCertSignature")?,
        })
    }

    /// Checks `PushCertSignature` over the CSR with the chain's first certificate (RSA
    /// PKCS#1 v1.5, SHA-256), and the CSR's own signature.
    pub fn verify(&self) -> Result<(), RequestError> {
        let leaf = CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .next()
            .ok_or_else(|| RequestError::Malformed("PushCertCertificateChain is empty".into()))?
            .map_err(|e| RequestError::Malformed(format!("PushCertCertificateChain: {e}")))?;
        let spki = certificate_spki(&leaf).map_err(RequestError::Malformed)?;
        let public_key = rsa_public_key_bits(&spki).map_err(RequestError::Malformed)?;
        ring::signature::UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
            .verify(&self.csr_der, &self.signature)
            .map_err(|_| RequestError::BadSignature)?;
        csr_public_key(&self.csr_der)?;
        Ok(())
    }
}

/// An issued request: the new key and the file to upload to the portal.
pub struct Issued {
    /// The new private key, PKCS#8 DER (kept as a pending key, never shown).
    pub key_pkcs8: Vec<u8>,
    /// The CSR, DER.
    pub csr_der: Vec<u8>,
    /// `PushCertificate_<VENDOR>_<YYYYMMDDHHMM>.csr`.
    pub file_name: String,
    /// The file's text: the vendor-signed request, or the CSR in PEM.
    pub text: String,
    /// Whether `text` is vendor-signed.
    pub vendor_signed: bool,
    /// The CSR's subject, OpenSSL style.
    pub subject: String,
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex.
    pub public_key_sha256: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("file_name", &self.file_name)
            .field("vendor_signed", &self.vendor_signed)
            .finish_non_exhaustive()
    }
}

/// Makes a request at `now`: a new RSA-2048 key, its CSR for `subject`, and the file —
/// vendor-signed with `vendor`, else the PEM CSR for a vendor's signing service. The file
/// name's vendor part is `vendor_name`, else the vendor's, else `MAGICPUSH`. Slow (the RSA key
/// takes a fraction of a second): run it off the async workers.
pub fn issue(
    subject: &Subject,
    vendor: Option<&VendorIdentity>,
    vendor_name: Option<&str>,
    now: OffsetDateTime,
) -> Result<Issued, RequestError> {
    subject.validate()?;
    let key_pkcs8 = generate_key()?;
    let csr_der = build_csr(&key_pkcs8, subject)?;
    let spki = csr_public_key(&csr_der)?;
    let (text, vendor_signed) = match vendor {
        Some(v) => (v.sign_request(&csr_der)?, true),
        None => (pem("CERTIFICATE REQUEST", &csr_der), false),
    };
    let name = vendor_name
        .map(str::to_owned)
        .or_else(|| vendor.map(|v| v.name.clone()))
        .unwrap_or_else(|| "MAGICPUSH".to_owned());
    Ok(Issued {
        subject: csr_subject(&csr_der)?,
        public_key_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &spki)),
        file_name: file_name(&name, now),
        key_pkcs8,
        csr_der,
        text,
        vendor_signed,
    })
}

/// The subject of a CSR, OpenSSL style.
pub fn csr_subject(csr_der: &[u8]) -> Result<String, RequestError> {
    use x509_parser::prelude::FromDer as _;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|e| RequestError::NotCsr(e.to_string()))?;
    Ok(csr.certification_request_info.subject.to_string())
}

/// The request file's name: `PushCertificate_<VENDOR>_<YYYYMMDDHHMM>.csr` (UTC).
pub fn file_name(vendor: &str, at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "PushCertificate_{}_{:04}{:02}{:02}{:02}{:02}.csr",
        vendor_tag(vendor),
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// `name` upper-cased with everything but `[A-Z0-9]` dropped (`MAGICPUSH` when nothing is
/// left).
pub fn vendor_tag(name: &str) -> String {
    let tag: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if tag.is_empty() {
        "MAGICPUSH".to_owned()
    } else {
        tag
    }
}

/// The vendor's name from its certificate: the organisation, else the common name without
/// Apple's `MDM Vendor: ` prefix.
fn vendor_name_of(cert_der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("--vendor-cert does not parse: {e}"))?;
    let subject = cert.subject();
    let organisation = subject
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok().map(str::to_owned));
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(|cn| cn.trim_start_matches("MDM Vendor:").trim().to_owned());
    organisation
        .or(common_name)
        .ok_or_else(|| "--vendor-cert has neither O nor CN: give --vendor-name".into())
}

fn certificate_spki(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    Ok(cert.public_key().raw.to_vec())
}

/// The `RSAPublicKey` bits of an RSA SubjectPublicKeyInfo.
fn rsa_public_key_bits(spki_der: &[u8]) -> Result<Vec<u8>, String> {
    use x509_parser::prelude::FromDer as _;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| format!("public key does not parse: {e}"))?;
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err("the vendor certificate's key is not RSA".into());
    }
    Ok(spki.subject_public_key.data.to_vec())
}

fn rsa_key_matches(spki_der: &[u8], key: &RsaKeyPair) -> bool {
    use ring::signature::KeyPair as _;
    rsa_public_key_bits(spki_der)
        .map(|bits| bits == key.public_key().as_ref())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests;
