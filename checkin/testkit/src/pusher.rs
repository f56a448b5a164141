//! A scripted [`PushSender`] for tests and benchmarks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magicpush_engine::cert::PushCertificate;
use magicpush_engine::sender::{BoxFuture, PushSender, ReplaceError};
use magicpush_engine::{Delivered, DevicePush, PushError, PushResult};

/// What [`FakePusher`] answers for a given token.
#[derive(Debug, Clone)]
pub enum FakeOutcome {
    /// 200 after the given delay.
    Accept(Duration),
    /// The given error, immediately.
    Fail(PushError),
}

/// A scripted [`PushSender`] for tests: accepts every push unless told otherwise per token,
/// and records what it was asked to send and the certificates it holds.
#[derive(Default)]
pub struct FakePusher {
    inner: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    outcomes: HashMap<String, FakeOutcome>,
    sent: Vec<DevicePush>,
    certificates_installed: usize,
    /// The serial (hex) of the certificate held for each topic.
    held: std::collections::BTreeMap<String, String>,
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

    /// How many certificates were installed ([`PushSender::replace_certificate`] and
    /// [`PushSender::add_certificate`] calls).
    pub fn certificates_installed(&self) -> usize {
        self.state().certificates_installed
    }

    /// The certificates held, as topic → serial number (hex, as
    /// [`magicpush_engine::cert::CertificateInfo::serial`] gives it).
    pub fn certificates(&self) -> std::collections::BTreeMap<String, String> {
        self.state().held.clone()
    }

    fn hold(&self, cert: &PushCertificate, replace: bool) {
        let info = cert.info();
        let mut state = self.state();
        state.certificates_installed += 1;
        // As the engine does: while exactly one is held, another topic's replaces it.
        if replace && state.held.len() == 1 && !state.held.contains_key(info.topic()) {
            state.held.clear();
        }
        state
            .held
            .insert(info.topic().to_owned(), info.serial().to_owned());
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

    fn replace_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError> {
        self.hold(&cert, true);
        Ok(())
    }

    fn add_certificate(&self, cert: PushCertificate) -> Result<(), ReplaceError> {
        self.hold(&cert, false);
        Ok(())
    }

    fn remove_certificate(&self, topic: &str) {
        self.state().held.remove(topic);
    }
}
