//! The CertRep (RFC 8894 §3.3.2): a CMS SignedData signed by the CA whose authenticated
//! attributes say messageType 3, the pkiStatus, the failInfo on failure, the request's
//! transactionID, recipientNonce = the request's senderNonce and a fresh senderNonce. On
//! success its content is the issued certificate in a degenerate (certs-only) SignedData,
//! enveloped to the requester's certificate; on failure there is no content.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{Any, OctetString, SetOfVec, Utf8StringRef};
use der::{Decode, Encode};
use rand_core::CryptoRngCore;
use rsa::RsaPrivateKey;
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use crate::attrs::{attribute, octet_string, printable};
use crate::ca::DeviceCa;
use crate::digest::Digest;
use crate::envelope::{self, ContentCipher};
use crate::error::FailInfo;
use crate::oid;

/// RFC 8894 §3.2.1.3 pkiStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkiStatus {
    /// 0: the certificate is in the reply.
    Success,
    /// 2: refused; the failInfo says why.
    Failure,
    /// 3: never sent by this CA (no manual approval).
    Pending,
}

impl PkiStatus {
    /// The decimal string carried in the pkiStatus attribute.
    pub fn code(self) -> &'static str {
        match self {
            PkiStatus::Success => "0",
            PkiStatus::Failure => "2",
            PkiStatus::Pending => "3",
        }
    }
}

/// What the reply answers.
pub(crate) enum Outcome<'a> {
    /// The issued certificate (DER), enveloped to `recipient` with `cipher`.
    Issued {
        certificate: &'a [u8],
        recipient: &'a Certificate,
        cipher: ContentCipher,
    },
    Refused(FailInfo),
}

/// A certs-only SignedData (RFC 5652 §5.2 "degenerate") holding `certificates`, DER.
pub(crate) fn degenerate(certificates: &[&[u8]]) -> der::Result<Vec<u8>> {
    let certs = certificates
        .iter()
        .map(|der| Certificate::from_der(der).map(CertificateChoices::Certificate))
        .collect::<der::Result<Vec<_>>>()?;
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oid::ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(certs)?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    ContentInfo {
        content_type: oid::ID_SIGNED_DATA,
        content: Any::encode_from(&signed)?,
    }
    .to_der()
}

/// A transactionID is echoed as a PrintableString when it is one, else as UTF8String.
fn transaction_id_attr(id: &str) -> der::Result<Attribute> {
    printable(oid::SCEP_TRANSACTION_ID, id).or_else(|_| {
        attribute(
            oid::SCEP_TRANSACTION_ID,
            Any::encode_from(&Utf8StringRef::new(id)?)?,
        )
    })
}

/// Builds and signs the CertRep. Errors are the CA's own faults (a key that cannot sign, a
/// requester certificate without an RSA key…), never the client's.
pub(crate) fn cert_rep(
    ca: &DeviceCa,
    digest: Digest,
    transaction_id: &str,
    recipient_nonce: &[u8],
    outcome: Outcome<'_>,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, String> {
    let der_err = |e: der::Error| e.to_string();
    let (status, content) = match outcome {
        Outcome::Issued {
            certificate,
            recipient,
            cipher,
        } => {
            let inner = degenerate(&[certificate]).map_err(der_err)?;
            let sealed = envelope::seal(&inner, recipient, cipher, rng)?;
            (PkiStatus::Success, Some(sealed))
        }
        Outcome::Refused(_) => (PkiStatus::Failure, None),
    };
    let mut sender_nonce = [0u8; 16];
    rng.fill_bytes(&mut sender_nonce);

    let mut attrs = vec![
        printable(oid::SCEP_MESSAGE_TYPE, "3").map_err(der_err)?,
        printable(oid::SCEP_PKI_STATUS, status.code()).map_err(der_err)?,
        transaction_id_attr(transaction_id).map_err(der_err)?,
        octet_string(oid::SCEP_RECIPIENT_NONCE, recipient_nonce).map_err(der_err)?,
        octet_string(oid::SCEP_SENDER_NONCE, &sender_nonce).map_err(der_err)?,
    ];
    if let Outcome::Refused(fail) = outcome {
        attrs.push(printable(oid::SCEP_FAIL_INFO, fail.code()).map_err(der_err)?);
    }
    signed_message(ca.certificate(), ca.key(), digest, attrs, content)
}

/// A CMS SignedData over `content` (id-data; absent for a CertRep FAILURE) signed by
/// `signer` with `key` (RSA PKCS#1 v1.5, `digest`), with `attrs` plus contentType and
/// messageDigest as authenticated attributes, and the signer's certificate. DER.
pub(crate) fn signed_message(
    signer: &Certificate,
    key: &RsaPrivateKey,
    digest: Digest,
    mut attrs: Vec<Attribute>,
    content: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let der_err = |e: der::Error| e.to_string();
    attrs.push(
        attribute(
            oid::ID_CONTENT_TYPE,
            Any::encode_from(&oid::ID_DATA).map_err(der_err)?,
        )
        .map_err(der_err)?,
    );
    attrs.push(
        octet_string(
            oid::ID_MESSAGE_DIGEST,
            &digest.hash(content.as_deref().unwrap_or_default()),
        )
        .map_err(der_err)?,
    );
    let signed_attrs = SetOfVec::try_from(attrs).map_err(der_err)?;
    let signature = digest
        .sign_rsa(key, &signed_attrs.to_der().map_err(der_err)?)
        .map_err(|e| format!("signing: {e}"))?;

    let tbs = signer.tbs_certificate();
    let digest_alg = AlgorithmIdentifierOwned {
        oid: digest.oid(),
        parameters: None,
    };
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        digest_alg: digest_alg.clone(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: oid::RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        signature: OctetString::new(signature).map_err(der_err)?,
        unsigned_attrs: None,
    };
    let econtent = content
        .map(|c| Any::encode_from(&OctetString::new(c)?))
        .transpose()
        .map_err(der_err)?;
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![digest_alg]).map_err(der_err)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oid::ID_DATA,
            econtent,
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(vec![CertificateChoices::Certificate(signer.clone())])
                .map_err(der_err)?,
        )),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info]).map_err(der_err)?),
    };
    ContentInfo {
        content_type: oid::ID_SIGNED_DATA,
        content: Any::encode_from(&signed).map_err(der_err)?,
    }
    .to_der()
    .map_err(der_err)
}
