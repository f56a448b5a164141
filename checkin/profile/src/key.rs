//! The signer's private key, from the PEM forms a TLS key commonly comes in:
//!
//! - `PRIVATE KEY`: PKCS#8 (RFC 5958), ECDSA P-256, P-384 or RSA;
//! - `EC PRIVATE KEY`: SEC1 (RFC 5915), as `openssl ecparam -genkey` writes it; re-wrapped as
//!   PKCS#8 for *ring*, which reads only that. *ring* wants the public key inside (OpenSSL
//!   always writes it) and checks that it matches the private key;
//! - `RSA PRIVATE KEY`: PKCS#1 (RFC 8017 appendix A.1.2).
//!
//! Digests: SHA-256 with RSA and P-256; SHA-384 with P-384, the digest of that curve's
//! strength (RFC 5753 §7.1 pairs them) and the only one *ring* signs P-384 with.

use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::Encode;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::ProfileError;

pub(crate) const ID_EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");

/// The digest of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Digest {
    Sha256,
    Sha384,
}

impl Digest {
    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Digest::Sha256 => ID_SHA256,
            Digest::Sha384 => ID_SHA384,
        }
    }

    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Digest::Sha256 => &ring::digest::SHA256,
            Digest::Sha384 => &ring::digest::SHA384,
        };
        ring::digest::digest(alg, data).as_ref().to_vec()
    }
}

/// A private key that signs.
pub(crate) enum SigningKey {
    /// P-256 with SHA-256, or P-384 with SHA-384; signatures DER `Ecdsa-Sig-Value`.
    Ecdsa(EcdsaKeyPair, Digest),
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl SigningKey {
    /// The key in the first private key block of `pem_text`.
    pub(crate) fn from_pem(pem_text: &str) -> Result<SigningKey, ProfileError> {
        let blocks = pem::parse_many(pem_text).map_err(|e| ProfileError::Pem {
            what: "private key",
            reason: e.to_string(),
        })?;
        let rng = SystemRandom::new();
        let mut found = Vec::new();
        for block in &blocks {
            let der = block.contents();
            match block.tag() {
                "PRIVATE KEY" => return Self::from_pkcs8(der, &rng),
                "EC PRIVATE KEY" => return Self::from_sec1(der, &rng),
                "RSA PRIVATE KEY" => {
                    return RsaKeyPair::from_der(der)
                        .map(SigningKey::Rsa)
                        .map_err(|e| unsupported(format!("PKCS#1 RSA key: {e}")))
                }
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(unsupported(
                        "the key is encrypted: decrypt it first, e.g. with openssl pkey".into(),
                    ))
                }
                other => found.push(other.to_owned()),
            }
        }
        Err(ProfileError::NoKey {
            found: if found.is_empty() {
                String::new()
            } else {
                format!(" (found: {})", found.join(", "))
            },
        })
    }

    fn from_pkcs8(der: &[u8], rng: &SystemRandom) -> Result<SigningKey, ProfileError> {
        let p256 =
            match EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, rng) {
                Ok(pair) => return Ok(SigningKey::Ecdsa(pair, Digest::Sha256)),
                Err(e) => e,
            };
        let p384 =
            match EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, der, rng) {
                Ok(pair) => return Ok(SigningKey::Ecdsa(pair, Digest::Sha384)),
                Err(e) => e,
            };
        match RsaKeyPair::from_pkcs8(der) {
            Ok(pair) => Ok(SigningKey::Rsa(pair)),
            Err(rsa) => Err(unsupported(format!(
                "PKCS#8 key: as P-256 {p256}, as P-384 {p384}, as RSA {rsa}"
            ))),
        }
    }

    fn from_sec1(der: &[u8], rng: &SystemRandom) -> Result<SigningKey, ProfileError> {
        let mut reasons = Vec::new();
        for (curve, alg, digest) in [
            (
                SECP256R1,
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                Digest::Sha256,
            ),
            (
                SECP384R1,
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                Digest::Sha384,
            ),
        ] {
            let pkcs8 =
                sec1_to_pkcs8(der, curve).map_err(|e| unsupported(format!("SEC1 EC key: {e}")))?;
            match EcdsaKeyPair::from_pkcs8(alg, &pkcs8, rng) {
                Ok(pair) => return Ok(SigningKey::Ecdsa(pair, digest)),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        Err(unsupported(format!(
            "SEC1 EC key: as P-256 {}, as P-384 {}",
            reasons[0], reasons[1]
        )))
    }

    /// The public key as a certificate's SubjectPublicKeyInfo bit string holds it (an EC
    /// point, or a DER RSAPublicKey).
    pub(crate) fn public_key(&self) -> &[u8] {
        match self {
            SigningKey::Ecdsa(pair, _) => pair.public_key().as_ref(),
            SigningKey::Rsa(pair) => pair.public_key().as_ref(),
        }
    }

    /// The SubjectPublicKeyInfo algorithm a matching certificate has.
    pub(crate) fn spki_algorithm(&self) -> ObjectIdentifier {
        match self {
            SigningKey::Ecdsa(..) => ID_EC_PUBLIC_KEY,
            SigningKey::Rsa(_) => RSA_ENCRYPTION,
        }
    }

    pub(crate) fn digest(&self) -> Digest {
        match self {
            SigningKey::Ecdsa(_, digest) => *digest,
            SigningKey::Rsa(_) => Digest::Sha256,
        }
    }

    /// The SignerInfo's signatureAlgorithm: `ecdsa-with-SHA256/384` (no parameters, RFC 5758
    /// §3.2), or `rsaEncryption` with NULL parameters (RFC 3370 §3.2, as OpenSSL writes it).
    pub(crate) fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        match self {
            SigningKey::Ecdsa(_, Digest::Sha256) => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA256,
                parameters: None,
            },
            SigningKey::Ecdsa(_, Digest::Sha384) => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA384,
                parameters: None,
            },
            SigningKey::Rsa(_) => AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
        }
    }

    /// The signature over `message` (hashed with [`SigningKey::digest`]).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, ProfileError> {
        let rng = SystemRandom::new();
        match self {
            SigningKey::Ecdsa(pair, _) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| ProfileError::Sign("ECDSA signature failed".into())),
            SigningKey::Rsa(pair) => {
                let mut out = vec![0u8; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .map_err(|_| ProfileError::Sign("RSA signature failed".into()))?;
                Ok(out)
            }
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            SigningKey::Ecdsa(_, Digest::Sha256) => "ECDSA P-256",
            SigningKey::Ecdsa(_, Digest::Sha384) => "ECDSA P-384",
            SigningKey::Rsa(_) => "RSA",
        }
    }
}

fn unsupported(reason: String) -> ProfileError {
    ProfileError::UnsupportedKey { reason }
}

/// A SEC1 `ECPrivateKey` wrapped as a PKCS#8 `PrivateKeyInfo` (RFC 5915 §3 / RFC 5958 §2):
/// `SEQUENCE { 0, SEQUENCE { id-ecPublicKey, curve }, OCTET STRING sec1 }`.
pub(crate) fn sec1_to_pkcs8(sec1: &[u8], curve: ObjectIdentifier) -> der::Result<Vec<u8>> {
    let algorithm = AlgorithmIdentifierOwned {
        oid: ID_EC_PUBLIC_KEY,
        parameters: Some(Any::encode_from(&curve)?),
    };
    vec![
        Any::encode_from(&0u8)?,
        Any::encode_from(&algorithm)?,
        Any::encode_from(&OctetString::new(sec1)?)?,
    ]
    .to_der()
}
