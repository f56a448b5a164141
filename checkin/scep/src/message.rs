//! Parsing a PKIOperation request (RFC 8894 §3.2): a CMS SignedData (BER or DER) with one
//! signer, the SCEP authenticated attributes, and the pkcsPKIEnvelope as its content.
//!
//! [`parse`] keeps what is needed to answer (transactionID, senderNonce); a message without
//! them is a [`ScepError`]. [`Request::verify`] then checks the signature; its failures are
//! [`Refusal`]s, answered with a CertRep FAILURE.

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::ObjectIdentifier;
use der::{Decode, Encode, EncodingRules, Tagged};
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

use crate::attrs::{MessageType, ScepAttrs};
use crate::digest::{self, ct_eq, Digest};
use crate::error::{FailInfo, Refusal, ScepError};
use crate::oid;

/// A parsed, not yet verified request.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) transaction_id: String,
    pub(crate) sender_nonce: Vec<u8>,
    /// `None`: a messageType that is not a number.
    pub(crate) message_type: Option<MessageType>,
    /// The signer's certificate: self-signed (PKCSReq) or issued by this CA (RenewalReq).
    pub(crate) signer: Certificate,
    /// `None`: a digest algorithm this crate does not support (answered badAlg).
    pub(crate) digest: Option<Digest>,
    digest_oid: ObjectIdentifier,
    signature_oid: ObjectIdentifier,
    signed_attrs_der: Vec<u8>,
    signature: Vec<u8>,
    pub(crate) attrs: ScepAttrs,
    /// The pkcsPKIEnvelope: the encapsulated content's octets.
    pub(crate) content: Option<Vec<u8>>,
}

fn malformed(e: der::Error) -> ScepError {
    ScepError::Malformed(e.to_string())
}

/// Parses a PKIOperation message far enough to answer it.
pub(crate) fn parse(message: &[u8]) -> Result<Request, ScepError> {
    let info = ContentInfo::from_ber(message).map_err(malformed)?;
    if info.content_type != oid::ID_SIGNED_DATA {
        return Err(ScepError::NotSignedData(info.content_type.to_string()));
    }
    let signed: SignedData = info
        .content
        .decode_as_encoding(EncodingRules::Ber)
        .map_err(malformed)?;
    let signers = signed.signer_infos.0.as_slice();
    let [signer_info] = signers else {
        return Err(ScepError::SignerCount(signers.len()));
    };
    let signer = find_certificate(&signed, &signer_info.sid)
        .ok_or(ScepError::SignerCertificateMissing)?
        .clone();
    let signed_attrs = signer_info
        .signed_attrs
        .as_ref()
        .ok_or(ScepError::MissingAttribute("authenticated attributes"))?;
    let mut attrs = ScepAttrs::read(signed_attrs);
    let transaction_id = attrs
        .transaction_id
        .take()
        .filter(|t| !t.is_empty())
        .ok_or(ScepError::MissingAttribute("transactionID"))?;
    let sender_nonce = attrs
        .sender_nonce
        .take()
        .filter(|n| !n.is_empty())
        .ok_or(ScepError::MissingAttribute("senderNonce"))?;
    let message_type = attrs.message_type.as_deref().map(MessageType::parse);
    let Some(message_type) = message_type else {
        return Err(ScepError::MissingAttribute("messageType"));
    };
    let content = match &signed.encap_content_info.econtent {
        // The OCTET STRING inside `[0] EXPLICIT`, which may be in the constructed form.
        Some(any) if any.tag().number() == der::Tag::OctetString.number() => Some(
            crate::ber::octet_string_contents(any.tag().is_constructed(), any.value()).ok_or_else(
                || ScepError::Malformed("the encapsulated content is not an OCTET STRING".into()),
            )?,
        ),
        Some(_) => {
            return Err(ScepError::Malformed(
                "the encapsulated content is not an OCTET STRING".into(),
            ))
        }
        None => None,
    };
    Ok(Request {
        transaction_id,
        sender_nonce,
        message_type,
        signer,
        digest: Digest::from_oid(&signer_info.digest_alg.oid),
        digest_oid: signer_info.digest_alg.oid,
        signature_oid: signer_info.signature_algorithm.oid,
        // The signature covers the DER of the attributes as a SET OF (tag 0x31), not the
        // `[0] IMPLICIT` bytes of the message (RFC 5652 §5.4).
        signed_attrs_der: signed_attrs.to_der().map_err(malformed)?,
        signature: signer_info.signature.as_bytes().to_vec(),
        attrs,
        content,
    })
}

impl Request {
    /// Checks the signature: a supported digest and RSA signature algorithm (else badAlg),
    /// contentType id-data and a messageDigest equal to the content's digest, the signature
    /// over the authenticated attributes with the signer certificate's key (else
    /// badMessageCheck). Returns the digest, for the reply.
    pub(crate) fn verify(&self) -> Result<Digest, Refusal> {
        let digest = self
            .digest
            .ok_or_else(|| Refusal::new(FailInfo::BadAlg, format!("digest {}", self.digest_oid)))?;
        let rsa_signatures = [
            oid::RSA_ENCRYPTION,
            oid::SHA1_WITH_RSA,
            oid::SHA256_WITH_RSA,
            oid::SHA384_WITH_RSA,
            oid::SHA512_WITH_RSA,
        ];
        if !rsa_signatures.contains(&self.signature_oid) {
            return Err(Refusal::new(
                FailInfo::BadAlg,
                format!("signature algorithm {}", self.signature_oid),
            ));
        }
        let spki = self.signer.tbs_certificate().subject_public_key_info();
        if spki.algorithm.oid != oid::RSA_ENCRYPTION {
            return Err(Refusal::new(
                FailInfo::BadAlg,
                format!("signer key {}", spki.algorithm.oid),
            ));
        }
        if let Some(ct) = self.attrs.content_type {
            if ct != oid::ID_DATA {
                return Err(Refusal::new(
                    FailInfo::BadMessageCheck,
                    format!("contentType {ct}, not id-data"),
                ));
            }
        }
        let expected =
            self.attrs.message_digest.as_deref().ok_or_else(|| {
                Refusal::new(FailInfo::BadMessageCheck, "no messageDigest attribute")
            })?;
        let actual = digest.hash(self.content.as_deref().unwrap_or_default());
        if !ct_eq(expected, &actual) {
            return Err(Refusal::new(
                FailInfo::BadMessageCheck,
                "messageDigest does not match the content",
            ));
        }
        if !digest::verify(spki, digest, &self.signed_attrs_der, &self.signature) {
            return Err(Refusal::new(
                FailInfo::BadMessageCheck,
                "the signature does not verify with the signer's certificate",
            ));
        }
        Ok(digest)
    }
}

/// The signer's certificate, by issuer and serial number or by subject key identifier.
fn find_certificate<'a>(signed: &'a SignedData, sid: &SignerIdentifier) -> Option<&'a Certificate> {
    let certificates = signed.certificates.iter().flat_map(|set| set.0.iter());
    certificates
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(cert) => Some(cert),
            _ => None,
        })
        .find(|cert| {
            let tbs = cert.tbs_certificate();
            match sid {
                SignerIdentifier::IssuerAndSerialNumber(isn) => {
                    tbs.issuer() == &isn.issuer && tbs.serial_number() == &isn.serial_number
                }
                SignerIdentifier::SubjectKeyIdentifier(ski) => matches!(
                    tbs.get_extension::<SubjectKeyIdentifier>(),
                    Ok(Some((_, ref own))) if own == ski
                ),
            }
        })
}
