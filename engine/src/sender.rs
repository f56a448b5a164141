//! [`PushSender`]: what delivers MDM pushes, as a caller sees it — the engine's [`Client`], or
//! a stand-in a caller's tests script.

use std::future::Future;
use std::pin::Pin;

use crate::cert::PushCertificate;
use crate::client::Client;
use crate::outcome::{DevicePush, PushResult};

/// A boxed, sendable future, so [`PushSender`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that delivers MDM pushes to APNs, with one push certificate per topic.
///
/// Contract: every call to [`push`](PushSender::push) yields exactly one result, within the
/// sender's own deadline; the future owns everything it needs (`'static`) so callers may spawn it.
pub trait PushSender: Send + Sync {
    /// Sends one push (on the certificate of its topic) and reports how it ended.
    fn push(&self, push: DevicePush) -> BoxFuture<'static, PushResult>;

    /// Installs a push certificate: the renewal of a topic held, or the first certificate.
    /// While exactly one is held, a certificate of another topic takes its place (the topic
    /// changes). Pushes submitted afterwards use it; in-flight pushes may finish on the old one.
    fn replace_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError>;

    /// Adds a certificate for a topic not held yet (another tenant). The default replaces.
    fn add_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError> {
        self.replace_certificate(cert)
    }

    /// Stops using `topic`'s certificate (`DELETE /v1/pushcert`): its pushes fail with
    /// [`crate::PushError::UnknownTopic`] (or [`crate::PushError::NoCertificate`] once none is
    /// held) until one is installed again. The default does nothing: the service itself refuses
    /// to push without a registered certificate.
    fn remove_certificate(&self, topic: &str) {
        let _ = topic;
    }
}

/// The sender could not take the new certificate (for example, it was shut down).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the push client did not take the new certificate: {0}")]
pub struct ReplaceError(pub String);

impl PushSender for Client {
    fn push(&self, push: DevicePush) -> BoxFuture<'static, PushResult> {
        let client = self.clone();
        Box::pin(async move { client.push(push).await })
    }

    fn replace_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError> {
        Client::replace_certificate(self, cert).map_err(|e| ReplaceError(e.to_string()))
    }

    fn add_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError> {
        Client::add_certificate(self, cert).map_err(|e| ReplaceError(e.to_string()))
    }

    fn remove_certificate(&self, topic: &str) {
        Client::remove_certificate(self, topic);
    }
}
