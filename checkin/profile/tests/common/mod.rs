//! Test fixtures: a small CA (ECDSA P-256) and leaves under it with P-256, P-384 and RSA keys,
//! their keys in every PEM form [`magicpush_profile::ProfileSigner::from_pem`] reads.

#![allow(dead_code, unreachable_pub)]

use std::sync::OnceLock;

use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Tag, TagNumber, Tagged};
use magicpush_profile::EnrollmentProfile;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};

/// The test CA: its certificate (PEM, DER) and key.
pub struct Ca {
    pub pem: String,
    pub der: Vec<u8>,
    key: KeyPair,
    params: CertificateParams,
}

pub fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "magicpush test profile CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            key,
            params,
        }
    })
}

/// The kinds of signer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    P256,
    P384,
    Rsa,
}

pub const KINDS: [Kind; 3] = [Kind::P256, Kind::P384, Kind::Rsa];

/// A 2048-bit RSA key (PKCS#8 PEM), generated once per test binary.
fn rsa_pkcs8_pem() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    })
}

/// A fresh key of `kind`, PKCS#8 PEM (RSA: the one key of the binary).
pub fn key_pem(kind: Kind) -> String {
    match kind {
        Kind::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem(),
        Kind::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .unwrap()
            .serialize_pem(),
        Kind::Rsa => rsa_pkcs8_pem().to_owned(),
    }
}

fn algorithm(kind: Kind) -> &'static SignatureAlgorithm {
    match kind {
        Kind::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Kind::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        Kind::Rsa => &rcgen::PKCS_RSA_SHA256,
    }
}

/// A leaf signed by [`ca`], for the key `key_pem` (PKCS#8) of `kind`: its PEM.
pub fn leaf_pem(kind: Kind, key_pem: &str, cn: &str) -> String {
    let key = KeyPair::from_pem_and_sign_algo(key_pem, algorithm(kind)).unwrap();
    let mut params = CertificateParams::new(vec!["mdm.example.com".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let ca = ca();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    params.signed_by(&key, &issuer).unwrap().pem()
}

/// A signer's files: the leaf (PEM), the key in PKCS#8 PEM.
pub struct Signer {
    pub kind: Kind,
    pub leaf_pem: String,
    pub key_pem: String,
}

pub fn signer(kind: Kind) -> Signer {
    let key_pem = key_pem(kind);
    let leaf_pem = leaf_pem(kind, &key_pem, &format!("profile signer {kind:?}"));
    Signer {
        kind,
        leaf_pem,
        key_pem,
    }
}

const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The SEC1 `ECPrivateKey` inside a PKCS#8 EC key, as `EC PRIVATE KEY` PEM; with the
/// `[0] parameters` (the curve) when `with_curve`, as OpenSSL writes it.
pub fn sec1_pem(kind: Kind, pkcs8_pem: &str, with_curve: bool) -> String {
    let pkcs8 = pem::parse(pkcs8_pem).unwrap();
    let fields = Vec::<Any>::from_der(pkcs8.contents()).unwrap();
    let sec1 = OctetString::from_der(&fields[2].to_der().unwrap())
        .unwrap()
        .into_bytes();
    let mut inner = Vec::<Any>::from_der(&sec1).unwrap();
    let der = if with_curve {
        let curve = if kind == Kind::P256 {
            SECP256R1
        } else {
            SECP384R1
        };
        inner.retain(
            |f| !matches!(f.tag(), Tag::ContextSpecific { number, .. } if number == TagNumber(0)),
        );
        let params = Any::new(
            Tag::ContextSpecific {
                constructed: true,
                number: TagNumber(0),
            },
            curve.to_der().unwrap(),
        )
        .unwrap();
        inner.insert(2, params);
        inner.to_der().unwrap()
    } else {
        sec1.to_vec()
    };
    pem::encode(&pem::Pem::new("EC PRIVATE KEY", der))
}

/// The PKCS#1 form of the binary's RSA key, `RSA PRIVATE KEY` PEM.
pub fn rsa_pkcs1_pem() -> String {
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(rsa_pkcs8_pem()).unwrap();
    key.to_pkcs1_pem(LineEnding::LF).unwrap().to_string()
}

/// An enrollment profile of test values (the device CA is the test CA).
pub fn sample(server_ca_der: Option<&[u8]>) -> EnrollmentProfile<'_> {
    EnrollmentProfile {
        display_name: "magicpush enrollment (Acme)",
        organization: "Acme Inc.",
        identifier: "com.magicpush.enroll.inv42",
        topic: "com.apple.mgmt.External.5b0e2a8e-7d0c-4d3e-9a53-3f6f5f1c2b7a",
        server_url: "https://mdm.example.com/mdm/server",
        check_in_url: "https://mdm.example.com/mdm/checkin",
        scep_url: "https://mdm.example.com/scep",
        challenge: "one-time-challenge-9f8e7d",
        subject_common_name: "magicpush device inv42",
        ca_certificate_der: &ca().der,
        server_ca_der,
    }
}
