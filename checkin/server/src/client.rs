//! A small admin API client for the CLI: one HTTP/1.1 connection per request (hyper 1 over a
//! `TcpStream`, TLS with tokio-rustls when the URL is `https://`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
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
        match &self.tls {
            None => send(TokioIo::new(tcp), request).await,
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| connect_err(format!("bad TLS server name: {e}")))?;
                let stream = connector.connect(name, tcp).await.map_err(|e| {
                    let hint = if e.to_string().contains("UnknownIssuer") {
                        " (the server's certificate is not from a public CA: give --ca PEM with the CA that signed it)"
                    } else {
                        ""
                    };
                    connect_err(format!("TLS: {e}{hint}"))
                })?;
                send(TokioIo::new(stream), request).await
            }
        }
        .map_err(connect_err)
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
