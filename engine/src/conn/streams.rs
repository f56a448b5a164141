//! The streams one connection has open: each push's job beside the future of its answer.
//!
//! Every slot keeps one waker for its whole life. When h2 wakes a slot, its key goes on a
//! ready list and the connection task is woken; the task then polls only the slots on that
//! list. Opening a stream therefore allocates nothing here (no boxed future, no task, no
//! timer). Deadlines are not timers either: the connection task calls [`Streams::expire`]
//! on its periodic tick, which ends every stream past its push's deadline and cancels it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use crate::apns::response::{classify, Verdict};
use crate::job::Job;

/// How one stream ended.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The server answered.
    Verdict(Verdict),
    /// The stream failed before a full answer (reset, GOAWAY, connection lost).
    StreamError(h2::Error),
}

/// Most of an error body kept for classification; APNs bodies are tiny.
const MAX_ERROR_BODY: usize = 8192;

/// Where a stream's answer stands.
enum Answering {
    /// Waiting for the response head.
    Head(h2::client::ResponseFuture),
    /// A non-200 head arrived; reading the JSON body with the reason.
    Body {
        status: u16,
        apns_id: Option<String>,
        body: h2::RecvStream,
        bytes: Vec<u8>,
    },
}

impl Answering {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Answer> {
        loop {
            match self {
                Answering::Head(response) => {
                    let response = match std::pin::Pin::new(response).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Answer::StreamError(e)),
                        Poll::Ready(Ok(r)) => r,
                    };
                    let status = response.status().as_u16();
                    let apns_id = response
                        .headers()
                        .get("apns-id")
                        .and_then(|v| v.to_str().ok());
                    if status == 200 {
                        // A 200 carries no body worth reading.
                        return Poll::Ready(Answer::Verdict(classify(status, apns_id, &[])));
                    }
                    let apns_id = apns_id.map(str::to_owned);
                    *self = Answering::Body {
                        status,
                        apns_id,
                        body: response.into_body(),
                        bytes: Vec::new(),
                    };
                }
                Answering::Body {
                    status,
                    apns_id,
                    body,
                    bytes,
                } => loop {
                    match body.poll_data(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Ok(chunk))) => {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            if bytes.len() < MAX_ERROR_BODY {
                                bytes.extend_from_slice(&chunk);
                            }
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Answer::StreamError(e)),
                        Poll::Ready(None) => {
                            return Poll::Ready(Answer::Verdict(classify(
                                *status,
                                apns_id.as_deref(),
                                bytes,
                            )))
                        }
                    }
                },
            }
        }
    }
}

/// Slots whose waker fired since the connection task last looked, and that task's waker.
#[derive(Default)]
struct Ready {
    keys: Mutex<Vec<usize>>,
    task: AtomicWaker,
}

impl Ready {
    /// Marks `key` ready. The task is woken only when the list was empty: the task empties
    /// it completely (under the same lock) before it waits again, so a non-empty list means
    /// a wake-up is already on its way, or the task has yet to look.
    fn push(&self, key: usize) {
        let was_empty = {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = keys.is_empty();
            keys.push(key);
            was_empty
        };
        if was_empty {
            self.task.wake();
        }
    }
}

/// The waker h2 holds for one slot.
struct SlotWaker {
    key: usize,
    ready: Arc<Ready>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.ready.push(self.key);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.push(self.key);
    }
}

struct Slot {
    waker: Waker,
    entry: Option<(Job, Answering)>,
}

/// The open streams of one connection; see the module documentation.
pub(crate) struct Streams {
    slots: Vec<Slot>,
    free: Vec<usize>,
    len: usize,
    ready: Arc<Ready>,
    /// The ready list is swapped with this buffer, so that draining it allocates nothing.
    spare: Vec<usize>,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            ready: Arc::new(Ready::default()),
            spare: Vec::new(),
        }
    }
}

impl Streams {
    /// Streams open.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a sent push and the future of its answer. It is polled on the next
    /// [`Streams::poll_answers`], which registers its waker with h2.
    pub(super) fn insert(&mut self, job: Job, response: h2::client::ResponseFuture) {
        let key = match self.free.pop() {
            Some(key) => key,
            None => {
                let key = self.slots.len();
                let waker = Waker::from(Arc::new(SlotWaker {
                    key,
                    ready: self.ready.clone(),
                }));
                self.slots.push(Slot { waker, entry: None });
                key
            }
        };
        self.slots[key].entry = Some((job, Answering::Head(response)));
        self.len += 1;
        self.ready
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key);
    }

    /// Polls the slots that were woken; every stream that ended is pushed to `done`.
    /// Ready when at least one ended, pending (with `cx` registered) otherwise.
    pub(super) fn poll_answers(
        &mut self,
        cx: &mut Context<'_>,
        done: &mut Vec<(Job, Answer)>,
    ) -> Poll<()> {
        self.ready.task.register(cx.waker());
        if self.take_answers(done) > 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Polls the slots that were woken and pushes every stream that ended to `done`, without
    /// registering for more; returns how many ended.
    pub(super) fn take_answers(&mut self, done: &mut Vec<(Job, Answer)>) -> usize {
        let before = done.len();
        loop {
            std::mem::swap(
                &mut *self.ready.keys.lock().unwrap_or_else(|e| e.into_inner()),
                &mut self.spare,
            );
            if self.spare.is_empty() {
                break;
            }
            for key in self.spare.drain(..) {
                // A key may come twice, or from a stream that already ended and whose slot
                // now holds another: polling an unfinished stream again is harmless.
                let Some(slot) = self.slots.get_mut(key) else {
                    continue;
                };
                let Some((_, answering)) = slot.entry.as_mut() else {
                    continue;
                };
                let mut slot_cx = Context::from_waker(&slot.waker);
                if let Poll::Ready(answer) = answering.poll(&mut slot_cx) {
                    let (job, _) = slot.entry.take().expect("checked above");
                    self.free.push(key);
                    self.len -= 1;
                    done.push((job, answer));
                }
            }
        }
        done.len() - before
    }

    /// Ends every stream whose push is past its deadline at `now`: the answer future is
    /// dropped, which makes h2 cancel the stream (RST_STREAM CANCEL). Returns the jobs.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<Job> {
        let mut expired = Vec::new();
        if self.len == 0 {
            return expired;
        }
        for (key, slot) in self.slots.iter_mut().enumerate() {
            if slot
                .entry
                .as_ref()
                .is_some_and(|(job, _)| now >= job.deadline)
            {
                let (job, _) = slot.entry.take().expect("checked above");
                self.free.push(key);
                self.len -= 1;
                expired.push(job);
            }
        }
        expired
    }

    /// Takes every open stream's job (the connection is gone; their answers never came).
    pub(super) fn drain(&mut self) -> Vec<Job> {
        self.free.clear();
        self.len = 0;
        self.ready
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let jobs = self
            .slots
            .drain(..)
            .filter_map(|slot| slot.entry.map(|(job, _)| job))
            .collect();
        jobs
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use tokio::sync::mpsc;

    use super::*;
    use crate::cause::Reason;
    use crate::outcome::{DevicePush, DeviceToken, PushError};

    type Incoming = (Request<h2::RecvStream>, h2::server::SendResponse<Bytes>);

    /// An h2 client and server over an in-memory pipe; the server hands over each request.
    async fn pair() -> (
        h2::client::SendRequest<Bytes>,
        mpsc::UnboundedReceiver<Incoming>,
    ) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            while let Some(Ok(incoming)) = conn.accept().await {
                let _ = tx.send(incoming);
            }
        });
        let (send, conn) = h2::client::handshake(client_io).await.unwrap();
        tokio::spawn(conn);
        (send, rx)
    }

    fn job(i: u8, deadline: Duration) -> (Job, tokio::sync::oneshot::Receiver<crate::PushResult>) {
        let push = DevicePush::new(DeviceToken::from_bytes(&[i; 32]).unwrap(), "m");
        Job::single(push, deadline, Instant::now())
    }

    fn open(send: &mut h2::client::SendRequest<Bytes>, path: &str) -> h2::client::ResponseFuture {
        let request = Request::post(format!("https://apns.test{path}"))
            .body(())
            .unwrap();
        send.send_request(request, true).unwrap().0
    }

    async fn answers(streams: &mut Streams, want: usize) -> Vec<(Job, Answer)> {
        let mut done = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            while done.len() < want {
                poll_fn(|cx| streams.poll_answers(cx, &mut done)).await;
            }
        })
        .await
        .expect("answers arrive");
        done
    }

    #[tokio::test]
    async fn each_answer_comes_back_with_its_job_in_any_order() {
        let (mut send, mut incoming) = pair().await;
        let mut streams = Streams::default();
        for (i, path) in ["/ok", "/gone", "/late"].iter().enumerate() {
            let response = open(&mut send, path);
            streams.insert(job(i as u8, Duration::from_secs(30)).0, response);
        }
        assert_eq!(streams.len(), 3);
        let mut late = None;
        for _ in 0..3 {
            let (req, mut respond) = incoming.recv().await.unwrap();
            match req.uri().path() {
                "/ok" => {
                    let head = Response::builder()
                        .status(200)
                        .header("apns-id", "6F1C2A4E-8B3D-4F5A-9C7E-1D2B3A4C5E6F")
                        .body(())
                        .unwrap();
                    respond.send_response(head, true).unwrap();
                }
                "/gone" => {
                    let head = Response::builder().status(410).body(()).unwrap();
                    let mut body = respond.send_response(head, false).unwrap();
                    // The body in two pieces: both are read before classifying.
                    body.send_data(Bytes::from_static(br#"{"reason":"Unreg"#), false)
                        .unwrap();
                    body.send_data(Bytes::from_static(br#"istered","timestamp":7}"#), true)
                        .unwrap();
                }
                _ => late = Some(respond),
            }
        }
        let mut done = answers(&mut streams, 2).await;
        done.sort_by_key(|(job, _)| job.push.token.as_hex().to_owned());
        assert_eq!(done.len(), 2);
        assert!(matches!(
            &done[0].1,
            Answer::Verdict(Verdict::Delivered { apns_id }) if apns_id == "6F1C2A4E-8B3D-4F5A-9C7E-1D2B3A4C5E6F"
        ));
        assert!(matches!(
            &done[1].1,
            Answer::Verdict(Verdict::Final(PushError::Unregistered { reason, timestamp_ms: Some(7) }))
                if *reason == Reason::new("Unregistered")
        ));
        assert_eq!(streams.len(), 1);

        // The slots of ended streams are reused; the late one still answers to its own job.
        let response = open(&mut send, "/ok");
        streams.insert(job(9, Duration::from_secs(30)).0, response);
        let (_, mut respond) = incoming.recv().await.unwrap();
        respond
            .send_response(Response::builder().status(200).body(()).unwrap(), true)
            .unwrap();
        let done = answers(&mut streams, 1).await;
        assert_eq!(done[0].0.push.token.as_hex(), "09".repeat(32));
        late.unwrap()
            .send_response(Response::builder().status(200).body(()).unwrap(), true)
            .unwrap();
        let done = answers(&mut streams, 1).await;
        assert_eq!(done[0].0.push.token.as_hex(), "02".repeat(32));
        assert!(streams.is_empty());
    }

    #[tokio::test]
    async fn overdue_streams_are_cancelled_and_the_rest_drained() {
        let (mut send, mut incoming) = pair().await;
        let mut streams = Streams::default();
        let response = open(&mut send, "/short");
        streams.insert(job(1, Duration::from_millis(10)).0, response);
        let response = open(&mut send, "/long");
        streams.insert(job(2, Duration::from_secs(30)).0, response);
        let (_, mut short) = incoming.recv().await.unwrap();
        let _long = incoming.recv().await.unwrap();
        // Register the streams' wakers, as the connection task would.
        let mut done = Vec::new();
        assert_eq!(streams.take_answers(&mut done), 0);

        assert!(streams.expire(Instant::now()).is_empty(), "nothing due yet");
        let expired = streams.expire(Instant::now() + Duration::from_secs(1));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].push.token.as_hex(), "01".repeat(32));
        // Dropping the answer future reset the stream: the server sees it cancelled.
        let reset =
            tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| short.poll_reset(cx)))
                .await
                .expect("the server hears of the cancel")
                .unwrap();
        assert_eq!(reset, h2::Reason::CANCEL);

        let left = streams.drain();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].push.token.as_hex(), "02".repeat(32));
        assert!(streams.is_empty());
    }
}
