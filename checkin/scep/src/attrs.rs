//! SCEP's authenticated attributes (RFC 8894 §3.2.1): read from a request's SignerInfo,
//! written into a CertRep's. Strings are PrintableString, nonces OCTET STRING (16 bytes).

use der::asn1::{Any, ObjectIdentifier, OctetString, PrintableString, SetOfVec};
use der::{Tag, Tagged};
use x509_cert::attr::Attribute;

use crate::oid;

/// RFC 8894 §3.2.1.2 messageType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// 3: the CA's answer.
    CertRep,
    /// 17: renewal, signed with a certificate this CA issued.
    RenewalReq,
    /// 19: first enrollment, signed with a self-signed certificate.
    PkcsReq,
    /// 20: polling for a pending request (never pending here: refused).
    CertPoll,
    /// 21 (GetCert), 22 (GetCRL) or anything else.
    Other(u32),
}

impl MessageType {
    pub(crate) fn parse(text: &str) -> Option<MessageType> {
        let n: u32 = text.trim().parse().ok()?;
        Some(match n {
            3 => MessageType::CertRep,
            17 => MessageType::RenewalReq,
            19 => MessageType::PkcsReq,
            20 => MessageType::CertPoll,
            n => MessageType::Other(n),
        })
    }
}

/// The SCEP attributes of a request, as found (each at most once).
#[derive(Debug, Default)]
pub(crate) struct ScepAttrs {
    pub(crate) message_type: Option<String>,
    pub(crate) transaction_id: Option<String>,
    pub(crate) sender_nonce: Option<Vec<u8>>,
    pub(crate) content_type: Option<ObjectIdentifier>,
    pub(crate) message_digest: Option<Vec<u8>>,
    // A CertRep's (read back by the tests, and by a client).
    pub(crate) pki_status: Option<String>,
    pub(crate) fail_info: Option<String>,
    pub(crate) recipient_nonce: Option<Vec<u8>>,
}

/// The longest transactionID or nonce copied back (they are echoed into the reply).
const MAX_ATTR_LEN: usize = 256;

impl ScepAttrs {
    /// Reads the attributes it knows; an unreadable or repeated one is left out (`None`), so
    /// that the caller decides what is fatal.
    pub(crate) fn read(attrs: &SetOfVec<Attribute>) -> ScepAttrs {
        let mut out = ScepAttrs::default();
        for attr in attrs.iter() {
            let [value] = attr.values.as_slice() else {
                continue;
            };
            match attr.oid {
                o if o == oid::SCEP_MESSAGE_TYPE => out.message_type = any_string(value),
                o if o == oid::SCEP_TRANSACTION_ID => out.transaction_id = any_string(value),
                o if o == oid::SCEP_SENDER_NONCE => out.sender_nonce = octets(value),
                o if o == oid::ID_CONTENT_TYPE => out.content_type = value.decode_as().ok(),
                o if o == oid::ID_MESSAGE_DIGEST => out.message_digest = octets(value),
                o if o == oid::SCEP_PKI_STATUS => out.pki_status = any_string(value),
                o if o == oid::SCEP_FAIL_INFO => out.fail_info = any_string(value),
                o if o == oid::SCEP_RECIPIENT_NONCE => out.recipient_nonce = octets(value),
                _ => {}
            }
        }
        out
    }
}

fn octets(value: &Any) -> Option<Vec<u8>> {
    let o: OctetString = value.decode_as().ok()?;
    (o.as_bytes().len() <= MAX_ATTR_LEN).then(|| o.as_bytes().to_vec())
}

/// The text of a DirectoryString-like value: PrintableString, UTF8String, IA5String,
/// TeletexString (taken as Latin-1 … as UTF-8 when valid) or BMPString.
pub(crate) fn any_string(value: &Any) -> Option<String> {
    let bytes = value.value();
    if bytes.len() > MAX_ATTR_LEN {
        return None;
    }
    match value.tag() {
        Tag::PrintableString | Tag::Utf8String | Tag::Ia5String | Tag::TeletexString => {
            String::from_utf8(bytes.to_vec()).ok()
        }
        Tag::BmpString => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

/// One attribute with one value.
pub(crate) fn attribute(oid: ObjectIdentifier, value: Any) -> der::Result<Attribute> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value])?,
    })
}

/// A PrintableString attribute (messageType, pkiStatus, failInfo, transactionID).
pub(crate) fn printable(oid: ObjectIdentifier, text: &str) -> der::Result<Attribute> {
    attribute(oid, Any::encode_from(&PrintableString::new(text)?)?)
}

/// An OCTET STRING attribute (senderNonce, recipientNonce, messageDigest).
pub(crate) fn octet_string(oid: ObjectIdentifier, bytes: &[u8]) -> der::Result<Attribute> {
    attribute(oid, Any::encode_from(&OctetString::new(bytes)?)?)
}
