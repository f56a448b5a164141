//! magicpush-engine: MDM push certificates and a high-throughput APNs HTTP/2 connection pool.
//!
//! ```no_run
//! # async fn example(cert: magicpush_engine::cert::PushCertificate) -> Result<(), Box<dyn std::error::Error>> {
//! use magicpush_engine::{Client, DevicePush, DeviceToken};
//! let client = Client::builder().certificate(cert).connections(4).build()?;
//! let token = DeviceToken::from_hex("8f2c…".trim_end_matches('…'))?;
//! match client.push(DevicePush::new(token, "push-magic")).await {
//!     Ok(delivered) => println!("accepted: {}", delivered.apns_id),
//!     Err(e) => println!("failed: {e}"),
//! }
//! # Ok(()) }
//! ```
//!
//! One client serves many push certificates, one pool per topic (a platform's customers each
//! have their own): add them with [`Client::add_certificate`] (or `.certificate()` per topic
//! on the builder) and name the topic on each push with [`DevicePush::with_topic`]. Pools
//! connect at their first push, close after an idle time, and share one budget of
//! connections ([`ClientBuilder::max_total_connections`]).
//!
//! # Layout
//! - [`cert`]: the MDM push certificate: loading (PEM, PKCS#12), parsing, renewal checks.
//! - [`apns`]: the APNs protocol without I/O: request encoding, response classification, reasons.
//! - [`pool`]: the pool's decisions without I/O: connection choice, reconnect plan, retries,
//!   when a topic gives connections back to the shared budget.
//! - [`outcome`]: what a push is and how it can end; [`cause`]: why it failed, typed — APNs's
//!   reasons apart from the engine's own outcomes, each with a stable stored name.
//! - [`sender`]: [`PushSender`], what delivers pushes as a caller sees it (the [`Client`], or a
//!   caller's test stand-in).
//! - `client` (re-exported at the root): the builder and the push API.
//! - `dispatch`, `conn`, `transport`: the I/O — the dispatcher task, one task per HTTP/2
//!   connection, and TCP/TLS/HTTP/2 setup.

#![warn(missing_docs)]

pub mod apns;
pub mod cause;
pub mod cert;
mod client;
mod conn;
mod dispatch;
pub mod endpoint;
mod job;
pub mod metrics;
pub mod outcome;
pub mod pool;
pub mod sender;
mod transport;

pub use apns::reason::Reason;
pub use apns::request::{Expiration, Priority};
pub use cause::{Cause, CertificateAlert, EngineCause};
pub use client::{BulkPush, Client, ClientBuilder, ClientError, Summary, TryPushError};
pub use dispatch::PoolStatus;
pub use endpoint::{CustomEndpoint, Endpoint, InvalidEndpoint};
pub use outcome::{
    BulkItem, Delivered, DevicePush, DeviceToken, InvalidToken, PushError, PushResult,
};
pub use sender::{PushSender, ReplaceError};
pub use transport::{ConnectError, InvalidProxy, ProxyProtocolError, TlsConfigError};
