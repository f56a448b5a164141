//! magicpush-engine: MDM push certificates and a high-throughput APNs HTTP/2 connection pool.
//!
//! # Layout
//! - [`cert`]: the MDM push certificate: loading (PEM, PKCS#12), parsing, renewal checks.
//! - [`apns`]: the APNs protocol without I/O: requests, responses, reasons.
//! - [`outcome`]: what a push is and how it can end.

pub mod apns;
pub mod cert;
pub mod outcome;

pub use apns::reason::Reason;
pub use outcome::{Delivered, DevicePush, DeviceToken, InvalidToken, PushError, PushResult};
