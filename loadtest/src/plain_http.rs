//! A bare HTTP/1.1 + HTTP/2 server on 127.0.0.1 for the load test's stand-ins (checkin-bench's
//! trivial 200 server, the fleet's trivial MDM): one task per connection, a handler per
//! request, nothing else.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The request a handler gets and the answer it gives.
pub type Request = hyper::Request<hyper::body::Incoming>;
/// See [`Request`].
pub type Response = hyper::Response<Full<Bytes>>;

/// Serves `handler` on a free 127.0.0.1 port until the returned sender is used or dropped.
pub async fn serve<H, F>(
    handler: H,
) -> std::io::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)>
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                _ = &mut stopped => return,
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, stop))
}
