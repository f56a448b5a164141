//! One keep-alive HTTP/1.1 connection to the check-in server, as a simulated device (or a
//! worker acting for many) uses it. Reconnects and retries a request when the connection
//! breaks: device check-ins and reports are safe to repeat.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::FleetError;

/// Attempts per request (the first plus retries after a broken connection).
const ATTEMPTS: usize = 3;

/// Content type of check-in messages.
pub(crate) const CHECKIN_TYPE: &str = "application/x-apple-aspen-mdm-checkin";
/// Content type of command reports.
pub(crate) const REPORT_TYPE: &str = "application/x-apple-aspen-mdm";

/// A connection to the server's device endpoints.
pub(crate) struct DeviceConn {
    addr: SocketAddr,
    authority: String,
    timeout: Duration,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl DeviceConn {
    /// Connects lazily, on the first request.
    pub(crate) fn new(addr: SocketAddr, authority: &str, timeout: Duration) -> Self {
        DeviceConn {
            addr,
            authority: authority.to_owned(),
            timeout,
            sender: None,
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", self.addr))?;
        tokio::spawn(async move {
            // Ends when the server closes or the sender is dropped.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// `PUT path` with a plist body (and its `Mdm-Signature`, if signed); the status and
    /// body of the answer.
    pub(crate) async fn put(
        &mut self,
        path: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> Result<(StatusCode, Bytes), FleetError> {
        self.send(
            Method::PUT,
            path,
            path,
            Some(content_type),
            Bytes::from(body),
            signature.as_deref(),
        )
        .await
    }

    /// `method path` (`label` names it in errors) with `body`, its content type and
    /// `Mdm-Signature` if given; the status and body of the answer. Retried on a fresh
    /// connection when the connection breaks or the answer is late.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        label: &'static str,
        content_type: Option<&'static str>,
        body: Bytes,
        signature: Option<&str>,
    ) -> Result<(StatusCode, Bytes), FleetError> {
        let mut last = String::new();
        let timeout = self.timeout;
        for _ in 0..ATTEMPTS {
            let attempt = self.try_send(&method, path, content_type, &body, signature);
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(why)) => last = why,
                Err(_) => last = format!("no answer within {timeout:?}"),
            }
            // Whatever broke, start the next attempt on a fresh connection.
            self.sender = None;
        }
        Err(FleetError::Device {
            path: label,
            detail: last,
        })
    }

    async fn try_send(
        &mut self,
        method: &Method,
        path: &str,
        content_type: Option<&'static str>,
        body: &Bytes,
        signature: Option<&str>,
    ) -> Result<(StatusCode, Bytes), String> {
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            _ => self.sender.insert(self.connect().await?),
        };
        sender
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &self.authority);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(signature) = signature {
            request = request.header("Mdm-Signature", signature);
        }
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|e| format!("building the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer to {method} {path}: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    }
}
