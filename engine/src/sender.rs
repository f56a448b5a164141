//! [`PushSender`]: what delivers MDM pushes, as a caller sees it — the engine's [`Client`], or
//! a stand-in a caller's tests script.

use std::future::Future;
use std::pin::Pin;

use crate::cert::PushCertificate;
use crate::client::Client;
use crate::outcome::{DevicePush, PushResult};

/// A boxed, sendable future, so [`PushSender`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that delivers MDM pushes to APNs.
///
/// Contract: every call to [`push`](PushSender::push) yields exactly one result, within the
/// sender's own deadline; the future owns everything it needs (`'static`) so callers may spawn it.
pub trait PushSender: Send + Sync {
    /// Sends one push and reports how it ended.
    fn push(&self, push: DevicePush) -> BoxFuture<'static, PushResult>;

    /// Installs a new push certificate; pushes submitted afterwards use it. In-flight pushes
    /// may finish on the old one.
    fn replace_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError>;

    /// Stops using the certificate (`DELETE /v1/pushcert`); pushes afterwards fail with
    /// [`crate::PushError::NoCertificate`] until one is installed. The default does
    /// nothing: the service itself refuses to push without a registered certificate.
    fn remove_certificate(&self) {}
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
}
