//! One push travelling through the pool, and the single place where it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::cause::Cause;
use crate::metrics as m;
use crate::outcome::{BulkItem, Delivered, DevicePush, PushError, PushResult};

/// Where a push's outcome goes.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A single `push()` waiting on its own channel.
    One(oneshot::Sender<PushResult>),
    /// One push of a bulk call: all of its outcomes share one channel.
    Bulk {
        index: usize,
        tx: mpsc::UnboundedSender<BulkItem>,
    },
}

/// A push with its reply channel and retry bookkeeping. It ends exactly once: through
/// [`Job::finish`], or — should a bug or a dying runtime drop it — as
/// [`PushError::Shutdown`] from its `Drop`.
#[derive(Debug)]
pub(crate) struct Job {
    pub push: DevicePush,
    reply: Option<Reply>,
    pub submitted: Instant,
    pub deadline: Instant,
    pub deadline_len: Duration,
    /// Sends so far.
    pub attempts: u32,
    /// The last transient failure.
    pub last: Option<Cause>,
    /// The slot the last attempt failed on, to resend elsewhere.
    pub avoid: Option<usize>,
    /// When the last attempt was sent.
    pub sent_at: Option<Instant>,
    /// Its place in the client's bound on queued pushes, given back when it ends.
    pub held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Job {
    pub(crate) fn new(push: DevicePush, reply: Reply, deadline_len: Duration, now: Instant) -> Job {
        Job {
            push,
            reply: Some(reply),
            submitted: now,
            deadline: now + deadline_len,
            deadline_len,
            attempts: 0,
            last: None,
            avoid: None,
            sent_at: None,
            held: None,
        }
    }

    /// A job for a single push, with the receiver of its outcome.
    pub(crate) fn single(
        push: DevicePush,
        deadline_len: Duration,
        now: Instant,
    ) -> (Job, oneshot::Receiver<PushResult>) {
        let (tx, rx) = oneshot::channel();
        (Job::new(push, Reply::One(tx), deadline_len, now), rx)
    }

    /// Nobody waits for the outcome any more (the caller's own deadline fired, or it went away).
    pub(crate) fn abandoned(&self) -> bool {
        match &self.reply {
            Some(Reply::One(tx)) => tx.is_closed(),
            Some(Reply::Bulk { tx, .. }) => tx.is_closed(),
            None => true,
        }
    }

    /// APNs accepted the push; `now` is when its answer was read.
    pub(crate) fn delivered(
        mut self,
        apns_id: String,
        now: Instant,
        metrics: &m::DeliveredMetrics,
    ) {
        let latency = now.saturating_duration_since(self.submitted);
        metrics.record(latency);
        let result = Ok(Delivered {
            apns_id,
            latency,
            attempts: self.attempts,
        });
        if let Some(reply) = self.reply.take() {
            self.reply_with(reply, result);
        }
    }

    /// The deadline passed; `connect_error` is the pool's last connection error, if any.
    pub(crate) fn deadline_exceeded(self, connect_error: Option<Arc<str>>) {
        let e = PushError::DeadlineExceeded {
            deadline: self.deadline_len,
            attempts: self.attempts,
            last: self.last.clone(),
            connect_error,
        };
        self.finish(Err(e));
    }

    /// Takes the push back without an outcome: it was never accepted (a full queue).
    pub(crate) fn cancel(mut self) -> DevicePush {
        self.reply = None;
        self.push.clone()
    }

    /// Ends the push: records its outcome once and hands it to the caller.
    pub(crate) fn finish(mut self, result: PushResult) {
        if let Some(reply) = self.reply.take() {
            self.send(reply, result);
        }
    }

    fn send(&mut self, reply: Reply, result: PushResult) {
        m::record_outcome(
            &result,
            self.submitted.elapsed(),
            self.push.topic.as_deref().unwrap_or(""),
        );
        self.reply_with(reply, result);
    }

    /// Hands the outcome over (already recorded in the metrics).
    fn reply_with(&mut self, reply: Reply, result: PushResult) {
        // The caller may have gone away; the outcome is still counted.
        match reply {
            Reply::One(tx) => {
                let _ = tx.send(result);
            }
            Reply::Bulk { index, tx } => {
                let _ = tx.send(BulkItem {
                    index,
                    token: self.push.token.clone(),
                    result,
                });
            }
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            self.send(reply, Err(PushError::Shutdown));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::DeviceToken;

    fn push() -> DevicePush {
        DevicePush::new(DeviceToken::from_hex("abcd").unwrap(), "m")
    }

    #[test]
    fn a_dropped_job_still_ends_once() {
        let (job, mut rx) = Job::single(push(), Duration::from_secs(1), Instant::now());
        drop(job);
        assert_eq!(rx.try_recv().unwrap(), Err(PushError::Shutdown));
    }

    #[test]
    fn bulk_outcomes_carry_index_and_token() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let job = Job::new(
            push(),
            Reply::Bulk { index: 7, tx },
            Duration::from_secs(1),
            Instant::now(),
        );
        assert!(!job.abandoned());
        job.delivered("id".into(), Instant::now(), &m::DeliveredMetrics::new("t"));
        let item = rx.try_recv().unwrap();
        assert_eq!(item.index, 7);
        assert_eq!(item.token.as_hex(), "abcd");
        assert!(item.result.is_ok());
        assert!(rx.try_recv().is_err(), "exactly one outcome");
    }
}
