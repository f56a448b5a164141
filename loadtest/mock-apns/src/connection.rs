//! One client connection: TLS handshake, h2, the stream loop and the faults that act on it.
//!
//! A connection is one task. Streams are futures polled by that task (no task per stream):
//! a stream whose body is complete and needs no delay is answered in its first poll. The
//! requests that arrived together are answered together, in one write, as a server under load
//! does (see [`crate::write_count`]).

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason as H2Reason, RecvStream};
use http::{HeaderValue, Request, Response, StatusCode};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::judge::{judge, Reason, TopicRule, Verdict, MAX_PAYLOAD};
use super::settings_io::SettingsIo;
use super::state::{ConnState, Control, Shared};
use super::tls::certificate_topic;
use super::write_count::WriteCount;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which topics this connection may push to.
#[derive(Debug, Clone)]
enum Topic {
    /// The UID of the client certificate.
    Exactly(String),
    /// No client certificate (optional client auth): any topic.
    Any,
    /// A certificate without a UID: not a push certificate; every request gets 403.
    NotAPushCertificate,
}

/// Serves one accepted TCP connection until it closes or the mock drops it.
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            shared.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, error = %e, "mock APNs: TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "mock APNs: TLS handshake timed out");
            return;
        }
    };
    let (_, session) = tls.get_ref();
    if session.alpn_protocol() != Some(b"h2") {
        shared.handshake_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "mock APNs: client did not negotiate ALPN h2");
        return;
    }
    let topic = match session.peer_certificates().and_then(|c| c.first()) {
        None => Topic::Any,
        Some(cert) => match certificate_topic(cert.as_ref()) {
            Some(uid) => Topic::Exactly(uid),
            None => Topic::NotAPushCertificate,
        },
    };
    let conn_state = shared.register_connection(match &topic {
        Topic::Exactly(t) => Some(t.clone()),
        _ => None,
    });
    tracing::debug!(%peer, id = conn_state.id, ?topic, "mock APNs: connection open");
    let io = SettingsIo::new(
        WriteCount::new(tls, conn_state.clone()),
        conn_state.limits.clone(),
    );
    serve_h2(io, &shared, &conn_state, &topic).await;
    shared.connection_closed(&conn_state);
    tracing::debug!(%peer, id = conn_state.id, "mock APNs: connection closed");
}

/// Why the stream loop paused.
enum Event {
    /// The control state changed in a way the loop cannot handle while polling.
    Frozen,
    /// Drop the connection now.
    Drop,
    /// The connection is closed (by the peer, after GOAWAY, or on error).
    Closed,
}

async fn serve_h2<T>(io: T, shared: &Shared, conn_state: &ConnState, topic: &Topic)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut notified = pin!(shared.control_changed.notified());
    notified.as_mut().enable();
    let mut seen = shared.control_now();
    if seen.frozen
        && wait_thawed(shared, &mut notified, &mut seen)
            .await
            .is_none()
    {
        return;
    }
    if seen.shutdown {
        return;
    }
    let handshake = h2::server::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .max_concurrent_reset_streams(1024)
        .handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "mock APNs: HTTP/2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    let mut streams = FuturesUnordered::new();
    // Requests taken from the connection and not yet answered (kept for its allocation).
    let mut arrived = Vec::new();
    let mut going_away = false;
    loop {
        let event = poll_fn(|cx| {
            // Control changes: GOAWAY is sent from here; freezing and dropping leave the loop.
            while notified.as_mut().poll(cx).is_ready() {
                notified.set(shared.control_changed.notified());
                notified.as_mut().enable();
                let now = shared.control_now();
                if now.shutdown || now.drop_gen != seen.drop_gen {
                    return Poll::Ready(Event::Drop);
                }
                if now.goaway_gen != seen.goaway_gen && !going_away {
                    going_away = true;
                    shared.goaways_sent.fetch_add(1, Ordering::Relaxed);
                    conn.graceful_shutdown();
                }
                let frozen = now.frozen;
                seen = now;
                if frozen {
                    return Poll::Ready(Event::Frozen);
                }
                // A changed stream limit goes out with the next flush, when `conn` is polled.
            }
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            let mut admitted = false;
            // Every request that has arrived is taken first and answered after: each call of
            // `poll_accept` flushes what was answered since the last one, so answering between
            // two calls would write each answer alone, one system call per push.
            loop {
                loop {
                    match conn.poll_accept(cx) {
                        Poll::Ready(Some(Ok(accepted))) => arrived.push(accepted),
                        Poll::Ready(Some(Err(e))) => {
                            tracing::debug!(id = conn_state.id, error = %e, "mock APNs: connection error");
                            return Poll::Ready(Event::Closed);
                        }
                        Poll::Ready(None) => return Poll::Ready(Event::Closed),
                        Poll::Pending => break,
                    }
                }
                if arrived.is_empty() {
                    break;
                }
                for (request, respond) in arrived.drain(..) {
                    if let Some(pending) = admit(request, respond, shared, conn_state, topic, cx) {
                        streams.push(pending);
                        admitted = true;
                    }
                    let every = shared.goaway_every.load(Ordering::Relaxed);
                    let n = conn_state.requests.fetch_add(1, Ordering::Relaxed) + 1;
                    if every > 0 && n.is_multiple_of(every) && !going_away {
                        going_away = true;
                        shared.goaways_sent.fetch_add(1, Ordering::Relaxed);
                        conn.graceful_shutdown();
                    }
                }
                // The next `poll_accept` writes these answers together and takes what came
                // meanwhile.
            }
            if admitted {
                // New stream futures must be polled once to register their wakers.
                while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Drop => {
                // Abrupt: the socket closes without GOAWAY or close_notify.
                shared.drops.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Event::Closed => {
                // Finish what is in flight (nothing is written any more once h2 is closed).
                while streams.next().await.is_some() {}
                return;
            }
            Event::Frozen => {
                // Silent: neither the connection nor its streams are polled until thawed.
                let Some(goaway_requested) = wait_thawed(shared, &mut notified, &mut seen).await
                else {
                    shared.drops.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if goaway_requested && !going_away {
                    going_away = true;
                    shared.goaways_sent.fetch_add(1, Ordering::Relaxed);
                    conn.graceful_shutdown();
                }
            }
        }
    }
}

/// Waits until the mock is thawed: `None` if the connection must be dropped meanwhile, else
/// whether a GOAWAY was asked for while frozen.
async fn wait_thawed<'a>(
    shared: &'a Shared,
    notified: &mut Pin<&mut tokio::sync::futures::Notified<'a>>,
    seen: &mut Control,
) -> Option<bool> {
    let mut now = shared.control_now();
    while now.frozen {
        notified.as_mut().await;
        notified.set(shared.control_changed.notified());
        notified.as_mut().enable();
        now = shared.control_now();
        if now.shutdown || now.drop_gen != seen.drop_gen {
            return None;
        }
    }
    let goaway_requested = now.goaway_gen != seen.goaway_gen;
    *seen = now;
    Some(goaway_requested)
}

/// Decrements the connection's active stream count when a stream ends, however it ends.
struct ActiveGuard<'a>(&'a ConnState);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that could not be answered at once (body still arriving, or a delay).
type PendingStream<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Counts a new stream against the connection's limit and answers it at once when it can;
/// returns the future that answers it otherwise.
fn admit<'a>(
    mut request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: &'a Shared,
    conn_state: &'a ConnState,
    topic: &'a Topic,
    cx: &mut Context<'_>,
) -> Option<PendingStream<'a>> {
    let active = conn_state.active.fetch_add(1, Ordering::Relaxed) + 1;
    let guard = ActiveGuard(conn_state);
    conn_state.peak.fetch_max(active, Ordering::Relaxed);
    let limit = conn_state.limits.limit_for(respond.stream_id().as_u32());
    if active > limit {
        conn_state.limit_violations.fetch_add(1, Ordering::Relaxed);
        shared.refused_over_limit.fetch_add(1, Ordering::Relaxed);
        respond.send_reset(H2Reason::REFUSED_STREAM);
        return None;
    }
    if shared.reset_rate.hit() {
        shared.resets_injected.fetch_add(1, Ordering::Relaxed);
        respond.send_reset(H2Reason::REFUSED_STREAM);
        return None;
    }
    // Fast path: the whole body is already here and no delay is asked for.
    let mut first = None;
    if shared.delay().is_zero() {
        let body = request.body_mut();
        if body.is_end_stream() {
            let (parts, _) = request.into_parts();
            respond_to(&parts, &[], respond, shared, topic);
            return None;
        }
        match body.poll_data(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                if body.is_end_stream() {
                    let (parts, _) = request.into_parts();
                    respond_to(&parts, &chunk, respond, shared, topic);
                    return None;
                }
                first = Some(chunk);
            }
            Poll::Ready(None) => {
                let (parts, _) = request.into_parts();
                respond_to(&parts, &[], respond, shared, topic);
                return None;
            }
            Poll::Ready(Some(Err(_))) => return None,
            Poll::Pending => {}
        }
    }
    Some(Box::pin(async move {
        let _guard = guard;
        answer(request, first, respond, shared, topic).await;
    }))
}

async fn answer(
    request: Request<RecvStream>,
    first: Option<Bytes>,
    mut respond: SendResponse<Bytes>,
    shared: &Shared,
    topic: &Topic,
) {
    let (parts, mut body) = request.into_parts();
    let work = async {
        let payload = read_body(&mut body, first).await?;
        let delay = shared.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some(payload)
    };
    // A stream the client cancels (RST_STREAM) is over: like any HTTP/2 server, stop working
    // on it so that it no longer counts against the stream limit.
    let payload = tokio::select! {
        payload = work => payload,
        _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => None,
    };
    if let Some(payload) = payload {
        respond_to(&parts, &payload, respond, shared, topic);
    }
}

/// Answers a request whose body has been read.
fn respond_to(
    parts: &http::request::Parts,
    payload: &[u8],
    mut respond: SendResponse<Bytes>,
    shared: &Shared,
    topic: &Topic,
) {
    let request_id = parts.headers.get("apns-id");
    if shared.rate_503.hit() {
        return reject(
            shared,
            &mut respond,
            request_id,
            503,
            Reason::ServiceUnavailable,
            None,
        );
    }
    if let Some(reason) = shared.rejected_certificate() {
        return reject(shared, &mut respond, request_id, 403, reason, None);
    }
    let rule = match topic {
        Topic::Exactly(t) => TopicRule::Exactly(t),
        Topic::Any => TopicRule::Any,
        Topic::NotAPushCertificate => {
            return reject(
                shared,
                &mut respond,
                request_id,
                403,
                Reason::BadCertificate,
                None,
            );
        }
    };
    let verdict = judge(
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        payload,
        rule,
        |token| shared.token_state(token),
    );
    match verdict {
        Verdict::Reject {
            reason,
            timestamp_ms,
        } => {
            let id = if reason == Reason::BadMessageId {
                None
            } else {
                request_id
            };
            reject(
                shared,
                &mut respond,
                id,
                reason.status(),
                reason,
                timestamp_ms,
            )
        }
        Verdict::Accept(accepted) => {
            if shared.rate_429.hit() {
                return reject(
                    shared,
                    &mut respond,
                    request_id,
                    429,
                    Reason::TooManyRequests,
                    None,
                );
            }
            shared.record_accepted(accepted.token, accepted.topic, &accepted.magic);
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::OK;
            response
                .headers_mut()
                .insert("apns-id", apns_id(request_id));
            let _ = respond.send_response(response, true);
        }
    }
}

/// Reads the whole request body, keeping at most `MAX_PAYLOAD + 1` bytes (enough to judge).
/// `None` if the stream failed (reset by the client, connection lost).
async fn read_body(body: &mut RecvStream, mut first: Option<Bytes>) -> Option<Bytes> {
    let mut more: Option<BytesMut> = None;
    while !body.is_end_stream() {
        let chunk = match body.data().await {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(_)) => return None,
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        if let Some(acc) = more.as_mut() {
            let room = (MAX_PAYLOAD + 1).saturating_sub(acc.len());
            acc.extend_from_slice(&chunk[..chunk.len().min(room)]);
        } else if let Some(f) = first.take() {
            let mut acc = BytesMut::with_capacity(f.len() + chunk.len());
            acc.extend_from_slice(&f);
            let room = (MAX_PAYLOAD + 1).saturating_sub(acc.len());
            acc.extend_from_slice(&chunk[..chunk.len().min(room)]);
            more = Some(acc);
        } else {
            first = Some(chunk);
        }
    }
    Some(match (first, more) {
        (_, Some(acc)) => acc.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

fn reject(
    shared: &Shared,
    respond: &mut SendResponse<Bytes>,
    request_id: Option<&HeaderValue>,
    status: u16,
    reason: Reason,
    timestamp_ms: Option<u64>,
) {
    shared.count_reason(reason);
    let body = match timestamp_ms {
        Some(ts) => format!(r#"{{"reason":"{}","timestamp":{}}}"#, reason.as_str(), ts),
        None => format!(r#"{{"reason":"{}"}}"#, reason.as_str()),
    };
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert("apns-id", apns_id(request_id));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(mut stream) = respond.send_response(response, false) {
        let _ = stream.send_data(Bytes::from(body), true);
    }
}

/// The request's `apns-id` if it sent a valid one, else a fresh uppercase UUID v4 (as APNs does).
fn apns_id(request_id: Option<&HeaderValue>) -> HeaderValue {
    if let Some(id) = request_id {
        if super::judge::canonical_uuid(id.as_bytes()) {
            return id.clone();
        }
    }
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = uuid.hyphenated().encode_upper(&mut buf);
    HeaderValue::from_str(s).expect("a UUID is a valid header value")
}
