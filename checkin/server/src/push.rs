//! Pushing, as the check-in server sees it: a [`PushSender`] takes a [`DevicePush`] and
//! eventually yields its [`PushResult`]. The real sender is the engine's
//! [`magicpush_engine::Client`], behind [`EnginePusher`]; tests use `magicpush-testkit`'s
//! scripted pusher.

use magicpush_engine::cert::PushCertificate;
use magicpush_engine::{Client, ClientBuilder, DevicePush, PushResult};

pub use magicpush_engine::sender::{BoxFuture, PushSender, ReplaceError};

/// The engine's client: one pool per push certificate (per topic), each connecting at its
/// first push. `serve` may start without a certificate (the manual's first page: issue a
/// request, wait for Apple's certificate); until one is installed, and after
/// [`PushSender::remove_certificate`] of the last one, every push ends at once in
/// [`magicpush_engine::PushError::NoCertificate`] (or `UnknownTopic` for a push that names
/// its topic).
#[derive(Debug)]
pub struct EnginePusher {
    client: Client,
}

impl EnginePusher {
    /// A pusher with the pool settings of `builder` and its certificates, plus
    /// `certificates` (one per topic: a later one replaces an earlier one of its topic).
    /// Needs a Tokio runtime.
    pub fn new(
        builder: ClientBuilder,
        certificates: impl IntoIterator<Item = PushCertificate>,
    ) -> Result<EnginePusher, magicpush_engine::ClientError> {
        let builder = certificates
            .into_iter()
            .fold(builder, |b, cert| b.certificate(cert));
        Ok(EnginePusher {
            client: builder.build()?,
        })
    }

    /// The engine's client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stops every pool (in-flight pushes end first, see [`Client::shutdown`]).
    pub async fn shutdown(&self) {
        self.client.shutdown().await;
    }
}

impl PushSender for EnginePusher {
    fn push(&self, push: DevicePush) -> BoxFuture<'static, PushResult> {
        PushSender::push(&self.client, push)
    }

    fn replace_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError> {
        PushSender::replace_certificate(&self.client, cert)
    }

    fn add_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError> {
        PushSender::add_certificate(&self.client, cert)
    }

    fn remove_certificate(&self, topic: &str) {
        PushSender::remove_certificate(&self.client, topic);
    }
}
