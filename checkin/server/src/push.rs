//! Pushing, as the check-in server sees it: a [`PushSender`] takes a [`DevicePush`] and
//! eventually yields its [`PushResult`]. The real sender is the engine's
//! [`magicpush_engine::Client`], behind [`EnginePusher`]; tests use `magicpush-testkit`'s
//! scripted pusher.

use std::sync::RwLock;

use magicpush_engine::cert::PushCertificate;
use magicpush_engine::{Client, ClientBuilder, DevicePush, PushError, PushResult};

pub use magicpush_engine::sender::{BoxFuture, PushSender, ReplaceError};

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
