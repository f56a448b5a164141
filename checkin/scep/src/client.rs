//! The device's side of SCEP (RFC 8894 §3): a PKCSReq built for a CA, and its CertRep read
//! back. For the load-test fleet and for tests that act as a device enrolling at `/scep`; not
//! a general SCEP client (no GetCACaps negotiation, no CertPoll, no renewal).
//!
//! [`pkcs_req`] (or [`RequestSigner::pkcs_req`]) builds, from the device's RSA key, the CN and the challenge of its enrollment
//! profile:
//! 1. a PKCS#10 CSR (RFC 2986) for the key with that CN and the challenge as its PKCS#9
//!    challengePassword;
//! 2. a self-signed certificate for the same key: the signer of the request, and the
//!    recipient the CA envelopes its answer to (§2.3);
//! 3. the pkcsPKIEnvelope (§3.2.2): the CSR in a CMS EnvelopedData to the CA certificate;
//! 4. the PKIOperation message (§3.2): a CMS SignedData over the envelope, signed with the
//!    key (SHA-256), with messageType 19 (PKCSReq), a random transactionID and senderNonce.
//!
//! [`PendingEnrollment::open`] reads the CA's CertRep (§3.3.2): signed by the CA, for our
//! transactionID, its recipientNonce our senderNonce; SUCCESS gives the issued certificate
//! (decrypted with the device key), FAILURE its failInfo as [`ClientError::Refused`].

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::{Decode, Encode};
use rand_core::{CryptoRngCore, OsRng};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::RsaPrivateKey;
use x509_cert::Certificate;

use crate::attrs::{octet_string, printable, MessageType};
use crate::digest::Digest;
use crate::envelope::{self, ContentCipher};
use crate::error::{FailInfo, ScepError};
use crate::{message, oid, reply, PkiStatus};

/// The CN of the self-signed certificate a request is signed with (§2.3: any subject will do;
/// the CA takes the CN from the CSR).
const SIGNER_COMMON_NAME: &str = "SCEP SIGNER";

/// Why a request could not be built, or a CertRep gives no certificate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The device key, the CSR, the signer certificate or the message could not be made.
    #[error("building the request: {0}")]
    Build(String),
    /// The CA certificate (GetCACert's answer) does not parse or has no RSA key.
    #[error("the CA certificate: {0}")]
    CaCertificate(String),
    /// The reply is not a SCEP message.
    #[error("the reply: {0}")]
    Malformed(#[from] ScepError),
    /// The reply is not a CertRep.
    #[error("the reply's messageType is {0:?}, not CertRep (3)")]
    NotCertRep(Option<MessageType>),
    /// The reply is signed by someone else than the CA, or its signature does not verify.
    #[error("the reply's signature: {0}")]
    Signature(String),
    /// The reply answers another transaction.
    #[error("the reply is for transaction {got:?}, not {expected:?}")]
    TransactionId {
        /// Ours.
        expected: String,
        /// The reply's.
        got: String,
    },
    /// The reply's recipientNonce is missing or not our senderNonce (a replayed answer).
    #[error("the reply's recipientNonce is not our senderNonce")]
    RecipientNonce,
    /// The CA refused the request (pkiStatus FAILURE) for this reason.
    #[error("the CA refused the request: failInfo {0:?}")]
    Refused(FailInfo),
    /// A FAILURE without a failInfo this crate knows (the raw attribute, if any).
    #[error("the CA refused the request without a known failInfo ({0:?})")]
    RefusedWithout(Option<String>),
    /// pkiStatus PENDING: the CA wants the client to poll, which this client does not do.
    #[error("the CA left the request pending (manual approval is not supported)")]
    Pending,
    /// A pkiStatus that is not 0, 2 or 3.
    #[error("the reply's pkiStatus is {0:?}")]
    Status(Option<String>),
    /// SUCCESS, but the enveloped certificate is missing, cannot be decrypted or read.
    #[error("the issued certificate: {0}")]
    Certificate(String),
}

/// What a device asks for: the names of its enrollment profile's SCEP payload, the CA, and
/// how the request is protected.
#[derive(Debug, Clone, Copy)]
pub struct EnrollmentRequest<'a> {
    /// The CN of the requested subject (the profile's `Subject`).
    pub common_name: &'a str,
    /// The profile's one-time `Challenge`, sent as the CSR's challengePassword.
    pub challenge: &'a str,
    /// The CA certificate, DER (GetCACert): the request is enveloped to it.
    pub ca_cert_der: &'a [u8],
    /// The envelope's content cipher (iOS sends AES-128-CBC).
    pub cipher: ContentCipher,
}

/// A request sent and not yet answered: what its CertRep must match, and the key to open it.
#[derive(Debug, Clone)]
pub struct PendingEnrollment {
    transaction_id: String,
    sender_nonce: Vec<u8>,
    ca: Certificate,
    signer: Certificate,
    key: RsaPrivateKey,
}

/// Builds the PKCSReq PKIOperation message (DER, the body of `POST /scep?operation=
/// PKIOperation`) for `device_key` (the issued certificate is for it) and what is needed to
/// read its answer. Makes a self-signed signer certificate each time: see [`RequestSigner`]
/// to make it once per key.
pub fn pkcs_req(
    device_key: &RsaPrivateKey,
    request: &EnrollmentRequest<'_>,
    rng: &mut impl CryptoRngCore,
) -> Result<(Vec<u8>, PendingEnrollment), ClientError> {
    RequestSigner::new(device_key)?.pkcs_req(request, rng)
}

/// A device key and the self-signed certificate its requests are signed with (RFC 8894 §2.3),
/// made once: devices that share a key, as the load-test fleet's pool, share it too.
pub struct RequestSigner {
    requester: Requester,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSigner").finish_non_exhaustive()
    }
}

impl RequestSigner {
    /// The signer of `device_key`, with a fresh self-signed certificate.
    pub fn new(device_key: &RsaPrivateKey) -> Result<RequestSigner, ClientError> {
        Ok(RequestSigner {
            requester: Requester::new(device_key)?,
        })
    }

    /// [`pkcs_req`] with this key and its certificate.
    pub fn pkcs_req(
        &self,
        request: &EnrollmentRequest<'_>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Vec<u8>, PendingEnrollment), ClientError> {
        build_pkcs_req(&self.requester, request, rng)
    }
}

fn build_pkcs_req(
    requester: &Requester,
    request: &EnrollmentRequest<'_>,
    rng: &mut impl CryptoRngCore,
) -> Result<(Vec<u8>, PendingEnrollment), ClientError> {
    let ca = Certificate::from_der(request.ca_cert_der)
        .map_err(|e| ClientError::CaCertificate(e.to_string()))?;
    let csr = requester.csr(request.common_name, None, Some(request.challenge))?;
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let transaction_id = hex::encode_upper(id);
    let message = requester.message(
        &csr,
        &MessageSpec {
            message_type: "19",
            cipher: request.cipher,
            digest: Digest::Sha256,
            recipient: &ca,
            transaction_id: Some(&transaction_id),
            sender_nonce: Some(&nonce),
        },
        rng,
    )?;
    let pending = PendingEnrollment {
        transaction_id,
        sender_nonce: nonce.to_vec(),
        ca,
        signer: requester.certificate.clone(),
        key: requester.key.clone(),
    };
    Ok((message, pending))
}

impl PendingEnrollment {
    /// The request's transactionID.
    pub fn transaction_id(&self) -> &str {
        &self.transaction_id
    }

    /// Reads the CertRep (DER or BER) and returns the issued certificate, DER.
    pub fn open(&self, reply_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        let rep = read_cert_rep(reply_der, &self.ca, &self.signer, &self.key)?;
        if rep.transaction_id != self.transaction_id {
            return Err(ClientError::TransactionId {
                expected: self.transaction_id.clone(),
                got: rep.transaction_id,
            });
        }
        if rep.recipient_nonce.as_deref() != Some(self.sender_nonce.as_slice()) {
            return Err(ClientError::RecipientNonce);
        }
        match rep.status.as_deref() {
            Some(s) if s == PkiStatus::Success.code() => {}
            Some(s) if s == PkiStatus::Failure.code() => {
                return Err(rep
                    .fail_info
                    .as_deref()
                    .and_then(FailInfo::from_code)
                    .map_or(
                        ClientError::RefusedWithout(rep.fail_info),
                        ClientError::Refused,
                    ))
            }
            Some(s) if s == PkiStatus::Pending.code() => return Err(ClientError::Pending),
            _ => return Err(ClientError::Status(rep.status)),
        }
        let issued = rep.certificate.ok_or_else(|| {
            ClientError::Certificate("SUCCESS without an enveloped certificate".into())
        })?;
        issued
            .to_der()
            .map_err(|e| ClientError::Certificate(e.to_string()))
    }
}

/// A requester: the device key, the same key for rcgen (CSR, self-signed certificate), and
/// the self-signed certificate that signs its messages.
pub(crate) struct Requester {
    pub(crate) key: RsaPrivateKey,
    pub(crate) certificate: Certificate,
    pub(crate) signing_key: rcgen::KeyPair,
}

impl Requester {
    /// The requester of `key`, with a fresh self-signed certificate.
    pub(crate) fn new(key: &RsaPrivateKey) -> Result<Requester, ClientError> {
        let build = |e: &dyn std::fmt::Display| ClientError::Build(e.to_string());
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| build(&e))?;
        let signing_key = rcgen::KeyPair::from_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| build(&e))?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| build(&e))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, SIGNER_COMMON_NAME);
        let cert = params.self_signed(&signing_key).map_err(|e| build(&e))?;
        Ok(Requester {
            key: key.clone(),
            certificate: Certificate::from_der(cert.der()).map_err(|e| build(&e))?,
            signing_key,
        })
    }

    /// A CSR (DER) for the signing key with subject CN (and OU, if given) and, if given, the
    /// challengePassword attribute (a PrintableString).
    pub(crate) fn csr(
        &self,
        common_name: &str,
        organizational_unit: Option<&str>,
        challenge: Option<&str>,
    ) -> Result<Vec<u8>, ClientError> {
        let build = |e: &dyn std::fmt::Display| ClientError::Build(e.to_string());
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| build(&e))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        if let Some(ou) = organizational_unit {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationalUnitName, ou);
        }
        let attrs = match challenge {
            Some(c) => {
                let text = der::asn1::PrintableStringRef::new(c).map_err(|e| {
                    ClientError::Build(format!("the challenge is not a PrintableString: {e}"))
                })?;
                let value = der::asn1::Any::encode_from(&text).map_err(|e| build(&e))?;
                let values = der::asn1::SetOfVec::try_from(vec![value]).map_err(|e| build(&e))?;
                vec![rcgen::Attribute {
                    oid: CHALLENGE_PASSWORD_ARCS,
                    values: values.to_der().map_err(|e| build(&e))?,
                }]
            }
            None => Vec::new(),
        };
        Ok(params
            .serialize_request_with_attributes(&self.signing_key, attrs)
            .map_err(|e| build(&e))?
            .der()
            .to_vec())
    }

    /// `inner` enveloped to the spec's recipient, in a PKIOperation message signed by this
    /// requester with the spec's attributes.
    pub(crate) fn message(
        &self,
        inner: &[u8],
        spec: &MessageSpec<'_>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, ClientError> {
        let sealed =
            envelope::seal(inner, spec.recipient, spec.cipher, rng).map_err(ClientError::Build)?;
        let der_err = |e: der::Error| ClientError::Build(e.to_string());
        let mut attrs =
            vec![printable(oid::SCEP_MESSAGE_TYPE, spec.message_type).map_err(der_err)?];
        if let Some(t) = spec.transaction_id {
            attrs.push(printable(oid::SCEP_TRANSACTION_ID, t).map_err(der_err)?);
        }
        if let Some(n) = spec.sender_nonce {
            attrs.push(octet_string(oid::SCEP_SENDER_NONCE, n).map_err(der_err)?);
        }
        reply::signed_message(
            &self.certificate,
            &self.key,
            spec.digest,
            attrs,
            Some(sealed),
        )
        .map_err(ClientError::Build)
    }
}

/// PKCS#9 challengePassword, as rcgen takes an attribute's OID.
const CHALLENGE_PASSWORD_ARCS: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];

/// How a PKIOperation message is built: its messageType, protection and SCEP attributes
/// (transactionID and senderNonce optional, so that tests can leave them out).
pub(crate) struct MessageSpec<'a> {
    pub(crate) message_type: &'a str,
    pub(crate) cipher: ContentCipher,
    pub(crate) digest: Digest,
    pub(crate) recipient: &'a Certificate,
    pub(crate) transaction_id: Option<&'a str>,
    pub(crate) sender_nonce: Option<&'a [u8]>,
}

/// A CertRep as read: signed by the CA (checked), its attributes as found, and on success the
/// certificate decrypted with the requester's key.
#[derive(Debug)]
pub(crate) struct CertRep {
    pub(crate) status: Option<String>,
    pub(crate) fail_info: Option<String>,
    pub(crate) recipient_nonce: Option<Vec<u8>>,
    pub(crate) transaction_id: String,
    /// The digest the CA signed with (the tests check it is the request's).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    pub(crate) digest: Digest,
    pub(crate) certificate: Option<Certificate>,
    /// The cipher of the enveloped certificate (the tests check it is the request's).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    pub(crate) cipher: Option<ContentCipher>,
}

/// Reads a CertRep addressed to `recipient` (the request's signer) and signed by `ca`.
pub(crate) fn read_cert_rep(
    bytes: &[u8],
    ca: &Certificate,
    recipient: &Certificate,
    key: &RsaPrivateKey,
) -> Result<CertRep, ClientError> {
    let rep = message::parse(bytes)?;
    if rep.message_type != Some(MessageType::CertRep) {
        return Err(ClientError::NotCertRep(rep.message_type));
    }
    if rep.signer.to_der().ok() != ca.to_der().ok() {
        return Err(ClientError::Signature(
            "the signer's certificate is not the CA's".into(),
        ));
    }
    let digest = rep.verify().map_err(|r| ClientError::Signature(r.reason))?;
    let (certificate, cipher) = match &rep.content {
        Some(content) => {
            let opened = envelope::open(content, recipient, key, &mut OsRng)
                .map_err(|r| ClientError::Certificate(r.reason))?;
            (
                Some(only_certificate(&opened.plaintext)?),
                Some(opened.cipher),
            )
        }
        None => (None, None),
    };
    Ok(CertRep {
        status: rep.attrs.pki_status.clone(),
        fail_info: rep.attrs.fail_info.clone(),
        recipient_nonce: rep.attrs.recipient_nonce.clone(),
        transaction_id: rep.transaction_id,
        digest,
        certificate,
        cipher,
    })
}

/// The one certificate of a degenerate (certs-only) SignedData.
fn only_certificate(bytes: &[u8]) -> Result<Certificate, ClientError> {
    let bad = |e: &dyn std::fmt::Display| ClientError::Certificate(e.to_string());
    let info = ContentInfo::from_ber(bytes).map_err(|e| bad(&e))?;
    let inner: SignedData = info
        .content
        .decode_as_encoding(der::EncodingRules::Ber)
        .map_err(|e| bad(&e))?;
    if !inner.signer_infos.0.is_empty() {
        return Err(bad(&"the certificate's SignedData has signers"));
    }
    let certs: Vec<_> = inner
        .certificates
        .map(|c| c.0.into_vec())
        .unwrap_or_default();
    match certs.as_slice() {
        [CertificateChoices::Certificate(cert)] => Ok(cert.clone()),
        other => Err(bad(&format!("{} certificates, not one", other.len()))),
    }
}
