//! The built-in device CA and SCEP (RFC 8894) message handling, as a pure library: bytes,
//! the CA, a challenge store, a revocation check and the time in; the answer's bytes out. No
//! I/O, no HTTP: the server maps the operations of RFC 8894 §4 onto these functions.
//!
//! - `GetCACaps` (§3.5.2): [`CA_CAPS`], `text/plain`.
//! - `GetCACert` (§4.2): [`DeviceCa::certificate_der`], [`CA_CERT_CONTENT_TYPE`]. The CA's
//!   own key is the one requests are encrypted to: there is no separate RA certificate.
//! - `PKIOperation` (§4.3): [`handle`], the body (POST) or the base64-decoded `message`
//!   parameter (GET), at most [`MAX_MESSAGE`] bytes; the answer is
//!   [`PKI_MESSAGE_CONTENT_TYPE`].
//!
//! The flow of [`handle`]:
//! 1. `message`: the CMS SignedData (BER or DER, RFC 5652 §5) with one signer whose
//!    certificate is in the message; the SCEP authenticated attributes (§3.2.1):
//!    messageType, transactionID, senderNonce. Without transactionID and senderNonce there is
//!    nothing to answer to: a [`ScepError`].
//! 2. The signature (SHA-1/256/384/512 with RSA) over the attributes, and messageDigest over
//!    the content (`badAlg`, `badMessageCheck`).
//! 3. messageType: PKCSReq (19) or RenewalReq (17); anything else, CertPoll included (no
//!    request is ever pending here), is `badRequest`.
//! 4. `envelope`: the pkcsPKIEnvelope (§3.2.2), a CMS EnvelopedData to the CA's key (RSA
//!    PKCS#1 v1.5 key transport; AES-128/192/256-CBC, DES-EDE3-CBC, DES-CBC). Go clients
//!    write its content as a constructed OCTET STRING that `der` refuses: `ber` joins it.
//! 5. `csr`: the PKCS#10 request, its self-signature, its CN and challengePassword.
//! 6. PKCSReq: the challenge, consumed from the [`ChallengeStore`], names the enrollment;
//!    RenewalReq: the signer's certificate, issued by this CA, valid and not revoked
//!    ([`RevocationCheck`]), names it. For stores that are asynchronous, [`prepare`] stops
//!    here with the one [`Question`] to ask, and [`Prepared::answer`] takes the [`Verdict`].
//! 7. [`DeviceCa::issue`] (see `ca` for where the enrollment id goes).
//! 8. `reply`: the CertRep (§3.3.2), signed by the CA with the request's digest; on success
//!    the certificate in a certs-only SignedData enveloped to the requester's certificate with
//!    the request's cipher; on failure the failInfo.
//!
//! Costs and bounds: the message is refused above [`MAX_MESSAGE`] before parsing; every
//! length is checked against the bytes present (no allocation from a claimed length); RSA keys
//! are 2048 to 8192 bits (*ring*'s verification bounds). One request costs one RSA private
//! operation (decrypting the content key, blinded) and, when answered, one or two more
//! (signing the certificate and the CertRep).
//!
//! The device's side, for the load-test fleet and tests acting as a device: [`client`].
//!
//! Crypto: *ring* hashes and verifies; the `rsa` crate decrypts and signs with the CA key
//! (*ring* signs no SHA-1, which scepclient's requests need answered in kind); `rcgen` writes
//! the certificates; RustCrypto's `cms`/`der`/`x509-cert` (the versions the server pins)
//! parse and write the CMS structures.

mod attrs;
mod ber;
mod ca;
pub mod client;
mod csr;
mod digest;
mod envelope;
mod error;
mod handler;
mod message;
mod oid;
mod reply;

#[cfg(test)]
mod tests;

/// The `rand_core` version whose `CryptoRngCore` the API takes (the one `rsa` 0.9 uses):
/// callers pass `rand_core::OsRng` from here rather than pick a version of their own.
pub use rand_core;

pub use attrs::MessageType;
pub use ca::{
    enrollment_id_of, DeviceCa, DeviceCertRequest, BACKDATE, CA_COMMON_NAME, CA_KEY_BITS,
    CA_VALIDITY, DEFAULT_DEVICE_VALIDITY, MAX_ENROLLMENT_ID,
};
pub use digest::{ct_eq, Digest};
pub use envelope::ContentCipher;
pub use error::{CaError, FailInfo, Refusal, ScepError};
pub use handler::{
    handle, handle_with, prepare, CertificateId, ChallengeStore, NothingRevoked, PkiResponse,
    Policy, Prepared, Question, RevocationCheck, Verdict,
};
pub use reply::PkiStatus;

/// The largest PKIOperation message accepted, refused before any parsing. A request is a CSR
/// and a certificate, enveloped and signed: a few kilobytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The GetCACaps answer (RFC 8894 §3.5.2), `text/plain`.
pub const CA_CAPS: &str = "POSTPKIOperation\nSHA-256\nSHA-1\nAES\nDES3\nSCEPStandard\nRenewal\n";

/// The content type of the GetCACert answer: one CA certificate, DER.
pub const CA_CERT_CONTENT_TYPE: &str = "application/x-x509-ca-cert";

/// The content type of a PKIOperation answer.
pub const PKI_MESSAGE_CONTENT_TYPE: &str = "application/x-pki-message";
