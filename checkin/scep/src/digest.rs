//! Digests and signatures: *ring* hashes and verifies (as the server's `Mdm-Signature` check
//! does); the `rsa` crate signs with the CA key, for every digest a request may use
//! (*ring* cannot sign with SHA-1).

use der::asn1::ObjectIdentifier;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use crate::oid;

/// The digest of a SignerInfo (request and reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// SHA-1: scepclient 2.1 and older iOS.
    Sha1,
    /// SHA-256: the default of the replies.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Digest {
    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<Digest> {
        match *oid {
            o if o == oid::ID_SHA1 => Some(Digest::Sha1),
            o if o == oid::ID_SHA256 => Some(Digest::Sha256),
            o if o == oid::ID_SHA384 => Some(Digest::Sha384),
            o if o == oid::ID_SHA512 => Some(Digest::Sha512),
            _ => None,
        }
    }

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Digest::Sha1 => oid::ID_SHA1,
            Digest::Sha256 => oid::ID_SHA256,
            Digest::Sha384 => oid::ID_SHA384,
            Digest::Sha512 => oid::ID_SHA512,
        }
    }

    fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            Digest::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &ring::digest::SHA256,
            Digest::Sha384 => &ring::digest::SHA384,
            Digest::Sha512 => &ring::digest::SHA512,
        }
    }

    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        ring::digest::digest(self.ring(), data).as_ref().to_vec()
    }

    /// The DER DigestInfo prefix of PKCS#1 v1.5 signatures (RFC 8017 §9.2, note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Digest::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            Digest::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Digest::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Digest::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    /// RSA PKCS#1 v1.5 signature over `data` with this digest.
    pub(crate) fn sign_rsa(self, key: &RsaPrivateKey, data: &[u8]) -> Result<Vec<u8>, rsa::Error> {
        let hashed = self.hash(data);
        let padding = Pkcs1v15Sign {
            hash_len: Some(hashed.len()),
            prefix: Box::from(self.digest_info_prefix()),
        };
        key.sign(padding, &hashed)
    }
}

/// Verifies `signature` over `message` with the key of `spki`: RSA PKCS#1 v1.5 (2048 to 8192
/// bits) with any [`Digest`], or ECDSA P-256/P-384 with SHA-256/384 (CSRs only).
pub(crate) fn verify(
    spki: &SubjectPublicKeyInfoOwned,
    digest: Digest,
    message: &[u8],
    signature: &[u8],
) -> bool {
    use ring::signature as sig;
    let key = spki.subject_public_key.raw_bytes();
    let alg: &'static dyn sig::VerificationAlgorithm = if spki.algorithm.oid == oid::RSA_ENCRYPTION
    {
        match digest {
            Digest::Sha1 => &sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            Digest::Sha384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            Digest::Sha512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        }
    } else if spki.algorithm.oid == oid::ID_EC_PUBLIC_KEY {
        let curve: Option<ObjectIdentifier> = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as().ok());
        match (curve, digest) {
            (Some(c), Digest::Sha256) if c == oid::SECP256R1 => &sig::ECDSA_P256_SHA256_ASN1,
            (Some(c), Digest::Sha384) if c == oid::SECP256R1 => &sig::ECDSA_P256_SHA384_ASN1,
            (Some(c), Digest::Sha256) if c == oid::SECP384R1 => &sig::ECDSA_P384_SHA256_ASN1,
            (Some(c), Digest::Sha384) if c == oid::SECP384R1 => &sig::ECDSA_P384_SHA384_ASN1,
            _ => return false,
        }
    } else {
        return false;
    };
    sig::UnparsedPublicKey::new(alg, key)
        .verify(message, signature)
        .is_ok()
}

/// The digest named by a certificate or CSR signature algorithm (`sha…WithRSAEncryption`,
/// `ecdsa-with-SHA…`).
pub(crate) fn of_signature_algorithm(oid: &ObjectIdentifier) -> Option<Digest> {
    match *oid {
        o if o == oid::SHA1_WITH_RSA => Some(Digest::Sha1),
        o if o == oid::SHA256_WITH_RSA || o == oid::ECDSA_WITH_SHA256 => Some(Digest::Sha256),
        o if o == oid::SHA384_WITH_RSA || o == oid::ECDSA_WITH_SHA384 => Some(Digest::Sha384),
        o if o == oid::SHA512_WITH_RSA => Some(Digest::Sha512),
        _ => None,
    }
}

/// Constant-time equality of two byte strings (for challenge stores comparing secrets).
/// Lengths are not secret: unequal lengths return `false` at once.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
