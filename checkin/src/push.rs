//! Pushing, as the check-in server sees it: a [`PushSender`] takes a [`DevicePush`] and
//! eventually yields its [`PushResult`]. The real sender is the engine's
//! [`magicpush_engine::Client`]; tests use `FakePusher` (feature `test-support`).

use std::future::Future;
use std::pin::Pin;

use std::sync::RwLock;

use magicpush_engine::cert::PushCertificate;
use magicpush_engine::{Client, ClientBuilder, DevicePush, PushError, PushResult};

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
    /// [`magicpush_engine::PushError::NoCertificate`] until one is installed. The default does
    /// nothing: the service itself refuses to push without a registered certificate.
    fn remove_certificate(&self) {}
}

/// The sender could not take the new certificate (for example, it was shut down).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the push client did not take the new certificate: {0}")]
pub struct ReplaceError(pub String);

impl PushSender for magicpush_engine::Client {
    fn push(&self, push: DevicePush) -> BoxFuture<'static, PushResult> {
        let client = self.clone();
        Box::pin(async move { client.push(push).await })
    }

    fn replace_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError> {
        magicpush_engine::Client::replace_certificate(self, cert)
            .map_err(|e| ReplaceError(e.to_string()))
    }
}

/// The engine's pool, started when the first certificate is installed: `serve` may start
/// without one (the manual's first page: issue a request, wait for Apple's certificate).
/// Until then, and after [`PushSender::remove_certificate`], every push ends at once in
/// [`PushError::NoCertificate`].
pub struct EnginePusher {
    builder: ClientBuilder,
    client: RwLock<Option<Client>>,
}

impl std::fmt::Debug for EnginePusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnginePusher")
            .field("running", &self.current().is_some())
            .finish_non_exhaustive()
    }
}

impl EnginePusher {
    /// A pusher with the pool settings of `builder` (its certificate, if any, is replaced by
    /// `cert`); the pool starts now when `cert` is given. Needs a Tokio runtime.
    pub fn new(
        builder: ClientBuilder,
        cert: Option<PushCertificate>,
    ) -> Result<EnginePusher, magicpush_engine::ClientError> {
        let client = match cert {
            Some(cert) => Some(builder.clone().certificate(cert).build()?),
            None => None,
        };
        Ok(EnginePusher {
            builder,
            client: RwLock::new(client),
        })
    }

    /// The running pool, if any.
    pub fn current(&self) -> Option<Client> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the pool (in-flight pushes end first, see [`Client::shutdown`]).
    pub async fn shutdown(&self) {
        if let Some(client) = self.take() {
            client.shutdown().await;
        }
    }

    /// The running pool, taken out (none runs afterwards).
    fn take(&self) -> Option<Client> {
        self.client
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl PushSender for EnginePusher {
    fn push(&self, push: DevicePush) -> BoxFuture<'static, PushResult> {
        match self.current() {
            Some(client) => Box::pin(async move { client.push(push).await }),
            None => Box::pin(std::future::ready(Err(PushError::NoCertificate))),
        }
    }

    fn replace_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError> {
        let mut slot = self.client.write().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(client) => magicpush_engine::Client::replace_certificate(client, cert)
                .map_err(|e| ReplaceError(e.to_string())),
            None => {
                let client = self
                    .builder
                    .clone()
                    .certificate(cert)
                    .build()
                    .map_err(|e| ReplaceError(e.to_string()))?;
                *slot = Some(client);
                Ok(())
            }
        }
    }

    fn remove_certificate(&self) {
        if let Some(client) = self.take() {
            tokio::spawn(async move { client.shutdown().await });
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
pub use fake::{FakeOutcome, FakePusher};

/// The scripted pusher (tests and benchmarks; feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
mod fake {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use magicpush_engine::{Delivered, PushError};

    use super::*;

    /// What [`FakePusher`] answers for a given token.
    #[derive(Debug, Clone)]
    pub enum FakeOutcome {
        /// 200 after the given delay.
        Accept(Duration),
        /// The given error, immediately.
        Fail(PushError),
    }

    /// A scripted [`PushSender`] for tests: accepts every push unless told otherwise per token,
    /// and records what it was asked to send.
    #[derive(Default)]
    pub struct FakePusher {
        inner: Mutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        outcomes: HashMap<String, FakeOutcome>,
        sent: Vec<DevicePush>,
        certificates_installed: usize,
    }

    impl FakePusher {
        /// A pusher that accepts everything at once.
        pub fn new() -> Arc<Self> {
            Arc::new(FakePusher::default())
        }

        /// Scripts the outcome for the token with this lowercase hex.
        pub fn set_outcome(&self, token_hex: &str, outcome: FakeOutcome) {
            self.state()
                .outcomes
                .insert(token_hex.to_ascii_lowercase(), outcome);
        }

        /// Every push asked for so far, in order.
        pub fn sent(&self) -> Vec<DevicePush> {
            self.state().sent.clone()
        }

        /// How many times [`PushSender::replace_certificate`] was called.
        pub fn certificates_installed(&self) -> usize {
            self.state().certificates_installed
        }

        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            // A panic while holding this lock can only come from a failing test; keep going.
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl PushSender for FakePusher {
        fn push(&self, push: DevicePush) -> BoxFuture<'static, PushResult> {
            let outcome = {
                let mut state = self.state();
                state.sent.push(push.clone());
                state
                    .outcomes
                    .get(push.token.as_hex())
                    .cloned()
                    .unwrap_or(FakeOutcome::Accept(Duration::ZERO))
            };
            Box::pin(async move {
                match outcome {
                    FakeOutcome::Accept(delay) => {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok(Delivered {
                            apns_id: uuid::Uuid::new_v4().to_string(),
                            latency: delay,
                            attempts: 1,
                        })
                    }
                    FakeOutcome::Fail(err) => Err(err),
                }
            })
        }

        fn replace_certificate(&self, _cert: PushCertificate) -> Result<(), ReplaceError> {
            self.state().certificates_installed += 1;
            Ok(())
        }
    }
}
