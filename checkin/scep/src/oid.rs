//! The object identifiers SCEP messages use (RFC 8894 §3.2.1, RFC 5652, RFC 3565, RFC 8018).

use der::asn1::ObjectIdentifier as Oid;

// CMS content types (RFC 5652 §4, §5, §6).
pub(crate) const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
pub(crate) const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
pub(crate) const ID_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");

// CMS signed attributes (RFC 5652 §11).
pub(crate) const ID_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
pub(crate) const ID_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
/// PKCS#9 challengePassword, a CSR attribute (RFC 2985 §5.4.1).
pub(crate) const ID_CHALLENGE_PASSWORD: Oid = Oid::new_unwrap("1.2.840.113549.1.9.7");

// SCEP authenticated attributes (RFC 8894 §3.2.1): id-attributes 2.16.840.1.113733.1.9.
pub(crate) const SCEP_MESSAGE_TYPE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.2");
pub(crate) const SCEP_PKI_STATUS: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.3");
pub(crate) const SCEP_FAIL_INFO: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.4");
pub(crate) const SCEP_SENDER_NONCE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.5");
pub(crate) const SCEP_RECIPIENT_NONCE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.6");
pub(crate) const SCEP_TRANSACTION_ID: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.7");

// Digests.
pub(crate) const ID_SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
pub(crate) const ID_SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const ID_SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
pub(crate) const ID_SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");

// Public keys and signatures.
pub(crate) const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const SHA1_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
pub(crate) const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub(crate) const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub(crate) const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
pub(crate) const ID_EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub(crate) const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub(crate) const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
pub(crate) const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");

// Content ciphers (RFC 3565 for AES, RFC 8018 §B.2 for DES).
pub(crate) const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
pub(crate) const AES192_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.22");
pub(crate) const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
pub(crate) const DES_EDE3_CBC: Oid = Oid::new_unwrap("1.2.840.113549.3.7");
pub(crate) const DES_CBC: Oid = Oid::new_unwrap("1.3.14.3.2.7");

// Names.
pub(crate) const AT_COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");
pub(crate) const AT_ORGANIZATIONAL_UNIT: Oid = Oid::new_unwrap("2.5.4.11");
