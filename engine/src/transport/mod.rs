//! Opening one APNs connection: TCP, TLS with the push certificate as client identity, ALPN
//! `h2`, the HTTP/2 handshake, and a first PING so the server's SETTINGS (and a TLS 1.3
//! certificate rejection, which arrives only after the handshake) are known before the
//! connection takes pushes. Through an HTTP proxy when one is set: TCP to the proxy, a
//! `CONNECT` tunnel to the endpoint (`proxy`), and the same TLS inside it.

mod prefixed;
mod proxy;
mod tls;

pub(crate) use proxy::Proxy;
pub use proxy::{InvalidProxy, ProxyProtocolError};
pub use tls::TlsConfigError;
pub(crate) use tls::{client_config, root_store};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use prefixed::Prefixed;

use crate::cause::CertificateAlert;
use crate::endpoint::Endpoint;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// DNS or TCP failed.
    #[error("cannot reach {endpoint}: {source}")]
    Unreachable {
        /// Where.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake or the first exchange after it failed for a reason other than the
    /// certificate.
    #[error("TLS with {endpoint} failed: {source}")]
    Tls {
        /// Where.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server refused the push certificate (TLS alert).
    #[error("{endpoint} refused the push certificate: TLS alert {alert}")]
    CertificateRejected {
        /// Where.
        endpoint: String,
        /// The alert, e.g. `certificate_expired`, `certificate_revoked`, `bad_certificate`.
        alert: CertificateAlert,
    },
    /// The server did not agree to HTTP/2.
    #[error("{endpoint} did not negotiate HTTP/2 (ALPN h2)")]
    NoHttp2 {
        /// Where.
        endpoint: String,
    },
    /// The HTTP/2 handshake or first PING failed.
    #[error("HTTP/2 with {endpoint} failed: {source}")]
    Http2 {
        /// Where.
        endpoint: String,
        /// Why.
        source: h2::Error,
    },
    /// The HTTP proxy could not be reached (DNS or TCP).
    #[error("cannot reach APNs proxy {proxy} (for {endpoint}): {source}")]
    ProxyUnreachable {
        /// The proxy, its password masked.
        proxy: String,
        /// The APNs endpoint the tunnel was for.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP proxy answered `CONNECT` with something other than 2xx. A 407 means it wants
    /// credentials, or refused those in the proxy URL: reconnects back off as after any
    /// failed attempt, and will not succeed until the URL changes.
    #[error(
        "APNs proxy {proxy} refused a tunnel to {endpoint}: {status}{}{}",
        proxy::reason_note(.reason),
        proxy::refusal_note(*.status, *.credentials_sent, .challenges)
    )]
    ProxyRefused {
        /// The proxy, its password masked.
        proxy: String,
        /// The APNs endpoint the tunnel was for.
        endpoint: String,
        /// The proxy's status code.
        status: u16,
        /// Its reason phrase (printable ASCII, shortened).
        reason: String,
        /// Whether the proxy URL carried credentials (sent as `Proxy-Authorization: Basic`).
        credentials_sent: bool,
        /// The schemes of its `Proxy-Authenticate` challenges, for a 407.
        challenges: Vec<String>,
    },
    /// The HTTP proxy's answer to `CONNECT` was not a usable HTTP response, or the
    /// connection to it failed before the tunnel opened.
    #[error("APNs proxy {proxy} did not open a tunnel to {endpoint}: {source}")]
    ProxyProtocol {
        /// The proxy, its password masked.
        proxy: String,
        /// The APNs endpoint the tunnel was for.
        endpoint: String,
        /// What went wrong.
        source: ProxyProtocolError,
    },
    /// No answer within the connect timeout.
    #[error("connecting to {endpoint} took longer than {timeout:?}")]
    Timeout {
        /// Where.
        endpoint: String,
        /// The limit.
        timeout: Duration,
    },
}

impl ConnectError {
    /// The TLS alert that refused the certificate, if that is what this is.
    pub fn certificate_alert(&self) -> Option<CertificateAlert> {
        match self {
            ConnectError::CertificateRejected { alert, .. } => Some(*alert),
            _ => None,
        }
    }
}

/// The HTTP/2 connection future: it does the socket I/O and resolves when the connection
/// ends. Whoever owns it must keep polling it.
pub(crate) type H2Connection =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), h2::Error>> + Send>>;

/// An open HTTP/2 connection: the request handle, the PING handle and the connection future,
/// which the connection's task polls itself (no extra task, no cross-task wake-ups per frame).
pub(crate) struct Connected {
    pub send: h2::client::SendRequest<Bytes>,
    pub ping: h2::PingPong,
    pub connection: H2Connection,
}

/// HTTP/2 settings the client announces: APNs responses are small, so modest windows.
fn h2_builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_concurrent_reset_streams(1000)
        .max_header_list_size(16 << 10)
        .enable_push(false);
    b
}

/// Opens a connection to `endpoint` with `tls` (which carries the push certificate), through
/// `proxy` when there is one. `timeout` bounds all of it, the proxy's answer included.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    proxy: Option<Arc<Proxy>>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Connected, ConnectError> {
    let proxy = proxy.as_deref();
    let name = match proxy {
        Some(proxy) => format!("{endpoint} via proxy {proxy}"),
        None => endpoint.to_string(),
    };
    match tokio::time::timeout(timeout, connect_inner(endpoint, proxy, tls, &name)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout {
            endpoint: name,
            timeout,
        }),
    }
}

/// TCP to the endpoint, or a tunnel to it through the proxy (which may hand over bytes it
/// already read from the tunnel).
type Tcp = Prefixed<TcpStream>;

async fn connect_inner(
    endpoint: &Endpoint,
    proxy: Option<&Proxy>,
    tls: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<Connected, ConnectError> {
    let tcp: Tcp = match proxy {
        Some(proxy) => proxy::open_tunnel(proxy, endpoint).await?,
        None => {
            let tcp = TcpStream::connect((endpoint.host(), endpoint.port()))
                .await
                .map_err(|source| ConnectError::Unreachable {
                    endpoint: name.to_owned(),
                    source,
                })?;
            tcp.set_nodelay(true).ok();
            Prefixed::new(Vec::new(), tcp)
        }
    };
    let server_name =
        ServerName::try_from(endpoint.host().to_owned()).map_err(|_| ConnectError::Tls {
            endpoint: name.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid server name"),
        })?;
    let stream: TlsStream<Tcp> = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|source| io_to_connect_error(name, source))?;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(ConnectError::NoHttp2 {
            endpoint: name.to_owned(),
        });
    }
    let stream = await_server_preface(stream, name).await?;
    let (send, mut connection) = h2_builder()
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(|e| h2_to_connect_error(name, e))?;
    let mut ping = connection
        .ping_pong()
        .expect("ping_pong is taken once, right after the handshake");
    let mut connection: H2Connection = Box::pin(connection);
    // One round trip: the server's SETTINGS precede the PING ACK, and a certificate refused
    // after a TLS 1.3 handshake shows up here as an alert.
    let pong = tokio::select! {
        pong = ping.ping(h2::Ping::opaque()) => pong.map_err(|e| h2_to_connect_error(name, e)),
        ended = &mut connection => Err(match ended {
            Err(e) => h2_to_connect_error(name, e),
            Ok(()) => ConnectError::Tls {
                endpoint: name.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the HTTP/2 handshake",
                ),
            },
        }),
    };
    pong?;
    Ok(Connected {
        send,
        ping,
        connection,
    })
}

/// How long to wait for the server to speak first after the TLS handshake.
const SERVER_PREFACE_WAIT: Duration = Duration::from_secs(2);

/// Waits for the server's first bytes (its HTTP/2 SETTINGS) before writing anything. With
/// TLS 1.3 the server judges the client certificate only after the client's handshake is
/// done; if it refuses it, its alert is the first thing it sends — and a client that writes
/// first would often see only "broken pipe". A server that stays silent is given the benefit
/// of the doubt after a short wait.
async fn await_server_preface(
    mut stream: TlsStream<Tcp>,
    name: &str,
) -> Result<Prefixed<TlsStream<Tcp>>, ConnectError> {
    let mut first = vec![0u8; 16 * 1024];
    match tokio::time::timeout(SERVER_PREFACE_WAIT, stream.read(&mut first)).await {
        Ok(Ok(0)) => Err(ConnectError::Tls {
            endpoint: name.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection right after the TLS handshake",
            ),
        }),
        Ok(Ok(n)) => {
            first.truncate(n);
            Ok(Prefixed::new(first, stream))
        }
        Ok(Err(e)) => Err(io_to_connect_error(name, e)),
        Err(_) => Ok(Prefixed::new(Vec::new(), stream)),
    }
}

fn io_to_connect_error(name: &str, source: std::io::Error) -> ConnectError {
    match CertificateAlert::from_io_error(&source) {
        Some(alert) => ConnectError::CertificateRejected {
            endpoint: name.to_owned(),
            alert,
        },
        None => ConnectError::Tls {
            endpoint: name.to_owned(),
            source,
        },
    }
}

fn h2_to_connect_error(name: &str, source: h2::Error) -> ConnectError {
    if let Some(alert) = source.get_io().and_then(CertificateAlert::from_io_error) {
        return ConnectError::CertificateRejected {
            endpoint: name.to_owned(),
            alert,
        };
    }
    ConnectError::Http2 {
        endpoint: name.to_owned(),
        source,
    }
}
