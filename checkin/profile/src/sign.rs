//! The signed profile: a CMS SignedData (RFC 5652 §5), DER, as Apple's profile installer reads
//! it (Apple's "Over-the-Air Profile Delivery and Configuration": a signed profile is the
//! profile wrapped in a PKCS#7 / CMS signature):
//!
//! - `encapContentInfo`: `id-data` whose content is the profile's bytes (attached, not
//!   detached: the device reads the profile out of the signature);
//! - one SignerInfo, version 1, identified by the leaf's issuer and serial number, with the
//!   signed attributes contentType (`id-data`), messageDigest and signingTime (RFC 5652 §11);
//!   SHA-256 (SHA-384 for a P-384 key, see `key`);
//! - `certificates`: the leaf and the chain certificates given with it, so that the device
//!   can build the path to a root it trusts.

use std::time::{SystemTime, UNIX_EPOCH};

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{Any, GeneralizedTime, ObjectIdentifier, OctetString, SetOfVec, UtcTime};
use der::{DateTime, Decode, Encode};
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use crate::key::{SigningKey, ID_EC_PUBLIC_KEY, RSA_ENCRYPTION};
use crate::ProfileError;

pub(crate) const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
pub(crate) const ID_SIGNED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");

/// A profile signer: a leaf certificate, the chain certificates sent with it, and the leaf's
/// private key (ECDSA P-256, P-384 or RSA).
pub struct ProfileSigner {
    /// The leaf first, then the chain as given (duplicates dropped).
    chain: Vec<Certificate>,
    key: SigningKey,
    subject: String,
}

impl std::fmt::Debug for ProfileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileSigner")
            .field("subject", &self.subject)
            .field("key", &self.key)
            .field("chain_len", &self.chain.len())
            .finish()
    }
}

impl ProfileSigner {
    /// The signer from PEM: `cert_chain_pem` holds the leaf certificate first, then any chain
    /// certificates to include (other PEM blocks are skipped); `key_pem` holds the leaf's
    /// private key as PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1
    /// (`RSA PRIVATE KEY`). A key that is not the leaf's is refused
    /// ([`ProfileError::KeyMismatch`]).
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<ProfileSigner, ProfileError> {
        let blocks = pem::parse_many(cert_chain_pem).map_err(|e| ProfileError::Pem {
            what: "certificate",
            reason: e.to_string(),
        })?;
        let mut chain: Vec<Certificate> = Vec::new();
        let mut seen: Vec<&[u8]> = Vec::new();
        for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
            let der = block.contents();
            let cert = Certificate::from_der(der).map_err(|e| ProfileError::Certificate {
                index: seen.len() + 1,
                reason: e.to_string(),
            })?;
            if !seen.contains(&der) {
                seen.push(der);
                chain.push(cert);
            }
        }
        let Some(leaf) = chain.first() else {
            return Err(ProfileError::NoCertificate);
        };
        let subject = leaf.tbs_certificate().subject().to_string();

        let key = SigningKey::from_pem(key_pem)?;
        let spki = leaf.tbs_certificate().subject_public_key_info();
        let algorithm = &spki.algorithm.oid;
        if *algorithm != ID_EC_PUBLIC_KEY && *algorithm != RSA_ENCRYPTION {
            return Err(ProfileError::UnsupportedKey {
                reason: format!("the certificate's public key algorithm is {algorithm}"),
            });
        }
        if *algorithm != key.spki_algorithm()
            || spki.subject_public_key.raw_bytes() != key.public_key()
        {
            return Err(ProfileError::KeyMismatch { subject });
        }
        Ok(ProfileSigner {
            chain,
            key,
            subject,
        })
    }

    /// The leaf certificate's subject (RFC 4514 form), for logs.
    pub fn subject(&self) -> String {
        self.subject.clone()
    }

    /// `profile` signed: a DER CMS SignedData whose encapsulated content (`id-data`) is
    /// `profile`, with the signed attributes contentType, messageDigest and signingTime (now)
    /// and the certificates of the chain.
    pub fn sign(&self, profile: &[u8]) -> Result<Vec<u8>, ProfileError> {
        self.sign_at(profile, SystemTime::now())
    }

    fn sign_at(&self, profile: &[u8], now: SystemTime) -> Result<Vec<u8>, ProfileError> {
        let digest = self.key.digest();
        let signed_attrs = SetOfVec::try_from(vec![
            attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_DATA)?)?,
            attribute(
                ID_MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.hash(profile))?)?,
            )?,
            attribute(ID_SIGNING_TIME, signing_time(now)?)?,
        ])?;
        // RFC 5652 §5.4: the signature covers the DER of the attributes as a SET OF.
        let signature = self.key.sign(&signed_attrs.to_der()?)?;

        let leaf = self.chain[0].tbs_certificate();
        let digest_alg = AlgorithmIdentifierOwned {
            oid: digest.oid(),
            parameters: None,
        };
        let signer_info = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: leaf.issuer().clone(),
                serial_number: leaf.serial_number().clone(),
            }),
            digest_alg: digest_alg.clone(),
            signed_attrs: Some(signed_attrs),
            signature_algorithm: self.key.signature_algorithm(),
            signature: OctetString::new(signature)?,
            unsigned_attrs: None,
        };
        let certificates = self
            .chain
            .iter()
            .cloned()
            .map(CertificateChoices::Certificate)
            .collect::<Vec<_>>();
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![digest_alg])?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: Some(Any::encode_from(&OctetString::new(profile)?)?),
            },
            certificates: Some(CertificateSet(SetOfVec::try_from(certificates)?)),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info])?),
        };
        Ok(ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed)?,
        }
        .to_der()?)
    }
}

impl From<der::Error> for ProfileError {
    fn from(e: der::Error) -> ProfileError {
        ProfileError::Sign(format!("DER encoding: {e}"))
    }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> der::Result<Attribute> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value])?,
    })
}

/// signingTime (RFC 5652 §11.3): UTCTime up to 2049, GeneralizedTime from 2050.
fn signing_time(now: SystemTime) -> der::Result<Any> {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let at = DateTime::from_unix_duration(since_epoch)?;
    if at.year() < 2050 {
        Any::encode_from(&UtcTime::from_date_time(at)?)
    } else {
        Any::encode_from(&GeneralizedTime::from_date_time(at))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use der::{Tag, Tagged};

    use super::*;

    #[test]
    fn signing_time_switches_to_generalized_time_in_2050() {
        let t2049 = UNIX_EPOCH + Duration::from_secs(2_524_607_999); // 2049-12-31T23:59:59Z
        assert_eq!(signing_time(t2049).unwrap().tag(), Tag::UtcTime);
        let t2050 = t2049 + Duration::from_secs(1);
        assert_eq!(signing_time(t2050).unwrap().tag(), Tag::GeneralizedTime);
    }
}
