//! Why a push certificate could not be loaded.

use std::path::PathBuf;

/// An error loading or validating an MDM push certificate.
///
/// Messages are written for the administrator who uploaded the file: they say what was found
/// and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error (in the message; not a `source()`, so that a chain
        /// printed whole names it once).
        cause: std::io::Error,
    },

    /// An error in the content of a file (`error` says what); use [`CertError::root`] to match
    /// on the underlying error.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: Box<CertError>,
    },

    /// The input contains no certificate (no `-----BEGIN CERTIFICATE-----` block, or an empty
    /// PKCS#12 file).
    #[error("no certificate found (expected a PEM block \"-----BEGIN CERTIFICATE-----\", DER, or a PKCS#12 file with a certificate)")]
    NoCertificate,

    /// PEM text that cannot be decoded (bad base64, a block without its END line, …).
    #[error("unreadable PEM: {reason}")]
    InvalidPem {
        /// The decoder's explanation.
        reason: String,
    },

    /// A certificate that is not valid X.509 DER.
    #[error("unreadable certificate: {reason}")]
    InvalidCertificate {
        /// The parser's explanation.
        reason: String,
    },

    /// The private key is encrypted with a passphrase (`ENCRYPTED PRIVATE KEY`, or a
    /// traditional `Proc-Type: 4,ENCRYPTED` key): the engine needs it decrypted.
    #[error(
        "the private key is encrypted with a passphrase; decrypt it first: openssl pkey -in {} -out <decrypted-key.pem> (and keep the decrypted file private)",
        path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<key.pem>".to_string())
    )]
    EncryptedKey {
        /// The key file, when the key came from a file.
        path: Option<PathBuf>,
    },

    /// No private key was given or found next to the certificate.
    #[error("no private key found (expected a PEM block \"-----BEGIN PRIVATE KEY-----\", \"-----BEGIN RSA PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\", or a PKCS#12 file with a key)")]
    MissingKey,

    /// The PKCS#12 password is wrong (the integrity check or the decryption failed).
    #[error("wrong PKCS#12 password (the file's integrity check failed with the password given)")]
    WrongPassword,

    /// A PKCS#12 file that cannot be decoded.
    #[error("unreadable PKCS#12 file: {reason}")]
    InvalidPkcs12 {
        /// The decoder's explanation.
        reason: String,
    },

    /// A private key the TLS stack cannot sign with (not RSA ≥ 2048 / ECDSA P-256 / P-384 /
    /// Ed25519, or damaged).
    #[error("unsupported or damaged private key: {reason}")]
    UnsupportedKey {
        /// The TLS stack's explanation.
        reason: String,
    },

    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate {subject}: {} — use the key the certificate signing request was made with", mismatch(cert_key, key))]
    KeyMismatch {
        /// Subject of the certificate.
        subject: String,
        /// Algorithm of the certificate's public key.
        cert_key: String,
        /// Algorithm of the private key's public key.
        key: String,
    },

    /// The certificate is not an MDM push certificate: its subject has no UID attribute, or
    /// the UID does not start with `com.apple.mgmt.`.
    #[error("not an MDM push certificate: {}; subject: {subject} (an MDM push certificate from the Apple Push Certificates Portal has UID = com.apple.mgmt.External.<uuid>)",
        match uid { Some(uid) => format!("its topic (UID) is {uid:?}, which does not start with \"com.apple.mgmt.\""), None => "its subject has no UID (topic) attribute".to_string() })]
    NotMdmCertificate {
        /// Subject of the certificate, OpenSSL style.
        subject: String,
        /// The UID attribute found, if any.
        uid: Option<String>,
    },
}

impl CertError {
    /// The error without its file context ([`CertError::InFile`] unwrapped).
    pub fn root(&self) -> &CertError {
        match self {
            CertError::InFile { error, .. } => error.root(),
            other => other,
        }
    }

    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> CertError {
        match self {
            already @ (CertError::Io { .. } | CertError::InFile { .. }) => already,
            other => CertError::InFile {
                path: path.into(),
                error: Box::new(other),
            },
        }
    }
}

/// How a certificate's public key and a private key differ, for [`CertError::KeyMismatch`].
fn mismatch(cert_key: &str, key: &str) -> String {
    if cert_key == key {
        format!("both are {key} keys, but of two different key pairs")
    } else {
        format!("the certificate's public key is {cert_key}, the private key is {key}")
    }
}
