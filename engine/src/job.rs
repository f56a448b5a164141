//! One push travelling through the pool, and the single place where it ends.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::apns::reason::Reason;
use crate::metrics as m;
use crate::outcome::{Delivered, DevicePush, PushError, PushResult};

/// A push with its reply channel and retry bookkeeping. Dropping a `Job` without calling
/// [`Job::finish`] is a bug: the caller's backstop would report `Shutdown`.
#[derive(Debug)]
pub(crate) struct Job {
    pub push: DevicePush,
    reply: oneshot::Sender<PushResult>,
    pub submitted: Instant,
    pub deadline: Instant,
    pub deadline_len: Duration,
    /// Sends so far.
    pub attempts: u32,
    /// The last transient failure.
    pub last: Option<Reason>,
    /// The slot the last attempt failed on, to resend elsewhere.
    pub avoid: Option<usize>,
}

impl Job {
    pub fn new(
        push: DevicePush,
        deadline_len: Duration,
        now: Instant,
    ) -> (Job, oneshot::Receiver<PushResult>) {
        let (reply, rx) = oneshot::channel();
        (
            Job {
                push,
                reply,
                submitted: now,
                deadline: now + deadline_len,
                deadline_len,
                attempts: 0,
                last: None,
                avoid: None,
            },
            rx,
        )
    }

    /// The caller stopped waiting (its own deadline backstop fired, or it was dropped).
    pub fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    pub fn delivered(self, apns_id: String) {
        let latency = self.submitted.elapsed();
        let attempts = self.attempts;
        self.finish(Ok(Delivered {
            apns_id,
            latency,
            attempts,
        }));
    }

    pub fn deadline_exceeded(self) {
        let e = PushError::DeadlineExceeded {
            deadline: self.deadline_len,
            attempts: self.attempts,
            last: self.last.clone(),
        };
        self.finish(Err(e));
    }

    /// Ends the push: records its outcome once and hands it to the caller.
    pub fn finish(self, result: PushResult) {
        m::record_outcome(&result, self.submitted.elapsed());
        // The caller may have gone away; the outcome is still counted.
        let _ = self.reply.send(result);
    }
}
