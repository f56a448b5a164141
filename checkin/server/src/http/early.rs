//! Early answers that reach the client: a response given before the request body was read
//! (a wrong admin key, a refused device, a body declared larger than the limit, a method or a
//! route the request does not fit) waits for the rest of the body, read and discarded, before
//! it is sent.
//!
//! Without this the request's HTTP/2 stream ends under a client still sending: the server
//! answers, then resets the stream (`RST_STREAM NO_ERROR`, as RFC 9113 §8.1 allows), and a
//! client that is still uploading may give up on the whole exchange — curl reports
//! `(92) Stream error in the HTTP/2 framing layer` and never shows the status. HTTP/1.1 has the
//! same hazard in another form: a server that closes a connection with unread bytes in its
//! receive buffer resets it, and the reset can destroy the answer before the client read it.
//!
//! The wait is bounded: at most [`drain_limit`] bytes in all (twice the body limit, so that a
//! body somewhat over the limit still reads its 413), and in time by the body's own pace (the
//! listener's body timeout and minimum rate, [`super::timing::PacedBody`]). A body declared
//! longer than that is not read at all, and one that turns out longer is cut where it
//! reached the bound: the answer then goes out as before. A client that sent
//! `Expect: 100-continue` and was not told to continue has sent no body, and is not asked
//! for it.
//!
//! A request whose body the handler read to its end — every check-in — costs nothing here
//! but a counter per frame: no allocation, no timer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

/// How many bytes of a request body the server reads in all, its handler's reads included,
/// for the sake of an early answer: twice the body limit.
pub fn drain_limit(body_limit: usize) -> u64 {
    (body_limit as u64).saturating_mul(2)
}

/// How far a request body has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Never polled.
    Untouched,
    /// Polled, not to its end.
    Partly,
    /// Read to its end.
    Whole,
    /// Ended in an error (the client reset it, it came too slowly…): nothing more to read.
    Failed,
}

/// A request body that remembers how far it was read, so that what its handler left unread
/// can be discarded before the answer goes out.
#[derive(Debug)]
pub struct Watched<B> {
    inner: B,
    progress: Progress,
    /// Data bytes read so far.
    read: u64,
    /// `Content-Length`, if the request declared one.
    declared: Option<u64>,
    /// The request carries `Expect: 100-continue`.
    expects_continue: bool,
}

impl<B> Watched<B> {
    /// `inner`, the body of a request with these headers.
    pub fn new(inner: B, headers: &HeaderMap) -> Self {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        Watched {
            inner,
            progress: Progress::Untouched,
            read: 0,
            declared,
            expects_continue,
        }
    }
}

impl<B: Body> Watched<B> {
    /// Whether some of the body is still to come and worth waiting for.
    fn unfinished(&self) -> bool {
        match self.progress {
            Progress::Whole | Progress::Failed => false,
            // Not asked to continue, the client sends nothing.
            Progress::Untouched if self.expects_continue => false,
            Progress::Untouched | Progress::Partly => {
                !self.inner.is_end_stream() && self.declared != Some(0)
            }
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                if this.progress == Progress::Untouched {
                    this.progress = Progress::Partly;
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = hyper::body::Buf::remaining(data) as u64;
                    this.read = this.read.saturating_add(n);
                }
                this.progress = Progress::Partly;
            }
            Poll::Ready(Some(Err(_))) => this.progress = Progress::Failed,
            Poll::Ready(None) => this.progress = Progress::Whole,
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How the rest of a body went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// Nothing was left to read.
    None,
    /// The rest was read and discarded, this many bytes.
    Discarded(u64),
    /// The body is longer than the bound (declared so, or found so): left unread.
    TooLong,
    /// The body failed while it was read (reset, too slow).
    Failed,
}

/// Reads and discards what is left of `body`, up to `limit` bytes in all (see the
/// [module documentation](self)).
pub async fn discard_rest<B>(body: &mut Watched<B>, limit: u64) -> Rest
where
    B: Body + Unpin,
{
    if !body.unfinished() {
        return Rest::None;
    }
    if body.declared.is_some_and(|n| n > limit) {
        return Rest::TooLong;
    }
    let before = body.read;
    loop {
        match body.frame().await {
            None => return Rest::Discarded(body.read - before),
            Some(Err(_)) => return Rest::Failed,
            Some(Ok(_)) if body.read > limit => return Rest::TooLong,
            Some(Ok(_)) => {}
        }
    }
}

/// A body lent to a handler that owns what it is given (the admin router): when the handler
/// drops it, it comes back through a channel, so that what it left unread can be discarded.
/// The channel is one allocation per routed request; device requests lend their body by
/// reference instead.
pub struct Lent<B> {
    body: Option<Watched<B>>,
    back: Option<oneshot::Sender<Watched<B>>>,
}

impl<B> Lent<B> {
    /// Lends `body`; the receiver gets it back if it is dropped unfinished.
    pub fn new(body: Watched<B>) -> (Self, oneshot::Receiver<Watched<B>>) {
        let (back, returned) = oneshot::channel();
        let lent = Lent {
            body: Some(body),
            back: Some(back),
        };
        (lent, returned)
    }
}

impl<B> Body for Lent<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B> Drop for Lent<B> {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.body.take(), self.back.take()) {
            let _ = back.send(body);
        }
    }
}

/// Discards the rest of a body its handler left unread, and says so in the debug log.
pub(crate) async fn finish<B>(body: &mut Watched<B>, limit: u64)
where
    B: Body<Data = Bytes> + Unpin,
{
    match discard_rest(body, limit).await {
        Rest::None => {}
        Rest::Discarded(n) => {
            tracing::debug!(
                bytes = n,
                "discarded the unread request body of an early answer"
            )
        }
        Rest::TooLong => tracing::debug!(
            limit,
            "request body longer than the server reads for an early answer: answering without it"
        ),
        Rest::Failed => {
            tracing::debug!("request body failed while discarded after an early answer")
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{Empty, Full};

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, value.parse().unwrap());
        }
        h
    }

    /// A body of `left` frames of `size` bytes each, failing instead of its frame `fail_at`.
    struct Chunks {
        left: usize,
        size: usize,
        fail_at: Option<usize>,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            if self.fail_at == Some(self.left) {
                return Poll::Ready(Some(Err(std::io::Error::other("reset"))));
            }
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; self.size])))))
        }
    }

    fn chunks(left: usize, size: usize) -> Chunks {
        Chunks {
            left,
            size,
            fail_at: None,
        }
    }

    #[tokio::test]
    async fn an_unread_body_is_discarded_once() {
        let mut body = Watched::new(chunks(10, 100), &HeaderMap::new());
        assert_eq!(discard_rest(&mut body, 2000).await, Rest::Discarded(1000));
        assert_eq!(discard_rest(&mut body, 2000).await, Rest::None);
    }

    #[tokio::test]
    async fn what_the_handler_read_counts_toward_the_bound() {
        let mut body = Watched::new(chunks(10, 100), &HeaderMap::new());
        // The handler read three frames and gave up (a 413 past its limit, say).
        for _ in 0..3 {
            body.frame().await.unwrap().unwrap();
        }
        assert_eq!(discard_rest(&mut body, 1000).await, Rest::Discarded(700));
        let mut body = Watched::new(chunks(10, 100), &HeaderMap::new());
        for _ in 0..3 {
            body.frame().await.unwrap().unwrap();
        }
        assert_eq!(discard_rest(&mut body, 999).await, Rest::TooLong);
    }

    #[tokio::test]
    async fn a_body_declared_too_long_is_not_read_at_all() {
        let h = headers(&[("content-length", "5000")]);
        let mut body = Watched::new(chunks(50, 100), &h);
        assert_eq!(discard_rest(&mut body, 4999).await, Rest::TooLong);
        assert_eq!(body.read, 0, "nothing read");
        let mut body = Watched::new(chunks(50, 100), &h);
        assert_eq!(discard_rest(&mut body, 5000).await, Rest::Discarded(5000));
    }

    #[tokio::test]
    async fn read_empty_failed_or_not_sent_bodies_are_left_alone() {
        // Read to its end by the handler.
        let mut body = Watched::new(Full::new(Bytes::from_static(b"abc")), &HeaderMap::new());
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "abc"
        );
        assert_eq!(discard_rest(&mut body, 10).await, Rest::None);
        // Nothing to read.
        let mut body = Watched::new(Empty::<Bytes>::new(), &HeaderMap::new());
        assert_eq!(discard_rest(&mut body, 10).await, Rest::None);
        // Failed part-way.
        let mut body = Watched::new(
            Chunks {
                left: 5,
                size: 1,
                fail_at: Some(3),
            },
            &HeaderMap::new(),
        );
        assert_eq!(discard_rest(&mut body, 10).await, Rest::Failed);
        assert_eq!(discard_rest(&mut body, 10).await, Rest::None);
        // The client waits for 100 Continue, which an untouched body never asked for.
        let h = headers(&[("expect", "100-Continue"), ("content-length", "5")]);
        let mut body = Watched::new(chunks(5, 1), &h);
        assert_eq!(discard_rest(&mut body, 10).await, Rest::None);
        // Once the handler has started reading, the client was told to continue.
        let mut body = Watched::new(chunks(5, 1), &h);
        body.frame().await.unwrap().unwrap();
        assert_eq!(discard_rest(&mut body, 10).await, Rest::Discarded(4));
    }

    #[tokio::test]
    async fn a_lent_body_comes_back_only_when_dropped_unfinished() {
        let (lent, mut back) = Lent::new(Watched::new(chunks(4, 10), &HeaderMap::new()));
        drop(lent);
        let mut body = back.try_recv().expect("handed back");
        assert_eq!(discard_rest(&mut body, 100).await, Rest::Discarded(40));

        let (mut lent, mut back) = Lent::new(Watched::new(chunks(4, 10), &HeaderMap::new()));
        let read = (&mut lent).collect().await.unwrap().to_bytes();
        assert_eq!(read.len(), 40);
        drop(lent);
        let mut body = back.try_recv().expect("handed back");
        assert_eq!(discard_rest(&mut body, 100).await, Rest::None, "read whole");
    }

    #[test]
    fn the_bound_is_twice_the_body_limit() {
        assert_eq!(drain_limit(1024), 2048);
        assert_eq!(
            drain_limit(usize::MAX),
            (usize::MAX as u64).saturating_mul(2)
        );
    }
}
