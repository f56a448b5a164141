//! The database URL and TLS to the server.
//!
//! tokio-postgres parses the URL but knows only `sslmode=disable|prefer|require` and does no
//! certificate checks of its own: this module takes `sslmode` and `sslrootcert` out of the URL
//! first, and connects with rustls as libpq would for each mode:
//!
//! | `sslmode`       | TLS | certificate checked                          |
//! |-----------------|-----|----------------------------------------------|
//! | `disable`       | no  | —                                            |
//! | `prefer` (none) | no  | — (plain TCP: meant for loopback)            |
//! | `require`       | yes | no (encrypted, the server not authenticated) |
//! | `verify-ca`     | yes | chain to a trusted root                      |
//! | `verify-full`   | yes | chain and the host name                      |
//!
//! Trusted roots: `sslrootcert=PATH` (PEM), else the system's trust store.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use magicpush_store::StoreError;

/// How the connection to the server is secured (from the URL's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `disable`, `prefer` or none given: plain TCP.
    Off,
    /// `require`: TLS, the server's certificate not checked.
    Require,
    /// `verify-ca`: TLS, the certificate chains to a trusted root.
    VerifyCa,
    /// `verify-full`: TLS, the certificate chains to a trusted root and names the host.
    VerifyFull,
}

/// A database URL taken apart: what tokio-postgres parses, and what this module handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseUrl {
    /// The URL without `sslmode` and `sslrootcert` (tokio-postgres refuses both as given).
    pub(crate) rest: String,
    pub(crate) mode: TlsMode,
    /// `sslrootcert`: a PEM file of trusted roots.
    pub(crate) root_cert: Option<String>,
}

fn url_err(detail: impl Into<String>) -> StoreError {
    StoreError::Database {
        op: "parse database URL",
        detail: detail.into(),
    }
}

fn parse_mode(value: &str) -> Result<TlsMode, StoreError> {
    Ok(match value {
        "disable" | "allow" | "prefer" => TlsMode::Off,
        "require" => TlsMode::Require,
        "verify-ca" => TlsMode::VerifyCa,
        "verify-full" => TlsMode::VerifyFull,
        other => {
            return Err(url_err(format!(
                "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
            )))
        }
    })
}

/// `%XX` escapes decoded (a path in a URL).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl DatabaseUrl {
    /// Parses a `postgres://` / `postgresql://` URL or a `key=value …` string.
    pub(crate) fn parse(url: &str) -> Result<DatabaseUrl, StoreError> {
        let mut mode = TlsMode::Off;
        let mut root_cert = None;
        let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let rest = if is_url {
            match url.split_once('?') {
                None => url.to_owned(),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    for pair in query.split('&').filter(|p| !p.is_empty()) {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        match key {
                            "sslmode" => mode = parse_mode(&percent_decode(value))?,
                            "sslrootcert" => root_cert = Some(percent_decode(value)),
                            _ => kept.push(pair),
                        }
                    }
                    if kept.is_empty() {
                        base.to_owned()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            let mut kept = Vec::new();
            for word in url.split_whitespace() {
                match word.split_once('=') {
                    Some(("sslmode", value)) => mode = parse_mode(value)?,
                    Some(("sslrootcert", value)) => root_cert = Some(value.to_owned()),
                    _ => kept.push(word),
                }
            }
            kept.join(" ")
        };
        Ok(DatabaseUrl {
            rest,
            mode,
            root_cert,
        })
    }

    /// tokio-postgres's configuration: TLS required when the mode asks for it.
    pub(crate) fn config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut config: tokio_postgres::Config = self
            .rest
            .parse()
            .map_err(|e: tokio_postgres::Error| url_err(e.to_string()))?;
        config.ssl_mode(match self.mode {
            TlsMode::Off => tokio_postgres::config::SslMode::Disable,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("magicpush");
        }
        Ok(config)
    }

    /// The TLS connector for the mode (used only when the mode is not [`TlsMode::Off`]).
    pub(crate) fn connector(&self) -> Result<RustlsConnect, StoreError> {
        let tls_err = |detail: String| StoreError::Database {
            op: "configure TLS",
            detail,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?;
        let config = match self.mode {
            TlsMode::Off | TlsMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| tls_err(e.to_string()))?;
                let verifier: Arc<dyn ServerCertVerifier> = if self.mode == TlsMode::VerifyCa {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
        };
        Ok(RustlsConnect {
            config: Arc::new(config),
        })
    }

    fn roots(&self) -> Result<RootCertStore, StoreError> {
        let mut roots = RootCertStore::empty();
        let err = |detail: String| StoreError::Database {
            op: "read TLS roots",
            detail,
        };
        match &self.root_cert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| err(format!("{path}: {e}")))?;
                let mut reader = io::BufReader::new(pem.as_slice());
                for cert in rustls_pki_types::pem::PemObject::pem_reader_iter(&mut reader) {
                    let cert: CertificateDer<'static> =
                        cert.map_err(|e| err(format!("{path}: {e}")))?;
                    roots.add(cert).map_err(|e| err(format!("{path}: {e}")))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(err(
                        "no trusted roots in the system's store; give sslrootcert=PATH".into(),
                    ));
                }
            }
        }
        if roots.is_empty() {
            return Err(err("sslrootcert holds no certificate".into()));
        }
        Ok(roots)
    }
}

/// `sslmode=require`: any certificate (the handshake's signatures are still checked), as libpq
/// does without a root certificate.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain is verified, the name in the certificate is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS hook over tokio-rustls.
#[derive(Clone)]
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnector> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnector {
            config: Arc::clone(&self.config),
            name,
        })
    }
}

pub(crate) struct RustlsConnector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

impl<S> TlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Handshake<S> {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// A TLS connection to the server.
pub(crate) struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (tokio-postgres's default `prefer` accepts it).
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        let u = DatabaseUrl::parse("postgres://u:p@db:5432/mp?sslmode=verify-full").unwrap();
        assert_eq!(u.mode, TlsMode::VerifyFull);
        assert_eq!(u.rest, "postgres://u:p@db:5432/mp");
        let u = DatabaseUrl::parse(
            "postgresql://db/mp?application_name=x&sslmode=require&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(u.mode, TlsMode::Require);
        assert_eq!(u.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(u.rest, "postgresql://db/mp?application_name=x");
        for (mode, want) in [
            ("disable", TlsMode::Off),
            ("prefer", TlsMode::Off),
            ("verify-ca", TlsMode::VerifyCa),
        ] {
            let u = DatabaseUrl::parse(&format!("postgres://db/mp?sslmode={mode}")).unwrap();
            assert_eq!(u.mode, want, "{mode}");
        }
        assert_eq!(
            DatabaseUrl::parse("postgres://db/mp").unwrap().mode,
            TlsMode::Off
        );
    }

    #[test]
    fn key_value_strings_too() {
        let u = DatabaseUrl::parse("host=db dbname=mp sslmode=verify-full").unwrap();
        assert_eq!(u.mode, TlsMode::VerifyFull);
        assert_eq!(u.rest, "host=db dbname=mp");
    }

    #[test]
    fn unknown_modes_are_refused() {
        let err = DatabaseUrl::parse("postgres://db/mp?sslmode=verify").unwrap_err();
        assert!(err.to_string().contains("sslmode=verify"), "{err}");
    }

    #[test]
    fn the_rest_parses_with_tls_required_when_asked() {
        use tokio_postgres::config::SslMode;
        let u = DatabaseUrl::parse("postgres://u@127.0.0.1:5/mp?sslmode=verify-full").unwrap();
        assert_eq!(u.config().unwrap().get_ssl_mode(), SslMode::Require);
        let u = DatabaseUrl::parse("postgres://u@127.0.0.1:5/mp?sslmode=prefer").unwrap();
        assert_eq!(u.config().unwrap().get_ssl_mode(), SslMode::Disable);
        let u =
            DatabaseUrl::parse("postgres://u@127.0.0.1:5/mp?options=-csearch_path%3Dt_1").unwrap();
        assert_eq!(u.config().unwrap().get_options(), Some("-csearch_path=t_1"));
    }

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("%2Fa%20b"), "/a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
