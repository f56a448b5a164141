//! `Mdm-Signature`: base64 of a CMS SignedData (RFC 5652) whose content is detached — the
//! signed content is the exact HTTP body. Devices send it with `SignMessage` in their MDM
//! payload, in BER with indefinite lengths.
//!
//! [`verify_detached`] checks, in order: exactly one signer; its certificate in the message's
//! certificate set; signed attributes with contentType id-data and a messageDigest equal
//! (constant time) to the body's digest; the signature over the DER re-encoding of the signed
//! attributes (a SET OF, not the `[0] IMPLICIT` bytes of the message) with the certificate's
//! key; a signingTime, when present, inside the certificate's validity. It does **not** decide
//! whether the certificate is trusted: that is [`super::trust`].
//!
//! Digests SHA-1, SHA-256, SHA-384, SHA-512; signatures RSA PKCS#1 v1.5 (2048 to 8192 bits)
//! and ECDSA P-256 / P-384. *ring* verifies every pair it has (all of them but ECDSA with
//! SHA-1 or SHA-512, which RustCrypto's `p256`/`p384` verify over the digest).

use base64::Engine as _;
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode, EncodingRules};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::time::Time;
use x509_cert::Certificate;

use super::{Refusal, MAX_SIGNATURE_HEADER};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");

const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA1_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_WITH_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// What a valid signature tells: who signed, and when they say they did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The signer's certificate (DER), as carried in the message. Not yet trusted.
    pub certificate_der: Vec<u8>,
    /// The signingTime attribute, if present.
    pub signing_time: Option<OffsetDateTime>,
}

/// Decodes the `Mdm-Signature` header's value: refuses more than [`MAX_SIGNATURE_HEADER`]
/// bytes before looking at them, then base64 (standard alphabet; line breaks and spaces are
/// ignored, as some clients fold long values).
pub fn decode_header(value: &[u8]) -> Result<Vec<u8>, Refusal> {
    if value.len() > MAX_SIGNATURE_HEADER {
        return Err(Refusal::Oversized(value.len()));
    }
    // Devices send one unbroken line: decode it in place; copy only a folded value.
    let folded;
    let text = if value.iter().any(u8::is_ascii_whitespace) {
        folded = value
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect::<Vec<u8>>();
        &folded[..]
    } else {
        value
    };
    if text.is_empty() {
        return Err(Refusal::Malformed("the header is empty".into()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Refusal::Malformed(format!("not base64: {e}")))
}

/// Verifies a detached CMS SignedData (BER or DER) over `content`. See the module docs.
pub fn verify_detached(cms: &[u8], content: &[u8]) -> Result<Signer, Refusal> {
    let info = ContentInfo::from_ber(cms).map_err(malformed)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(Refusal::Malformed(format!(
            "content type {}, not SignedData",
            info.content_type
        )));
    }
    let signed: SignedData = info
        .content
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(malformed)?;
    if signed.encap_content_info.econtent.is_some() {
        return Err(Refusal::Malformed(
            "the content is attached; Mdm-Signature must be detached (the body is the content)"
                .into(),
        ));
    }
    let signers = signed.signer_infos.0.as_slice();
    let [signer] = signers else {
        return Err(Refusal::SignerCount(signers.len()));
    };
    let certificate = find_certificate(&signed, &signer.sid)?;
    let digest = digest_algorithm(signer)?;
    let key = KeyKind::of(certificate)?;
    key.check_signature_algorithm(&signer.signature_algorithm.oid)?;

    let attrs = signer.signed_attrs.as_ref().ok_or_else(|| {
        Refusal::SignedAttributes("no signed attributes (messageDigest is required)".into())
    })?;
    let mut content_type = None;
    let mut message_digest = None;
    let mut signing_time = None;
    for attr in attrs.iter() {
        let slot = match attr.oid {
            oid if oid == ID_CONTENT_TYPE => &mut content_type,
            oid if oid == ID_MESSAGE_DIGEST => &mut message_digest,
            oid if oid == ID_SIGNING_TIME => &mut signing_time,
            _ => continue,
        };
        let [value] = attr.values.as_slice() else {
            return Err(Refusal::SignedAttributes(format!(
                "attribute {} must have exactly one value",
                attr.oid
            )));
        };
        if slot.replace(value).is_some() {
            return Err(Refusal::SignedAttributes(format!(
                "attribute {} appears twice",
                attr.oid
            )));
        }
    }
    let content_type: ObjectIdentifier = content_type
        .ok_or_else(|| Refusal::SignedAttributes("no contentType attribute".into()))?
        .decode_as()
        .map_err(|e| Refusal::SignedAttributes(format!("contentType: {e}")))?;
    if content_type != ID_DATA {
        return Err(Refusal::SignedAttributes(format!(
            "contentType is {content_type}, not id-data"
        )));
    }
    let expected: OctetString = message_digest
        .ok_or_else(|| Refusal::SignedAttributes("no messageDigest attribute".into()))?
        .decode_as()
        .map_err(|e| Refusal::SignedAttributes(format!("messageDigest: {e}")))?;
    let actual = ring::digest::digest(digest.ring(), content);
    if !bool::from(expected.as_bytes().ct_eq(actual.as_ref())) {
        return Err(Refusal::DigestMismatch);
    }
    let signing_time = signing_time
        .map(|any| {
            let der = any.to_der().map_err(malformed)?;
            let time = Time::from_der(&der)
                .map_err(|e| Refusal::SignedAttributes(format!("signingTime: {e}")))?;
            to_datetime(time)
        })
        .transpose()?;

    // The signature covers the DER of the attributes as a SET OF (tag 0x31).
    let signed_attrs = attrs.to_der().map_err(malformed)?;
    key.verify(
        digest,
        &signed_attrs,
        signer.signature.as_bytes(),
        certificate,
    )?;

    if let Some(at) = signing_time {
        let validity = certificate.tbs_certificate().validity();
        let not_before = to_datetime(validity.not_before)?;
        let not_after = to_datetime(validity.not_after)?;
        if at < not_before || at > not_after {
            return Err(Refusal::SigningTime {
                signing_time: super::rfc3339(at),
            });
        }
    }
    Ok(Signer {
        certificate_der: certificate.to_der().map_err(malformed)?,
        signing_time,
    })
}

fn malformed(e: der::Error) -> Refusal {
    Refusal::Malformed(e.to_string())
}

fn to_datetime(time: Time) -> Result<OffsetDateTime, Refusal> {
    let secs = time.to_unix_duration().as_secs();
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| Refusal::Malformed("a time out of range".into()))
}

/// The signer's certificate, by issuer and serial number or by subject key identifier.
fn find_certificate<'a>(
    signed: &'a SignedData,
    sid: &SignerIdentifier,
) -> Result<&'a Certificate, Refusal> {
    let certificates = signed.certificates.iter().flat_map(|set| set.0.iter());
    for choice in certificates {
        let CertificateChoices::Certificate(cert) = choice else {
            continue;
        };
        let tbs = cert.tbs_certificate();
        let matches = match sid {
            SignerIdentifier::IssuerAndSerialNumber(isn) => {
                tbs.issuer() == &isn.issuer && tbs.serial_number() == &isn.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => matches!(
                tbs.get_extension::<SubjectKeyIdentifier>(),
                Ok(Some((_, ref own))) if own == ski
            ),
        };
        if matches {
            return Ok(cert);
        }
    }
    Err(Refusal::SignerCertificateMissing)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            Digest::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &ring::digest::SHA256,
            Digest::Sha384 => &ring::digest::SHA384,
            Digest::Sha512 => &ring::digest::SHA512,
        }
    }
}

fn digest_algorithm(signer: &SignerInfo) -> Result<Digest, Refusal> {
    match signer.digest_alg.oid {
        oid if oid == ID_SHA1 => Ok(Digest::Sha1),
        oid if oid == ID_SHA256 => Ok(Digest::Sha256),
        oid if oid == ID_SHA384 => Ok(Digest::Sha384),
        oid if oid == ID_SHA512 => Ok(Digest::Sha512),
        oid => Err(Refusal::UnsupportedAlgorithm(format!("digest {oid}"))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
}

impl KeyKind {
    fn of(cert: &Certificate) -> Result<KeyKind, Refusal> {
        let spki = cert.tbs_certificate().subject_public_key_info();
        match spki.algorithm.oid {
            oid if oid == RSA_ENCRYPTION => Ok(KeyKind::Rsa),
            oid if oid == ID_EC_PUBLIC_KEY => {
                let curve: ObjectIdentifier = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as().ok())
                    .ok_or_else(|| {
                        Refusal::UnsupportedAlgorithm("EC key without a named curve".into())
                    })?;
                match curve {
                    c if c == SECP256R1 => Ok(KeyKind::P256),
                    c if c == SECP384R1 => Ok(KeyKind::P384),
                    c => Err(Refusal::UnsupportedAlgorithm(format!("EC curve {c}"))),
                }
            }
            oid => Err(Refusal::UnsupportedAlgorithm(format!("public key {oid}"))),
        }
    }

    /// The SignerInfo's signature algorithm must name this key's family; the hash is always
    /// the digest algorithm's (devices write `rsaEncryption` or `sha…WithRSAEncryption` alike).
    fn check_signature_algorithm(self, oid: &ObjectIdentifier) -> Result<(), Refusal> {
        let rsa = [
            RSA_ENCRYPTION,
            SHA1_WITH_RSA,
            SHA256_WITH_RSA,
            SHA384_WITH_RSA,
            SHA512_WITH_RSA,
        ];
        let ec = [
            ID_EC_PUBLIC_KEY,
            ECDSA_WITH_SHA1,
            ECDSA_WITH_SHA256,
            ECDSA_WITH_SHA384,
            ECDSA_WITH_SHA512,
        ];
        let allowed: &[ObjectIdentifier] = match self {
            KeyKind::Rsa => &rsa,
            KeyKind::P256 | KeyKind::P384 => &ec,
        };
        if allowed.contains(oid) {
            Ok(())
        } else {
            Err(Refusal::UnsupportedAlgorithm(format!(
                "signature algorithm {oid} with a {self:?} key"
            )))
        }
    }

    fn verify(
        self,
        digest: Digest,
        message: &[u8],
        signature: &[u8],
        cert: &Certificate,
    ) -> Result<(), Refusal> {
        use ring::signature as sig;
        let key = cert
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes();
        let ring_alg: Option<&'static dyn sig::VerificationAlgorithm> = match (self, digest) {
            (KeyKind::Rsa, Digest::Sha1) => {
                Some(&sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY)
            }
            (KeyKind::Rsa, Digest::Sha256) => Some(&sig::RSA_PKCS1_2048_8192_SHA256),
            (KeyKind::Rsa, Digest::Sha384) => Some(&sig::RSA_PKCS1_2048_8192_SHA384),
            (KeyKind::Rsa, Digest::Sha512) => Some(&sig::RSA_PKCS1_2048_8192_SHA512),
            (KeyKind::P256, Digest::Sha256) => Some(&sig::ECDSA_P256_SHA256_ASN1),
            (KeyKind::P256, Digest::Sha384) => Some(&sig::ECDSA_P256_SHA384_ASN1),
            (KeyKind::P384, Digest::Sha256) => Some(&sig::ECDSA_P384_SHA256_ASN1),
            (KeyKind::P384, Digest::Sha384) => Some(&sig::ECDSA_P384_SHA384_ASN1),
            _ => None,
        };
        let ok = match ring_alg {
            Some(alg) => sig::UnparsedPublicKey::new(alg, key)
                .verify(message, signature)
                .is_ok(),
            None => {
                let prehash = ring::digest::digest(digest.ring(), message);
                ecdsa_prehash(self, key, prehash.as_ref(), signature)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Refusal::BadSignature)
        }
    }
}

/// ECDSA over a digest *ring* has no algorithm for (SHA-1, SHA-512).
fn ecdsa_prehash(kind: KeyKind, point: &[u8], prehash: &[u8], signature: &[u8]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    match kind {
        KeyKind::P256 => {
            let (Ok(key), Ok(sig)) = (
                p256::ecdsa::VerifyingKey::from_sec1_bytes(point),
                p256::ecdsa::Signature::from_der(signature),
            ) else {
                return false;
            };
            key.verify_prehash(prehash, &sig).is_ok()
        }
        KeyKind::P384 => {
            let (Ok(key), Ok(sig)) = (
                p384::ecdsa::VerifyingKey::from_sec1_bytes(point),
                p384::ecdsa::Signature::from_der(signature),
            ) else {
                return false;
            };
            key.verify_prehash(prehash, &sig).is_ok()
        }
        KeyKind::Rsa => false,
    }
}

#[cfg(test)]
mod tests;
