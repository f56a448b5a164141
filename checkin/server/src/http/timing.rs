//! Slow and idle clients: a request body must arrive at a minimum rate (after a grace period)
//! and within a total time; a connection with no request in flight for the idle timeout is
//! closed. Both are plain state with time passed in ([`BodyPace`], [`Activity`]) and a thin
//! adapter over the body.
//!
//! Idleness counts requests, not bytes: HTTP/2 keep-alive PINGs move bytes on a connection
//! that carries nothing, and a client still sending its request headers is the header
//! timeout's business.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How fast a request body must arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPolicy {
    /// The whole body within this long. Default 60 s.
    pub timeout: Duration,
    /// After `grace`, at least this many bytes per second on average. Default 1,024.
    pub min_rate: u64,
    /// Time before the rate applies. Default 5 s.
    pub grace: Duration,
}

impl Default for BodyPolicy {
    fn default() -> Self {
        BodyPolicy {
            timeout: Duration::from_secs(60),
            min_rate: 1024,
            grace: Duration::from_secs(5),
        }
    }
}

/// The pace of one body: by when the next byte must have arrived.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    policy: BodyPolicy,
    started: Instant,
    received: u64,
}

impl BodyPace {
    /// A body whose headers arrived at `started`.
    pub fn new(policy: BodyPolicy, started: Instant) -> Self {
        BodyPace {
            policy,
            started,
            received: 0,
        }
    }

    /// `n` more bytes arrived.
    pub fn received(&mut self, n: usize) {
        self.received = self.received.saturating_add(n as u64);
    }

    /// The time by which more data (or the end) must arrive: the earlier of the total
    /// timeout and the moment the average rate would fall under `min_rate`.
    pub fn deadline(&self) -> Instant {
        let total = self.started + self.policy.timeout;
        let rate = self.policy.min_rate.max(1);
        let paid = Duration::from_secs_f64((self.received + 1) as f64 / rate as f64);
        total.min(self.started + self.policy.grace + paid)
    }
}

/// The body arrived too slowly (or not at all): the request is answered 408.
#[derive(Debug, Clone, thiserror::Error)]
#[error("request body too slow: {received} bytes in {elapsed:?} (at least {min_rate} bytes/s after {grace:?}, at most {timeout:?} in all)")]
pub struct BodyTooSlow {
    received: u64,
    elapsed: Duration,
    min_rate: u64,
    grace: Duration,
    timeout: Duration,
}

/// A request body that fails with [`BodyTooSlow`] when it falls behind its [`BodyPace`].
///
/// The timer is made, and armed with the pace's deadline, only when the body has to wait for
/// the client: a body that is already here when it is read (a device's check-in, as a rule)
/// costs no timer at all, neither an allocation nor an entry in the runtime's timer wheel.
pub struct PacedBody<B> {
    inner: B,
    pace: BodyPace,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> PacedBody<B> {
    /// Paces `inner` from now.
    pub fn new(inner: B, policy: BodyPolicy) -> Self {
        PacedBody {
            inner,
            pace: BodyPace::new(policy, Instant::now()),
            timer: None,
        }
    }

    /// The timer, armed with the pace's current deadline.
    fn timer(&mut self) -> Pin<&mut Sleep> {
        let deadline = self.pace.deadline();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut()
    }
}

/// Why a paced body ended in an error.
#[derive(Debug, thiserror::Error)]
pub enum PaceError {
    /// It fell behind.
    #[error(transparent)]
    TooSlow(#[from] BodyTooSlow),
    /// The connection's own error (reset, malformed chunk…).
    #[error(transparent)]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

impl<B> Body for PacedBody<B>
where
    B: Body + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = B::Data;
    type Error = PaceError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.pace.received(hyper::body::Buf::remaining(data));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(PaceError::Body(Box::new(e))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer().poll(cx) {
                Poll::Ready(()) => {
                    let p = this.pace.policy;
                    Poll::Ready(Some(Err(PaceError::TooSlow(BodyTooSlow {
                        received: this.pace.received,
                        elapsed: this.pace.started.elapsed(),
                        min_rate: p.min_rate,
                        grace: p.grace,
                        timeout: p.timeout,
                    }))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;

/// A connection's activity: requests in flight, and when the last one started or ended.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    started_any: std::sync::atomic::AtomicBool,
}

impl Activity {
    /// A connection that was active just now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started_any: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request started; the guard ends it.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started_any.store(true, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// Whether any request has started on the connection: one whose client has not sent a
    /// whole request head by the header timeout, counted from accept, is closed.
    pub fn started_any(&self) -> bool {
        self.started_any.load(Ordering::Relaxed)
    }

    /// Whether the connection has been idle — no request in flight, none started or ended —
    /// for at least `timeout` at `now`.
    pub fn idle_for(&self, timeout: Duration, now: Instant) -> bool {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last) >= timeout
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_must_keep_its_rate_after_the_grace_period() {
        let policy = BodyPolicy {
            timeout: Duration::from_secs(60),
            min_rate: 1000,
            grace: Duration::from_secs(5),
        };
        let t0 = Instant::now();
        let mut pace = BodyPace::new(policy, t0);
        // Nothing yet: the first byte is due within the grace period (plus 1 ms of rate).
        assert_eq!(
            pace.deadline(),
            t0 + Duration::from_secs(5) + Duration::from_millis(1)
        );
        pace.received(10_000);
        // 10,001 bytes at 1,000/s: due 10 s after the grace period.
        let d = pace.deadline() - t0;
        assert!(
            d > Duration::from_millis(15_000) && d < Duration::from_millis(15_002),
            "{d:?}"
        );
        // However fast, never past the total timeout.
        pace.received(1_000_000_000);
        assert_eq!(pace.deadline(), t0 + Duration::from_secs(60));
    }

    /// A body that sends one byte every `every`, `left` times.
    struct Trickle {
        every: Duration,
        tick: Pin<Box<Sleep>>,
        left: usize,
    }

    impl Body for Trickle {
        type Data = bytes::Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, std::io::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            match self.tick.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    self.left -= 1;
                    let next = Instant::now() + self.every;
                    self.tick.as_mut().reset(next);
                    Poll::Ready(Some(Ok(Frame::data(bytes::Bytes::from_static(b"x")))))
                }
            }
        }
    }

    fn trickle(every: Duration, left: usize) -> Trickle {
        Trickle {
            every,
            tick: Box::pin(tokio::time::sleep(every)),
            left,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_fails_as_too_slow_and_a_steady_one_passes() {
        use http_body_util::BodyExt;
        let policy = BodyPolicy {
            timeout: Duration::from_secs(60),
            min_rate: 100,
            grace: Duration::from_secs(1),
        };
        // One byte every 100 ms: 10 bytes/s, under the 100/s required.
        let started = Instant::now();
        let slow = PacedBody::new(trickle(Duration::from_millis(100), 1000), policy);
        let err = slow.collect().await.map(drop).unwrap_err();
        assert!(matches!(err, PaceError::TooSlow(_)), "{err}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "refused after {took:?}");
        // One byte every 5 ms (200/s) for 400 bytes: fine.
        let steady = PacedBody::new(trickle(Duration::from_millis(5), 400), policy);
        let got = steady.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 400);
        // Nothing at all: refused once the grace period is over.
        let started = Instant::now();
        let silent = PacedBody::new(trickle(Duration::from_secs(3600), 1), policy);
        assert!(silent.collect().await.is_err());
        assert!(started.elapsed() < Duration::from_millis(1100));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_means_nothing_in_flight_and_no_bytes() {
        let a = Activity::new();
        let t0 = Instant::now();
        assert!(!a.idle_for(Duration::from_secs(10), t0));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(a.idle_for(Duration::from_secs(10), Instant::now()));
        let req = a.request();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            !a.idle_for(Duration::from_secs(10), Instant::now()),
            "a request is in flight"
        );
        drop(req);
        assert!(
            !a.idle_for(Duration::from_secs(10), Instant::now()),
            "it just ended"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(a.idle_for(Duration::from_secs(10), Instant::now()));
    }

    #[test]
    fn a_connection_has_started_a_request_once_one_began() {
        let a = Activity::new();
        assert!(!a.started_any());
        drop(a.request());
        assert!(a.started_any(), "still true once the request has ended");
    }
}
