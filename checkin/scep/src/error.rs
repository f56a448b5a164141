//! Typed errors: what cannot be answered at all ([`ScepError`], an HTTP 400 for the server),
//! what is answered with a CertRep FAILURE ([`FailInfo`]), and the CA's own ([`CaError`]).

/// RFC 8894 §3.2.1.4 failInfo: why a request was refused, told to the client in the CertRep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailInfo {
    /// Unrecognized or unsupported algorithm (digest, signature, content cipher).
    BadAlg = 0,
    /// Integrity check failed: a bad signature, or an envelope this CA cannot open.
    BadMessageCheck = 1,
    /// Transaction not permitted or supported: bad challenge, bad CSR, revoked certificate.
    BadRequest = 2,
    /// The signer's certificate is not valid now (renewal with an expired certificate).
    BadTime = 3,
    /// No certificate could be identified matching the provided criteria.
    BadCertId = 4,
}

impl FailInfo {
    /// The decimal string carried in the failInfo attribute.
    pub fn code(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "0",
            FailInfo::BadMessageCheck => "1",
            FailInfo::BadRequest => "2",
            FailInfo::BadTime => "3",
            FailInfo::BadCertId => "4",
        }
    }

    /// Parses the failInfo attribute's decimal string.
    pub fn from_code(code: &str) -> Option<FailInfo> {
        Some(match code {
            "0" => FailInfo::BadAlg,
            "1" => FailInfo::BadMessageCheck,
            "2" => FailInfo::BadRequest,
            "3" => FailInfo::BadTime,
            "4" => FailInfo::BadCertId,
            _ => return None,
        })
    }
}

/// A refusal inside a request that can be answered: the failInfo sent back, and the reason
/// kept for the server's log (never sent to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the CertRep says.
    pub fail_info: FailInfo,
    /// Why, for the operator.
    pub reason: String,
}

impl Refusal {
    pub(crate) fn new(fail_info: FailInfo, reason: impl Into<String>) -> Refusal {
        Refusal {
            fail_info,
            reason: reason.into(),
        }
    }
}

/// A PKIOperation message that cannot be answered with a CertRep (no transactionID, no
/// senderNonce, not CMS at all…): the server turns it into an HTTP 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScepError {
    /// The message is larger than [`crate::MAX_MESSAGE`]; nothing was parsed.
    #[error("the message is {0} bytes, more than the {max} allowed", max = crate::MAX_MESSAGE)]
    Oversized(usize),
    /// The bytes are not a CMS ContentInfo holding a SignedData.
    #[error("not a SCEP message: {0}")]
    Malformed(String),
    /// The outer content type is not SignedData.
    #[error("the content type is {0}, not SignedData")]
    NotSignedData(String),
    /// Not exactly one SignerInfo.
    #[error("{0} signers; a SCEP message has exactly one")]
    SignerCount(usize),
    /// The signer's certificate is not in the message.
    #[error("the signer's certificate is not in the message")]
    SignerCertificateMissing,
    /// A SCEP attribute needed to answer (transactionID, senderNonce, messageType) is missing
    /// or unreadable.
    #[error("the {0} attribute is missing or unreadable")]
    MissingAttribute(&'static str),
    /// The CA could not build its answer (an internal fault, not the client's).
    #[error("cannot build the answer: {0}")]
    Reply(String),
}

/// Creating, loading or using the device CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The PEM text is not what was expected.
    #[error("PEM: {0}")]
    Pem(String),
    /// The certificate does not parse.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The private key does not parse, is not RSA, or is too small.
    #[error("private key: {0}")]
    Key(String),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the CA certificate")]
    KeyMismatch,
    /// The caller's input cannot go into a certificate (empty or overlong name, bad validity).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Building or signing the certificate failed.
    #[error("signing: {0}")]
    Signing(String),
}
