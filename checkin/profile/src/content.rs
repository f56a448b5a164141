//! The profile inside a signed profile, without verifying the signature: for clients that
//! only need the payloads (the load-test fleet), and for tests.

use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::asn1::OctetString;
use der::Decode;

use crate::sign::ID_SIGNED_DATA;
use crate::ProfileError;

/// The profile inside a signed profile (no verification), or the bytes themselves when they
/// are a plain property list (they start with `<?xml` or `bplist`). A signed profile is read
/// as DER, else as BER (as some signing tools write it); anything else is
/// [`ProfileError::NotAProfile`].
pub fn content_of(bytes: &[u8]) -> Result<Vec<u8>, ProfileError> {
    if bytes.starts_with(b"<?xml") || bytes.starts_with(b"bplist") {
        return Ok(bytes.to_vec());
    }
    let not = |what: String| ProfileError::NotAProfile(what);
    let info = ContentInfo::from_der(bytes)
        .or_else(|der_err| ContentInfo::from_ber(bytes).map_err(|_| der_err))
        .map_err(|e| not(format!("neither a plist nor a CMS message ({e})")))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(not(format!(
            "a CMS message of type {}, not SignedData",
            info.content_type
        )));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| not(format!("a malformed CMS SignedData ({e})")))?;
    let econtent = signed
        .encap_content_info
        .econtent
        .ok_or_else(|| not("a detached CMS signature: it holds no profile".into()))?;
    let content: OctetString = econtent
        .decode_as()
        .map_err(|e| not(format!("CMS content that is not an OCTET STRING ({e})")))?;
    Ok(content.into_bytes().into_vec())
}
