//! The webhook (`--notify-url`, `--notify-secret`): events about the push certificate and
//! refreshes, POSTed as JSON by a task of their own so that a slow or failing receiver never
//! holds up a push or a check-in.
//!
//! Each body is signed: `X-Magicpush-Signature: sha256=<hex HMAC-SHA256 of the body>` with
//! the secret (the receiver recomputes it over the raw body it received). A failed delivery
//! (no connection, no answer within the timeout, a non-2xx status) is retried with a
//! doubling delay, a bounded number of times; then it is dropped, logged and counted. Events
//! wait in a bounded queue; when it is full, new ones are dropped and counted.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use ring::hmac;
use tokio::sync::mpsc;

use crate::client::AdminClient;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-magicpush-signature";

/// Events waiting for delivery at most.
const QUEUE: usize = 1_024;

/// Where and how to deliver.
#[derive(Clone)]
pub struct NotifyConfig {
    /// `http://…` or `https://…` (public roots, or `ca_pem`).
    pub url: String,
    /// The HMAC key; without it the header is not sent.
    pub secret: Option<String>,
    /// Deliveries tried per event (first try included). Default 6.
    pub attempts: u32,
    /// Delay before the first retry; doubled each time, at most 5 minutes. Default 2 s.
    pub first_retry: Duration,
    /// Time for the receiver to answer. Default 10 s.
    pub timeout: Duration,
    /// Extra CA certificates (PEM) for an `https://` receiver.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl NotifyConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>, secret: Option<String>) -> NotifyConfig {
        NotifyConfig {
            url: url.into(),
            secret,
            attempts: 6,
            first_retry: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            ca_pem: None,
        }
    }
}

/// The webhook URL cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--notify-url {url}: {why}")]
pub struct NotifyError {
    url: String,
    why: String,
}

/// Hands events to the delivery task. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Bytes>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// Checks the URL and starts the delivery task on the current runtime.
    pub fn spawn(config: NotifyConfig) -> Result<Notifier, NotifyError> {
        let err = |why: String| NotifyError {
            url: config.url.clone(),
            why,
        };
        let uri: Uri = config.url.parse().map_err(|e| err(format!("{e}")))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(err("give an absolute http:// or https:// URL".into()));
        };
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let client = AdminClient::new(
            &format!("{scheme}://{authority}"),
            None,
            config.ca_pem.as_deref(),
        )
        .map_err(|e| err(e.to_string()))?
        .with_timeout(config.timeout);
        let (queue, events) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(client, path, config, events));
        Ok(Notifier { queue })
    }

    /// Queues `event` for delivery; never waits. A full queue drops it (logged, counted).
    pub fn send(&self, event: &serde_json::Value) {
        let body = Bytes::from(serde_json::to_vec(event).unwrap_or_default());
        if self.queue.try_send(body).is_err() {
            ::metrics::counter!("magicpush_webhook_deliveries_total", "outcome" => "dropped")
                .increment(1);
            tracing::warn!("webhook queue full or closed: an event was dropped");
        }
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// The delay before retry `n` (1-based): `first × 2^(n-1)`, at most 5 minutes.
pub fn retry_delay(first: Duration, n: u32) -> Duration {
    first
        .saturating_mul(1u32 << (n.saturating_sub(1)).min(16))
        .min(Duration::from_secs(300))
}

async fn deliver(
    client: AdminClient,
    path: String,
    config: NotifyConfig,
    mut events: mpsc::Receiver<Bytes>,
) {
    let name = HeaderName::from_static(SIGNATURE_HEADER);
    while let Some(body) = events.recv().await {
        let mut headers = Vec::new();
        if let Some(secret) = &config.secret {
            if let Ok(v) = HeaderValue::from_str(&signature(secret.as_bytes(), &body)) {
                headers.push((name.clone(), v));
            }
        }
        let attempts = config.attempts.max(1);
        let mut delivered = false;
        for attempt in 1..=attempts {
            let answer = client
                .request_with(
                    Method::POST,
                    &path,
                    Some(("application/json", body.clone())),
                    &headers,
                )
                .await;
            let why = match answer {
                Ok((status, _)) if status.is_success() => {
                    delivered = true;
                    break;
                }
                Ok((status, _)) => format!("answered {status}"),
                Err(e) => e.to_string(),
            };
            if attempt < attempts {
                let wait = retry_delay(config.first_retry, attempt);
                tracing::info!(
                    attempt,
                    "webhook delivery failed ({why}); retrying in {wait:?}"
                );
                tokio::time::sleep(wait).await;
            } else {
                tracing::warn!(
                    attempts,
                    "webhook delivery failed ({why}); the event is dropped"
                );
            }
        }
        let outcome = if delivered { "delivered" } else { "failed" };
        ::metrics::counter!("magicpush_webhook_deliveries_total", "outcome" => outcome)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_double_and_are_capped() {
        let first = Duration::from_secs(2);
        assert_eq!(retry_delay(first, 1), Duration::from_secs(2));
        assert_eq!(retry_delay(first, 3), Duration::from_secs(8));
        assert_eq!(retry_delay(first, 40), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn a_relative_url_is_refused() {
        assert!(Notifier::spawn(NotifyConfig::new("/hook", None)).is_err());
        assert!(Notifier::spawn(NotifyConfig::new("ftp://x/hook", None)).is_err());
    }
}
