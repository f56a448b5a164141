//! The accept loop: HTTP/1.1 and HTTP/2 (with TLS when configured), a connection limit,
//! and graceful shutdown that lets in-flight requests finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::body::{text, Body};
use super::identity::PeerCertificate;
use super::timing::{Activity, BodyPolicy, PacedBody};
use super::App;

/// How the listener behaves.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Open connections at most. A connection accepted beyond it is closed at once (counted
    /// in `magicpush_http_connections_refused_total`), not left waiting in the kernel's
    /// backlog. Default 10 000.
    pub max_connections: usize,
    /// Time for a client to send its request headers. Default 30 s. A connection's first
    /// request head (HTTP/1.1, or HTTP/2's preface and first request) is due this long after
    /// the connection was accepted, so a socket that sends nothing is closed then, not at the
    /// idle timeout. On HTTP/1.1 hyper also starts it when a connection begins to wait for its
    /// next request, so it also ends an idle keep-alive connection when it is shorter than
    /// `idle_timeout`.
    pub header_read_timeout: Duration,
    /// How fast request bodies must arrive (408 otherwise). Default: within 60 s, at least
    /// 1 KiB/s after 5 s.
    pub body: BodyPolicy,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 keep-alive
    /// and HTTP/2 alike; keep-alive PINGs do not count; a shorter header timeout ends an idle
    /// HTTP/1.1 connection first). Default 120 s.
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive PING interval (a peer that does not answer within 20 s is dropped).
    /// Default 30 s.
    pub h2_keepalive: Duration,
    /// Time for a TLS handshake. Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// How long shutdown waits for in-flight requests before dropping connections. Default 10 s.
    pub drain_timeout: Duration,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(30),
            body: BodyPolicy::default(),
            idle_timeout: Duration::from_secs(120),
            h2_keepalive: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The connection a request came on, in its extensions: the peer's address (as accepted: a
/// proxy's `X-Forwarded-For` is not read) and whether it is TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// True when the listener speaks TLS.
    pub tls: bool,
}

/// A running server. Dropping it does not stop the server; call [`ServerHandle::shutdown`].
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    tls: bool,
    stop: watch::Sender<bool>,
    /// Set after the drain timeout: every connection task ends at once.
    kill: watch::Sender<bool>,
    /// Connection tasks running.
    open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    drain_timeout: Duration,
}

impl ServerHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients use, `http://…` or `https://…`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), then ends
    /// the connections still open (saying how many), and returns when every connection is
    /// closed.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(self.drain_timeout, &mut self.task)
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!(
            open = self.open.load(Ordering::Relaxed),
            "connections still open after the drain timeout of {:?}: closing them",
            self.drain_timeout
        );
        let _ = self.kill.send(true);
        // Each connection task drops its socket at the signal; the accept loop ends when the
        // last one has. The bound only guards against a task that never yields.
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            tracing::error!(
                open = self.open.load(Ordering::Relaxed),
                "connection tasks did not end; abandoning them"
            );
            self.task.abort();
        }
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// Binds nothing: takes a bound listener, spawns the accept loop, returns its handle.
pub fn spawn(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Arc<App>,
    settings: ListenerSettings,
) -> std::io::Result<ServerHandle> {
    let local_addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let (kill, kill_rx) = watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let is_tls = tls.is_some();
    let drain_timeout = settings.drain_timeout;
    let acceptor = tls.map(TlsAcceptor::from);
    let ends = Ends {
        stop: stop_rx,
        kill: kill_rx,
        open: open.clone(),
    };
    let task = tokio::spawn(accept_loop(listener, acceptor, app, settings, ends));
    Ok(ServerHandle {
        local_addr,
        tls: is_tls,
        stop,
        kill,
        open,
        task,
        drain_timeout,
    })
}

/// How connection tasks learn that the server stops: `stop` to drain (finish in-flight
/// requests), `kill` to end now; `open` counts them.
struct Ends {
    stop: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
    open: Arc<AtomicUsize>,
}

/// Counts a connection task while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>) -> OpenGuard {
        open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    settings: ListenerSettings,
    ends: Ends,
) {
    let Ends {
        mut stop,
        kill,
        open: open_count,
    } = ends;
    let limit = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    // Each connection task holds a sender; when all are dropped, `recv` returns None.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let settings = Arc::new(settings);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // Over the cap: close now rather than let it hold a socket doing nothing.
            ::metrics::counter!("magicpush_http_connections_refused_total").increment(1);
            tracing::debug!(%peer, "connection refused: {} open", settings.max_connections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let accepted = tokio::time::Instant::now();
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        let mut kill = kill.clone();
        let open = open_tx.clone();
        let counted = OpenGuard::new(&open_count);
        let settings = settings.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let _counted = counted;
            let work = async move {
                match tls {
                    None => {
                        let io = TokioIo::new(stream);
                        let conn = ConnInfo { peer, tls: false };
                        serve_connection(io, app, &settings, stop, None, conn, accepted).await
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(
                            settings.tls_handshake_timeout,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls_stream)) => {
                                let identity = tls_stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .map(|der| PeerCertificate(Arc::from(der.as_ref())));
                                let io = TokioIo::new(tls_stream);
                                let conn = ConnInfo { peer, tls: true };
                                serve_connection(io, app, &settings, stop, identity, conn, accepted)
                                    .await
                            }
                            Ok(Err(err)) => {
                                tracing::debug!(%peer, "TLS handshake failed: {err}")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                _ = work => {}
                // After the drain timeout: the socket is dropped with the future.
                _ = stopped(&mut kill) => tracing::debug!(%peer, "connection closed at shutdown"),
            }
        });
    }
    drop(listener);
    drop(open_tx);
    let _ = open_rx.recv().await;
}

async fn serve_connection<I>(
    io: I,
    app: Arc<App>,
    settings: &ListenerSettings,
    mut stop: watch::Receiver<bool>,
    identity: Option<PeerCertificate>,
    conn: ConnInfo,
    accepted: tokio::time::Instant,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let body_policy = settings.body;
    let activity = Activity::new();
    let in_flight = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        let guard = in_flight.request();
        let mut req = req.map(|b| PacedBody::new(b, body_policy));
        // The admin routes' sign-in limiter and cookies read it; the device endpoints do not
        // (over plain HTTP this insert is the extension map's one allocation).
        if !req.uri().path().starts_with("/mdm") {
            req.extensions_mut().insert(conn);
        }
        if let Some(identity) = &identity {
            req.extensions_mut().insert(identity.clone());
        }
        async move {
            let resp = run_isolated(app, req).await;
            Ok::<_, Infallible>(resp.map(|body| body.holding(guard)))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.h2_keepalive))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut watch = tokio::time::interval(
        settings
            .idle_timeout
            .div_f64(4.0)
            .max(Duration::from_millis(10)),
    );
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first request head is due by the header timeout, counted from accept: hyper's own
    // header timer does not run while the connection's protocol is still being detected, so
    // without this a socket that never sends a byte would stay until the idle timeout.
    let first_head = tokio::time::sleep_until(accepted + settings.header_read_timeout);
    tokio::pin!(first_head);
    let mut first_head_due = true;
    loop {
        tokio::select! {
            _ = first_head.as_mut(), if first_head_due => {
                first_head_due = false;
                if !activity.started_any() {
                    ::metrics::counter!("magicpush_http_header_timeout_closed_total").increment(1);
                    tracing::debug!("connection closed: no request head within the header timeout");
                    return;
                }
            }
            res = conn.as_mut() => {
                if let Err(err) = res {
                    tracing::debug!("connection ended: {err}");
                }
                return;
            }
            _ = watch.tick() => {
                if activity.idle_for(settings.idle_timeout, tokio::time::Instant::now()) {
                    ::metrics::counter!("magicpush_http_idle_closed_total").increment(1);
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                    return;
                }
            }
            _ = stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
        }
    }
}

/// Resolves once the stop signal is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the handler so that a panic becomes a 500 instead of a dropped connection, and a write
/// that has started completes even if the client goes away.
///
/// The handler is polled once here, on the connection's task: a request it answers without
/// waiting (every check-in on the in-memory store, every refusal) costs no task of its own.
/// One that must wait (for the store's commit, as a rule) moves, as it is, into a task of its
/// own, which polls it again at once: its waits are then registered with that task, and it
/// runs to its end whether or not the connection is still there to hear the answer.
async fn run_isolated(app: Arc<App>, req: Request<PacedBody<Incoming>>) -> Response<Body> {
    isolated(async move { app.handle(req).await }).await
}

/// [`run_isolated`] for any handler.
async fn isolated<F>(handler: F) -> Response<Body>
where
    F: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let mut handler = Box::pin(handler);
    let first = std::future::poll_fn(|cx| {
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::future::Future::poll(handler.as_mut(), cx)
        }));
        std::task::Poll::Ready(polled)
    })
    .await;
    let outcome = match first {
        Ok(std::task::Poll::Ready(resp)) => return resp,
        Ok(std::task::Poll::Pending) => tokio::spawn(handler).await.map_err(|e| e.to_string()),
        Err(panic) => Err(panic_message(panic.as_ref())),
    };
    match outcome {
        Ok(resp) => resp,
        Err(err) => {
            tracing::error!("request handler failed: {err}");
            text(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while handling the request",
            )
        }
    }
}

/// The words of a caught panic, as a task's `JoinError` would give them.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let words = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    format!("panicked: {words}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[tokio::test]
    async fn a_handler_that_answers_at_once_is_answered() {
        let resp = isolated(async { text(http::StatusCode::OK, "ok") }).await;
        assert_eq!(resp.status(), http::StatusCode::OK);
    }

    #[tokio::test]
    async fn a_panic_on_the_first_poll_or_a_later_one_is_a_500() {
        let resp = isolated(async { panic!("boom") }).await;
        assert_eq!(resp.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let resp = isolated(async {
            tokio::task::yield_now().await;
            panic!("boom later")
        })
        .await;
        assert_eq!(resp.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            panic_message(&String::from("words")),
            "panicked: words".to_owned()
        );
    }

    #[tokio::test]
    async fn a_handler_that_waits_completes_when_its_caller_is_gone() {
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&done);
        let mut caller = Box::pin(isolated(async move {
            let _ = wait.await;
            finished.store(true, Ordering::SeqCst);
            text(http::StatusCode::OK, "ok")
        }));
        // One poll starts the handler; it waits, so it moves into its own task.
        let polled = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(caller.as_mut(), cx).is_pending())
        })
        .await;
        assert!(polled, "the handler waits for its signal");
        drop(caller);
        go.send(()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the handler never finished"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
