//! A simulated device's identity: its certificate and key (P-256, as ACME identities have, or
//! RSA, as SCEP ones mostly do), and the `Mdm-Signature` it puts on every check-in and report,
//! as a device with `SignMessage` does — a detached CMS SignedData over the body, signed
//! attributes contentType, signingTime and messageDigest (SHA-256), ECDSA with SHA-256 or RSA
//! PKCS#1 v1.5 (written `rsaEncryption`, as devices do), the signer's certificate included.

use base64::Engine as _;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec, UtcTime};
use der::{Any, Decode, Encode};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, RSA_PKCS1_SHA256};
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// A signing identity could not be made from the certificate and key given.
#[derive(Debug, thiserror::Error)]
#[error("device identity: {0}")]
pub struct SignerError(String);

/// One device's certificate and key.
pub struct DeviceSigner {
    certificate: Certificate,
    key: Key,
    rng: SystemRandom,
}

enum Key {
    P256(Box<EcdsaKeyPair>),
    Rsa(std::sync::Arc<RsaKeyPair>),
}

impl std::fmt::Debug for DeviceSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSigner").finish_non_exhaustive()
    }
}

impl DeviceSigner {
    /// From the certificate (DER) and its key (PKCS#8 DER): P-256, or else RSA.
    pub fn new(cert_der: &[u8], pkcs8: &[u8]) -> Result<DeviceSigner, SignerError> {
        let rng = SystemRandom::new();
        let key = match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng) {
            Ok(key) => Key::P256(Box::new(key)),
            Err(_) => Key::Rsa(std::sync::Arc::new(RsaKeyPair::from_pkcs8(pkcs8).map_err(
                |e| SignerError(format!("neither a P-256 nor an RSA PKCS#8 key: {e}")),
            )?)),
        };
        let certificate =
            Certificate::from_der(cert_der).map_err(|e| SignerError(e.to_string()))?;
        Ok(DeviceSigner {
            certificate,
            key,
            rng,
        })
    }

    /// The certificate (DER) with an RSA key already loaded (a key many devices share, as
    /// the `--enroll` key pool's).
    pub fn with_rsa_key(
        cert_der: &[u8],
        key: &std::sync::Arc<RsaKeyPair>,
    ) -> Result<DeviceSigner, SignerError> {
        Ok(DeviceSigner {
            certificate: Certificate::from_der(cert_der).map_err(|e| SignerError(e.to_string()))?,
            key: Key::Rsa(key.clone()),
            rng: SystemRandom::new(),
        })
    }

    /// Another device's certificate (DER) for the same RSA key (`None` for a P-256 signer):
    /// the benchmark gives many devices one RSA key, as generating one each takes too long.
    pub fn with_certificate(&self, cert_der: &[u8]) -> Option<DeviceSigner> {
        let Key::Rsa(key) = &self.key else {
            return None;
        };
        Some(DeviceSigner {
            certificate: Certificate::from_der(cert_der).ok()?,
            key: Key::Rsa(key.clone()),
            rng: SystemRandom::new(),
        })
    }

    /// The `Mdm-Signature` header value for `body`: base64 of the DER SignedData.
    pub fn sign(&self, body: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.sign_der(body))
    }

    /// The SignedData (in a ContentInfo), DER.
    pub fn sign_der(&self, body: &[u8]) -> Vec<u8> {
        self.try_sign(body, self.certificate.clone())
            // Every value here is built from well-formed parts; encoding cannot fail.
            .unwrap_or_default()
    }

    /// As [`DeviceSigner::sign_der`], but the SignedData carries `certificate` instead of the
    /// signer's own (a device presenting another device's certificate with its own key).
    pub fn sign_der_claiming(&self, body: &[u8], certificate: &[u8]) -> Vec<u8> {
        Certificate::from_der(certificate)
            .ok()
            .and_then(|c| self.try_sign(body, c).ok())
            .unwrap_or_default()
    }

    fn try_sign(&self, body: &[u8], certificate: Certificate) -> der::Result<Vec<u8>> {
        let digest = ring::digest::digest(&ring::digest::SHA256, body);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let attrs: SetOfVec<Attribute> = SetOfVec::try_from(vec![
            attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_DATA)?)?,
            attribute(
                ID_SIGNING_TIME,
                Any::encode_from(&UtcTime::from_unix_duration(now)?)?,
            )?,
            attribute(
                ID_MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.as_ref())?)?,
            )?,
        ])?;
        let to_sign = attrs.to_der()?;
        let failed = |_| der::Error::from(der::ErrorKind::Failed);
        let (signature, signature_algorithm) = match &self.key {
            Key::P256(key) => (
                key.sign(&self.rng, &to_sign)
                    .map_err(failed)?
                    .as_ref()
                    .to_vec(),
                ECDSA_WITH_SHA256,
            ),
            Key::Rsa(key) => {
                let mut out = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &self.rng, &to_sign, &mut out)
                    .map_err(failed)?;
                (out, RSA_ENCRYPTION)
            }
        };
        let tbs = certificate.tbs_certificate();
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            digest_alg: algorithm(ID_SHA256),
            signed_attrs: Some(attrs),
            signature_algorithm: algorithm(signature_algorithm),
            signature: OctetString::new(signature)?,
            unsigned_attrs: None,
        };
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![algorithm(ID_SHA256)])?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_DATA,
                econtent: None,
            },
            certificates: Some(CertificateSet(SetOfVec::try_from(vec![
                CertificateChoices::Certificate(certificate),
            ])?)),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer])?),
        };
        ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed)?,
        }
        .to_der()
    }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> der::Result<Attribute> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value])?,
    })
}

fn algorithm(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

#[cfg(test)]
mod tests {
    use magicpush_fixtures::{device_identity_cert, Ca, KeyKind};
    use magicpush_server::identity::signature::verify_detached;

    use super::*;

    #[test]
    fn the_checkin_server_verifies_what_a_simulated_device_signs() {
        let ca = Ca::new("fleet device CA", KeyKind::EcdsaP256).unwrap();
        let device = device_identity_cert(&ca, "UDID-1", KeyKind::EcdsaP256).unwrap();
        let signer = DeviceSigner::new(&device.cert_der, &device.key_der).unwrap();
        let body = b"<plist>body</plist>";
        let cms = signer.sign_der(body);
        let verified = verify_detached(&cms, body).unwrap();
        assert_eq!(verified.certificate_der, device.cert_der);
        assert!(verify_detached(&cms, b"<plist>other</plist>").is_err());
        let header = signer.sign(body);
        let decoded = magicpush_server::identity::signature::decode_header(header.as_bytes());
        assert!(verify_detached(&decoded.unwrap(), body).is_ok());
        // Another device's certificate with this device's key does not verify.
        let other = device_identity_cert(&ca, "UDID-2", KeyKind::EcdsaP256).unwrap();
        let forged = signer.sign_der_claiming(body, &other.cert_der);
        assert_eq!(
            verify_detached(&forged, body).unwrap_err().reason(),
            "bad_signature"
        );
    }

    #[test]
    fn rsa_identities_sign_too_and_share_a_key() {
        use rustls_pki_types::pem::PemObject;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/mdm-signature/");
        let read = |name: &str| std::fs::read(format!("{dir}{name}")).unwrap();
        let cert =
            rustls_pki_types::CertificateDer::from_pem_slice(&read("device-rsa.pem")).unwrap();
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(&read("device-rsa.key.pem")).unwrap();
        let signer = DeviceSigner::new(&cert, key.secret_der()).unwrap();
        let body = b"<plist>rsa</plist>";
        let verified = verify_detached(&signer.sign_der(body), body).unwrap();
        assert_eq!(verified.certificate_der, cert.as_ref());
        let same = signer.with_certificate(&cert).unwrap();
        assert!(verify_detached(&same.sign_der(body), body).is_ok());
        let ca = Ca::new("fleet device CA", KeyKind::EcdsaP256).unwrap();
        let ec = device_identity_cert(&ca, "UDID-1", KeyKind::EcdsaP256).unwrap();
        let ec_signer = DeviceSigner::new(&ec.cert_der, &ec.key_der).unwrap();
        assert!(
            ec_signer.with_certificate(&cert).is_none(),
            "only RSA keys are shared"
        );
    }
}
