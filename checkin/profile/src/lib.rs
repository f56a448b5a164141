#![warn(missing_docs)]

//! MDM enrollment profiles (`.mobileconfig`), as a pure library: the profile's fields in, the
//! profile's bytes out; a signer's PEM in, the signed profile's bytes out. No I/O: the server
//! serves the bytes with [`CONTENT_TYPE`].
//!
//! An enrollment profile is what a device installs to enroll: a configuration profile (an XML
//! property list whose top level is `PayloadType` `Configuration`) carrying
//!
//! - a SCEP payload (`com.apple.security.scep`, Apple's "SCEP" profile documentation): the
//!   device generates an RSA key and gets its identity certificate from the built-in device CA
//!   over SCEP, authenticated by a one-time challenge. `CAFingerprint` pins the CA that
//!   `GetCACert` answers (see [`render`] for the hash);
//! - an MDM payload (`com.apple.mdm`, Apple's "MDM" profile documentation): the check-in and
//!   command URLs, the APNs topic, and `IdentityCertificateUUID`, the `PayloadUUID` of the
//!   SCEP payload whose certificate the device presents as its TLS client identity;
//! - optionally a root certificate payload (`com.apple.security.root`, Apple's "Root"
//!   profile documentation) for a server whose TLS certificate chains to a private CA.
//!
//! Why signed: an unsigned profile installs, but the device labels it "Unsigned" / "Not
//! Verified". Signed with a certificate the device trusts (typically the server's own TLS
//! certificate), it shows "Verified". The signature is a CMS SignedData (RFC 5652) whose
//! encapsulated content is the profile itself ([`ProfileSigner::sign`]); a client that only
//! needs the profile unwraps it without verification with [`content_of`].
//!
//! Crypto: *ring* signs (ECDSA P-256/P-384, RSA PKCS#1 v1.5) and hashes; RustCrypto's
//! `cms`/`der`/`x509-cert` (the versions the rest of the server pins) write and read the CMS
//! structures; `plist` writes the property list.

mod content;
mod key;
mod payloads;
mod sign;

pub use content::content_of;
pub use payloads::{render, EnrollmentProfile};
pub use sign::ProfileSigner;

/// The media type of a configuration profile, signed or not (Apple's "Over-the-Air Profile
/// Delivery and Configuration"; Safari and Settings hand such a download to the profile
/// installer).
pub const CONTENT_TYPE: &str = "application/x-apple-aspen-config";

/// Why a signer could not be loaded, a profile not signed, or bytes not read as a profile.
/// Messages are one line, for an operator.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The certificate or key text is not PEM.
    #[error("profile signer: {what} is not valid PEM: {reason}")]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The PEM parser's reason.
        reason: String,
    },
    /// The certificate PEM holds no `CERTIFICATE` block.
    #[error("profile signer: the certificate file holds no CERTIFICATE block")]
    NoCertificate,
    /// A `CERTIFICATE` block is not a DER X.509 certificate.
    #[error("profile signer: certificate {index} of the chain is not a valid X.509 certificate: {reason}")]
    Certificate {
        /// Its position in the file, from 1 (the leaf).
        index: usize,
        /// The decoder's reason.
        reason: String,
    },
    /// The key PEM holds no private key block this crate reads.
    #[error("profile signer: the key file holds no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block{found}")]
    NoKey {
        /// What it holds instead (`" (found: …)"`), or empty.
        found: String,
    },
    /// The key is of a kind that cannot sign here (or malformed).
    #[error("profile signer: unsupported private key ({reason}); use ECDSA P-256, ECDSA P-384 or RSA (2048 to 4096 bits)")]
    UnsupportedKey {
        /// What was wrong with it.
        reason: String,
    },
    /// The key is not the private half of the leaf certificate's public key.
    #[error("profile signer: the private key does not match the certificate {subject}")]
    KeyMismatch {
        /// The leaf certificate's subject.
        subject: String,
    },
    /// The signature or the DER encoding failed (the key or certificate is unusable).
    #[error("signing the profile failed: {0}")]
    Sign(String),
    /// The bytes are neither a plist nor a CMS SignedData with content.
    #[error("not a configuration profile: {0}")]
    NotAProfile(String),
}
