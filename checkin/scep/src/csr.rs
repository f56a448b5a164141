//! The PKCS#10 request inside the envelope (RFC 2986): its self-signature, its subject's CN,
//! its public key and its challengePassword attribute (PKCS#9, RFC 2985 §5.4.1).

use der::{Decode, Encode};
use x509_cert::request::CertReq;

use crate::attrs::any_string;
use crate::ca::name_attribute;
use crate::digest;
use crate::error::{FailInfo, Refusal};
use crate::oid;

/// What the CA takes from a CSR.
#[derive(Debug)]
pub(crate) struct Csr {
    pub(crate) common_name: String,
    pub(crate) public_key_der: Vec<u8>,
    pub(crate) challenge: Option<String>,
}

fn bad(reason: impl Into<String>) -> Refusal {
    Refusal::new(FailInfo::BadRequest, reason)
}

/// Parses and verifies a DER CSR. Every failure is badRequest.
pub(crate) fn parse(der_bytes: &[u8]) -> Result<Csr, Refusal> {
    let req = CertReq::from_der(der_bytes).map_err(|e| bad(format!("the CSR: {e}")))?;
    let digest = digest::of_signature_algorithm(&req.algorithm.oid).ok_or_else(|| {
        bad(format!(
            "the CSR's signature algorithm {}",
            req.algorithm.oid
        ))
    })?;
    let info = req
        .info
        .to_der()
        .map_err(|e| bad(format!("the CSR: {e}")))?;
    let signature = req
        .signature
        .as_bytes()
        .ok_or_else(|| bad("the CSR's signature is not whole bytes"))?;
    if !digest::verify(&req.info.public_key, digest, &info, signature) {
        return Err(bad("the CSR's self-signature does not verify"));
    }
    let common_name = name_attribute(&req.info.subject, oid::AT_COMMON_NAME)
        .filter(|cn| !cn.trim().is_empty())
        .ok_or_else(|| bad("the CSR's subject has no common name"))?;
    let mut challenge = None;
    for attr in req.info.attributes.iter() {
        if attr.oid == oid::ID_CHALLENGE_PASSWORD {
            let [value] = attr.values.as_slice() else {
                return Err(bad("challengePassword must have one value"));
            };
            let text = any_string(value).ok_or_else(|| bad("challengePassword is not a string"))?;
            if challenge.replace(text).is_some() {
                return Err(bad("challengePassword appears twice"));
            }
        }
    }
    Ok(Csr {
        common_name,
        public_key_der: req
            .info
            .public_key
            .to_der()
            .map_err(|e| bad(format!("the CSR's key: {e}")))?,
        challenge,
    })
}
