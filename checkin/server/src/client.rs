//! A small admin API client for the CLI: one HTTP/1.1 connection per request (hyper 1 over a
//! `TcpStream`, TLS with tokio-rustls when the URL is `https://`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A failed admin API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `--server` URL cannot be used.
    #[error("invalid server URL {url:?}: {why}")]
    BadUrl {
        /// As given.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// TCP connect, TLS or HTTP failed.
    #[error("cannot reach {server}: {detail}")]
    Connect {
        /// The server URL.
        server: String,
        /// What failed.
        detail: String,
    },
    /// An `http://` URL, and the server answered with TLS.
    #[error(
        "the server at {server} answered with TLS, not plain HTTP: use {https} \
         (and --ca PEM if its certificate is from a private CA)"
    )]
    ServerSpeaksTls {
        /// The server URL, as given.
        server: String,
        /// The same server with `https://`.
        https: String,
    },
    /// An `https://` URL, and the server answered in plain HTTP.
    #[error("the server at {server} does not speak TLS (it answered in plain HTTP): use {http}")]
    ServerSpeaksPlainHttp {
        /// The server URL, as given.
        server: String,
        /// The same server with `http://`.
        http: String,
    },
    /// No answer within the request timeout.
    #[error("{server} did not answer within {timeout:?}")]
    Timeout {
        /// The server URL.
        server: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The server answered with an error status.
    #[error("{method} {path}: {status}: {message}")]
    Status {
        /// Method.
        method: Method,
        /// Path.
        path: String,
        /// The status.
        status: StatusCode,
        /// The server's `error` text, or the body.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("{path}: unexpected answer: {detail}")]
    Decode {
        /// Path.
        path: String,
        /// Parser detail.
        detail: String,
    },
    /// The CA file for `https://` could not be used.
    #[error("CA certificates: {0}")]
    Ca(String),
    /// The client certificate or key could not be used.
    #[error("client certificate: {0}")]
    Identity(String),
}

/// Talks to a running server's admin API.
#[derive(Clone)]
pub struct AdminClient {
    server: String,
    host: String,
    port: u16,
    authority: String,
    /// `host:port`, the port given or not, for the other scheme's URL.
    host_port: String,
    tls: Option<tokio_rustls::TlsConnector>,
    roots: Option<Arc<rustls::RootCertStore>>,
    api_key: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client for `server` (`http://host:port` or `https://…`). An `https://` server is
    /// trusted when its certificate chains to a root of [`default_roots`] (the system's store
    /// and Mozilla's list) or to one of the CA certificates in `ca_pem` (a private CA).
    pub fn new(
        server: &str,
        api_key: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::BadUrl {
            url: server.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = server
            .trim_end_matches('/')
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("use http:// or https://")),
        };
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("give the server's base URL without a path"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_port = format!("{}:{port}", authority.host());
        let roots = if https {
            // The system's trust store and the public web roots (Mozilla's, bundled, for
            // machines without one), plus a private CA when given.
            let mut roots = default_roots();
            if let Some(pem) = ca_pem {
                let mut added = 0;
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| ClientError::Ca(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| ClientError::Ca(e.to_string()))?;
                    added += 1;
                }
                if added == 0 {
                    return Err(ClientError::Ca("no CERTIFICATE in the CA file".into()));
                }
            }
            Some(Arc::new(roots))
        } else {
            None
        };
        let tls = match &roots {
            Some(roots) => Some(tokio_rustls::TlsConnector::from(Arc::new(
                tls_builder()?
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth(),
            ))),
            None => None,
        };
        Ok(AdminClient {
            server: server.to_owned(),
            host,
            port,
            authority: authority.to_string(),
            host_port,
            tls,
            roots,
            api_key: api_key.filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(30),
        })
    }

    /// Presents this client certificate (PEM chain and key) on `https://` connections, as a
    /// device with its identity certificate does.
    pub fn with_client_identity(
        mut self,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, ClientError> {
        let roots = self.roots.clone().ok_or_else(|| {
            ClientError::Identity("a client certificate needs an https:// URL".into())
        })?;
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Identity(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| ClientError::Identity(e.to_string()))?;
        let config = tls_builder()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientError::Identity(e.to_string()))?;
        self.tls = Some(tokio_rustls::TlsConnector::from(Arc::new(config)));
        Ok(self)
    }

    /// Sets the per-request timeout (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `GET path` → JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let body = self.call(Method::GET, path, None).await?;
        decode_json(path, &body)
    }

    /// `GET path` → text.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let body = self.call(Method::GET, path, None).await?;
        String::from_utf8(body.to_vec()).map_err(|e| ClientError::Decode {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    /// `method path` with a JSON body → JSON.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::to_vec(value).unwrap_or_default();
        let answer = self
            .call(method, path, Some(("application/json", body.into())))
            .await?;
        decode_json(path, &answer)
    }

    /// `method path` with a raw body; the answer's bytes on 2xx, [`ClientError::Status`]
    /// otherwise.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<Bytes, ClientError> {
        let (status, bytes) = self.request(method.clone(), path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
            return Err(ClientError::Status {
                method,
                path: path.to_owned(),
                status,
                message,
            });
        }
        Ok(bytes)
    }

    /// `method path` with an optional `(content type, body)`; any status is returned as is.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.request_with(method, path, body, &[]).await
    }

    /// [`AdminClient::request`] with extra request headers (e.g. `Mdm-Signature`).
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
        headers: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let inner = self.request_inner(method, path, body, headers);
        match tokio::time::timeout(self.timeout, inner).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                server: self.server.clone(),
                timeout: self.timeout,
            }),
        }
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
        headers: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let connect_err = |detail: String| ClientError::Connect {
            server: self.server.clone(),
            detail,
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let first = FirstByte::default();
        let tcp = Sniffed {
            inner: tcp,
            first: first.clone(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        if let Some(key) = &self.api_key {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| connect_err(format!("cannot build request: {e}")))?;
        let result = match &self.tls {
            None => send(TokioIo::new(tcp), request).await,
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| connect_err(format!("bad TLS server name: {e}")))?;
                match connector.connect(name, tcp).await {
                    Ok(stream) => send(TokioIo::new(stream), request).await,
                    Err(e) => {
                        let hint = if e.to_string().contains("UnknownIssuer") {
                            " (the server's certificate is not from a public CA: give --ca PEM with the CA that signed it)"
                        } else {
                            ""
                        };
                        Err(format!("TLS: {e}{hint}"))
                    }
                }
            }
        };
        result.map_err(|detail| self.failure(first.get(), detail))
    }

    /// The error of a failed exchange: the other scheme's, when the server's first byte says
    /// it speaks it, else [`ClientError::Connect`] with `detail`.
    fn failure(&self, first: Option<u8>, detail: String) -> ClientError {
        match (self.tls.is_some(), first) {
            // Every TLS record starts with its content type: change_cipher_spec, alert,
            // handshake or application_data. No HTTP/1 answer starts with one of them.
            (false, Some(0x14..=0x17)) => ClientError::ServerSpeaksTls {
                server: self.server.clone(),
                https: format!("https://{}", self.host_port),
            },
            // An HTTP server's answer (to a ClientHello it took for a request) is `HTTP/…`.
            (true, Some(b'H')) => ClientError::ServerSpeaksPlainHttp {
                server: self.server.clone(),
                http: format!("http://{}", self.host_port),
            },
            _ => ClientError::Connect {
                server: self.server.clone(),
                detail,
            },
        }
    }
}

/// The first byte a connection received, once one has: what tells a TLS server from a plain
/// HTTP one when an exchange fails.
#[derive(Clone)]
struct FirstByte(Arc<AtomicU16>);

impl FirstByte {
    /// Nothing received yet.
    const NONE: u16 = u16::MAX;

    fn get(&self) -> Option<u8> {
        u8::try_from(self.0.load(Ordering::Relaxed)).ok()
    }

    fn record(&self, byte: u8) {
        let _ = self.0.compare_exchange(
            Self::NONE,
            u16::from(byte),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

impl Default for FirstByte {
    fn default() -> Self {
        FirstByte(Arc::new(AtomicU16::new(Self::NONE)))
    }
}

/// A stream that records the first byte it reads into [`FirstByte`].
struct Sniffed<S> {
    inner: S,
    first: FirstByte,
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(&byte) = buf.filled().get(before) {
            self.first.record(byte);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn send<I>(io: I, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok((status, bytes))
}

/// The roots an `https://` admin client trusts without `--ca`: the system's trust store (as
/// OpenSSL finds it: `SSL_CERT_FILE`, `SSL_CERT_DIR`, or the platform's store) and
/// Mozilla's list bundled with the program. Unreadable system certificates are skipped.
pub fn default_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let system = rustls_native_certs::load_native_certs();
    for cert in system.certs {
        let _ = roots.add(cert);
    }
    if !system.errors.is_empty() {
        tracing::debug!(
            "some system certificates were not read: {:?}",
            system.errors.first()
        );
    }
    roots
}

fn tls_builder(
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, ClientError> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Ca(e.to_string()))
}

fn decode_json(path: &str, body: &[u8]) -> Result<serde_json::Value, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_byte_tells_the_scheme_the_server_speaks() {
        let plain = AdminClient::new("http://127.0.0.1:8080", None, None).unwrap();
        let tls = AdminClient::new("https://mdm.example.com/", None, None).unwrap();
        let why = || "invalid HTTP version parsed".to_owned();
        // A TLS alert or handshake record to a plain client.
        for byte in [0x15, 0x16] {
            let err = plain.failure(Some(byte), why());
            assert_eq!(
                err.to_string(),
                "the server at http://127.0.0.1:8080 answered with TLS, not plain HTTP: use \
                 https://127.0.0.1:8080 (and --ca PEM if its certificate is from a private CA)"
            );
        }
        // `HTTP/1.1 400` to a TLS client; the port it was talking to stays in the URL.
        let err = tls.failure(Some(b'H'), "received corrupt message".to_owned());
        assert_eq!(
            err.to_string(),
            "the server at https://mdm.example.com/ does not speak TLS (it answered in plain \
             HTTP): use http://mdm.example.com:443"
        );
        // Anything else keeps its own words.
        for (client, first) in [(&plain, None), (&plain, Some(b'H')), (&tls, Some(0x15))] {
            let err = client.failure(first, why());
            assert!(matches!(err, ClientError::Connect { .. }), "{err}");
            assert!(err.to_string().ends_with(&why()), "{err}");
        }
    }
}
