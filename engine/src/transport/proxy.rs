//! APNs connections through an HTTP proxy: a `CONNECT host:port HTTP/1.1` tunnel (RFC 9110
//! §9.3.6), over which TLS to APNs runs exactly as it does without one.
//!
//! The pure part — the proxy URL, the request bytes, reading the proxy's answer — is apart
//! from `open_tunnel`, the only function here that touches a socket.

use std::fmt;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::prefixed::Prefixed;
use super::ConnectError;
use crate::endpoint::Endpoint;

/// The most bytes of the proxy's answer read before the tunnel opens: its head must fit.
pub(crate) const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// What stands for the password wherever the proxy URL is shown.
const MASK: &str = "****";

/// A proxy URL that is not `http://[user[:password]@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid APNs proxy URL {url}: {why} (expected http://[user:password@]host[:port])")]
pub struct InvalidProxy {
    /// What was given, with anything before an `@` (the user info) masked.
    pub url: String,
    /// What is wrong.
    pub why: &'static str,
}

/// The proxy's answer could not be read as an HTTP response to `CONNECT`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyProtocolError {
    /// The answer does not begin with an HTTP/1.x status line.
    #[error("its answer is not an HTTP/1.x response; it begins {start:?}")]
    NotHttp {
        /// The first bytes, escaped.
        start: String,
    },
    /// The answer is a TLS record: the port expects a TLS connection.
    #[error(
        "it answered with TLS: this port expects an https:// proxy connection, which is not \
         supported — use the proxy's plain HTTP port"
    )]
    Tls,
    /// The response head did not end within the limit.
    #[error("its response head is larger than {limit} bytes")]
    HeadTooLarge {
        /// The limit: 8 KiB.
        limit: usize,
    },
    /// The proxy closed the connection before its response head ended.
    #[error("it closed the connection after {received} bytes, before its answer was complete")]
    Closed {
        /// Bytes received.
        received: usize,
    },
    /// Writing the request or reading the answer failed.
    #[error("the connection to it failed: {0}")]
    Io(#[source] std::io::Error),
}

/// A validated HTTP proxy. Its `Display` and `Debug` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    /// Host name or IP address (IPv6 without brackets), to connect to.
    host: String,
    port: u16,
    /// The `Proxy-Authorization` value (`Basic …`), when the URL carries user info.
    authorization: Option<String>,
    /// The URL as shown: `http://user:****@host:port`.
    redacted: String,
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({})", self.redacted)
    }
}

impl Proxy {
    /// Parses `http://[user[:password]@]host[:port][/]`: port 80 when absent, user and
    /// password percent-decoded. `https://` (TLS to the proxy) and other schemes are refused.
    pub(crate) fn parse(url: &str) -> Result<Proxy, InvalidProxy> {
        let bad = |why| InvalidProxy {
            url: redact_unparsed(url),
            why,
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad("no scheme"));
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(bad(
                "https:// (TLS to the proxy) is not supported; use the proxy's http:// port \
                 (the APNs connection inside the tunnel is TLS all the same)",
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("the scheme must be http"));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !tail.is_empty() && tail != "/" {
            return Err(bad(
                "nothing may follow host:port (percent-encode / ? # in a password)",
            ));
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (host, port) = split_host_port(host_port).map_err(bad)?;
        let checked = Endpoint::custom(host, port).map_err(|e| bad(e.why))?;
        let shown_host = checked.authority();
        let (authorization, redacted) = match userinfo {
            None => (None, format!("http://{shown_host}")),
            Some("") => return Err(bad("empty user info before @")),
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                let user_bytes = percent_decode(user).map_err(bad)?;
                if user_bytes.contains(&b':') {
                    return Err(bad(
                        "the user name contains ':', which Basic authentication cannot carry",
                    ));
                }
                let password_bytes = percent_decode(password.unwrap_or("")).map_err(bad)?;
                let mut credentials = user_bytes;
                credentials.push(b':');
                credentials.extend_from_slice(&password_bytes);
                let basic = base64::engine::general_purpose::STANDARD.encode(&credentials);
                let shown = match password {
                    Some(_) => format!("http://{user}:{MASK}@{shown_host}"),
                    None => format!("http://{user}@{shown_host}"),
                };
                (Some(format!("Basic {basic}")), shown)
            }
        };
        Ok(Proxy {
            host: host.to_owned(),
            port,
            authorization,
            redacted,
        })
    }

    /// Whether the URL carries credentials (sent as `Proxy-Authorization: Basic`).
    pub(crate) fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }

    /// The request that asks for a tunnel to `authority` (`host:port`).
    pub(crate) fn connect_request(&self, authority: &str) -> Vec<u8> {
        let mut r = format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: magicpush/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(auth) = &self.authorization {
            r.push_str("Proxy-Authorization: ");
            r.push_str(auth);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// `host[:port]` or `[v6][:port]`, port 80 when absent.
fn split_host_port(text: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address without its closing ]")?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or("junk after the IPv6 address")?,
                ),
            ),
        }
    } else {
        match text.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err("an IPv6 address must be in brackets");
            }
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    let port = match port {
        None => 80,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().map_err(|_| "the port is not 1 to 65535")?
        }
        Some(_) => return Err("the port is not a number"),
    };
    Ok((host, port))
}

fn percent_decode(text: &str) -> Result<Vec<u8>, &'static str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the user info")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// A URL that did not parse, shown without anything before its last `@`.
fn redact_unparsed(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let rest = match rest.rsplit_once('@') {
        Some((_, after)) => format!("{MASK}@{after}"),
        None => rest.to_owned(),
    };
    let shown = match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    };
    format!("{shown:?}")
}

/// The proxy's final answer to `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyResponse {
    pub(crate) status: u16,
    /// The reason phrase, printable ASCII only, shortened.
    pub(crate) reason: String,
    /// The schemes of its `Proxy-Authenticate` challenges (`Basic`, `Negotiate`, …).
    pub(crate) challenges: Vec<String>,
}

/// How far the proxy's answer has come.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The head has not ended yet: read more.
    Incomplete,
    /// The final response, and the length of everything before the tunnel's first byte
    /// (the head, and any interim 1xx heads before it).
    Complete {
        response: ProxyResponse,
        head_len: usize,
    },
}

/// Reads the proxy's answer so far. Interim 1xx responses are skipped; bytes after the final
/// head belong to the tunnel. An answer whose head does not end within `limit` bytes is
/// refused, so a proxy that talks on and on cannot hold memory or time.
pub(crate) fn parse_response(buf: &[u8], limit: usize) -> Result<Parsed, ProxyProtocolError> {
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        check_start(rest)?;
        let Some(end) = head_end(rest) else {
            return if buf.len() >= limit {
                Err(ProxyProtocolError::HeadTooLarge { limit })
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        if start + end > limit {
            return Err(ProxyProtocolError::HeadTooLarge { limit });
        }
        let response = parse_head(&rest[..end])?;
        start += end;
        // 101 Switching Protocols makes no sense for CONNECT: it counts as a refusal.
        if (100..200).contains(&response.status) && response.status != 101 {
            continue;
        }
        return Ok(Parsed::Complete {
            response,
            head_len: start,
        });
    }
}

/// Refuses an answer as soon as its first bytes show it is not HTTP/1.x.
fn check_start(rest: &[u8]) -> Result<(), ProxyProtocolError> {
    const PREFIX: &[u8] = b"HTTP/1.";
    if let Some(&first) = rest.first() {
        // A TLS alert or handshake record.
        if first == 0x15 || first == 0x16 {
            return Err(ProxyProtocolError::Tls);
        }
    }
    let n = rest.len().min(PREFIX.len());
    if rest[..n] != PREFIX[..n] {
        return Err(not_http(rest));
    }
    Ok(())
}

fn not_http(bytes: &[u8]) -> ProxyProtocolError {
    let start = &bytes[..bytes.len().min(32)];
    ProxyProtocolError::NotHttp {
        start: start.escape_ascii().to_string(),
    }
}

/// The length of the head up to and including its empty line (CRLF, or a bare LF).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            if line_start > 0 && (line.is_empty() || line == b"\r") {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// One complete head: `HTTP/1.x SP 3DIGIT [SP reason]`, then header lines.
fn parse_head(head: &[u8]) -> Result<ProxyResponse, ProxyProtocolError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let bad = || not_http(status_line);
    let after_version = status_line
        .strip_prefix(b"HTTP/1.")
        .and_then(|r| r.split_first())
        .filter(|(minor, _)| minor.is_ascii_digit())
        .map(|(_, r)| r)
        .ok_or_else(bad)?;
    let after_sp = after_version.strip_prefix(b" ").ok_or_else(bad)?;
    let (code, reason) = match after_sp.get(3) {
        None => (after_sp, &b""[..]),
        Some(b' ') => (&after_sp[..3], &after_sp[4..]),
        Some(_) => return Err(bad()),
    };
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let status: u16 = code.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..600).contains(&status) {
        return Err(bad());
    }
    let mut challenges = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            // The empty line that ends the head, or a folded or malformed line: nothing the
            // tunnel depends on.
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"proxy-authenticate") {
            let scheme: Vec<u8> = value
                .trim_ascii_start()
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
                .take(32)
                .copied()
                .collect();
            let scheme = String::from_utf8(scheme).expect("ASCII");
            if !scheme.is_empty() && !challenges.contains(&scheme) && challenges.len() < 8 {
                challenges.push(scheme);
            }
        }
    }
    Ok(ProxyResponse {
        status,
        reason: printable(reason, 100),
        challenges,
    })
}

/// Printable ASCII of `bytes`, others as `?`, at most `max` characters.
fn printable(bytes: &[u8], max: usize) -> String {
    bytes
        .iter()
        .take(max)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The reason phrase after the status code, if there is one.
pub(crate) fn reason_note(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" {reason}")
    }
}

/// What an operator should know about a refusal, after its status line.
pub(crate) fn refusal_note(status: u16, credentials_sent: bool, challenges: &[String]) -> String {
    let mut note = match status {
        407 if credentials_sent => {
            " — the proxy rejected the user name and password in the proxy URL".to_owned()
        }
        407 => " — the proxy wants credentials: give them in the proxy URL, \
                http://user:password@host:port"
            .to_owned(),
        403 => " — the proxy's policy forbids this destination".to_owned(),
        405 | 501 => " — the proxy does not allow CONNECT (to this port)".to_owned(),
        502..=504 => " — the proxy could not reach the APNs endpoint".to_owned(),
        _ => String::new(),
    };
    if status == 407
        && !challenges.is_empty()
        && !challenges.iter().any(|c| c.eq_ignore_ascii_case("basic"))
    {
        note.push_str(&format!(
            " (it asks for {}; only Basic is supported)",
            challenges.join(", ")
        ));
    }
    note
}

/// Opens a TCP connection to `proxy` and asks it for a tunnel to `endpoint`. On a 2xx the
/// stream is the tunnel; bytes the proxy sent after its head (it should send none before the
/// TLS server hello, which needs our client hello first) are kept and read first, so TLS
/// judges them rather than losing them. The caller bounds the time.
pub(crate) async fn open_tunnel(
    proxy: &Proxy,
    endpoint: &Endpoint,
) -> Result<Prefixed<TcpStream>, ConnectError> {
    let mut tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|source| ConnectError::ProxyUnreachable {
            proxy: proxy.to_string(),
            endpoint: endpoint.to_string(),
            source,
        })?;
    tcp.set_nodelay(true).ok();
    let protocol = |source| ConnectError::ProxyProtocol {
        proxy: proxy.to_string(),
        endpoint: endpoint.to_string(),
        source,
    };
    let request = proxy.connect_request(endpoint.authority().as_str());
    tcp.write_all(&request)
        .await
        .map_err(|e| protocol(ProxyProtocolError::Io(e)))?;
    let mut buf = vec![0u8; MAX_RESPONSE_HEAD];
    let mut filled = 0;
    let (response, head_len) = loop {
        // `parse_response` refuses a full buffer, so there is always room to read into.
        let n = tcp
            .read(&mut buf[filled..])
            .await
            .map_err(|e| protocol(ProxyProtocolError::Io(e)))?;
        if n == 0 {
            return Err(protocol(ProxyProtocolError::Closed { received: filled }));
        }
        filled += n;
        match parse_response(&buf[..filled], MAX_RESPONSE_HEAD).map_err(protocol)? {
            Parsed::Incomplete => {}
            Parsed::Complete { response, head_len } => break (response, head_len),
        }
    };
    if !(200..300).contains(&response.status) {
        return Err(ConnectError::ProxyRefused {
            proxy: proxy.to_string(),
            endpoint: endpoint.to_string(),
            status: response.status,
            reason: response.reason,
            credentials_sent: proxy.has_credentials(),
            challenges: response.challenges,
        });
    }
    let early = buf[head_len..filled].to_vec();
    if !early.is_empty() {
        tracing::debug!(
            proxy = %proxy,
            bytes = early.len(),
            "the proxy sent bytes after its 200 before the TLS handshake; TLS reads them first"
        );
    }
    Ok(Prefixed::new(early, tcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (ProxyResponse, usize) {
        match parse_response(buf, MAX_RESPONSE_HEAD) {
            Ok(Parsed::Complete { response, head_len }) => (response, head_len),
            other => panic!("expected a complete answer, got {other:?}"),
        }
    }

    #[test]
    fn parses_http_urls_with_default_port_and_credentials() {
        let p = Proxy::parse("http://proxy.corp.example").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp.example", 80));
        assert!(!p.has_credentials());
        assert_eq!(p.to_string(), "http://proxy.corp.example:80");

        let p = Proxy::parse("HTTP://alice:p%40ss%3Aw0rd@10.0.0.1:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("10.0.0.1", 3128));
        // base64("alice:p@ss:w0rd"), computed apart from this code.
        assert_eq!(
            p.authorization.as_deref(),
            Some("Basic YWxpY2U6cEBzczp3MHJk")
        );
        assert_eq!(p.to_string(), "http://alice:****@10.0.0.1:3128");
        assert_eq!(format!("{p:?}"), "Proxy(http://alice:****@10.0.0.1:3128)");

        let p = Proxy::parse("http://[::1]:8080").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 8080));
        assert_eq!(p.to_string(), "http://[::1]:8080");

        // A user alone is sent with an empty password; an `@` inside the password is
        // tolerated unencoded (the last `@` ends the user info).
        let p = Proxy::parse("http://alice@proxy:1").unwrap();
        assert_eq!(p.authorization.as_deref(), Some("Basic YWxpY2U6"));
        assert_eq!(p.to_string(), "http://alice@proxy:1");
        let p = Proxy::parse("http://alice:s3@cret@proxy:1").unwrap();
        assert_eq!(p.to_string(), "http://alice:****@proxy:1");
    }

    #[test]
    fn refuses_other_urls_without_showing_the_password() {
        for (url, why) in [
            (
                "https://proxy:443",
                "https:// (TLS to the proxy) is not supported",
            ),
            ("socks5://proxy:1080", "the scheme must be http"),
            ("proxy:3128", "no scheme"),
            ("http://", "no host"),
            ("http://:3128", "no host"),
            ("http://proxy:0", "port 0"),
            ("http://proxy:99999", "not 1 to 65535"),
            ("http://proxy:x", "not a number"),
            ("http://proxy:", "not a number"),
            ("http://proxy:3128/path", "nothing may follow"),
            ("http://proxy?x", "nothing may follow"),
            ("http://::1:80", "brackets"),
            ("http://[::1", "closing ]"),
            ("http://[::1]x", "junk"),
            ("http://pro xy", "not a host name"),
            ("http://@proxy", "empty user info"),
            ("http://a%3Ab:pw@proxy", "contains ':'"),
            ("http://alice:bad%zzsecret@proxy", "%-escape"),
        ] {
            let e = Proxy::parse(url).expect_err(url);
            assert!(e.why.contains(why), "{url}: {e}");
        }
        let e = Proxy::parse("https://alice:hunter2@proxy:443").unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("\"https://****@proxy:443\""), "{text}");
        let e = Proxy::parse("http://alice:hun/ter2@proxy").unwrap_err();
        assert!(!e.to_string().contains("ter2"), "{e}");
    }

    #[test]
    fn builds_the_connect_request() {
        let p = Proxy::parse("http://proxy:3128").unwrap();
        let text = String::from_utf8(p.connect_request("api.push.apple.com:443")).unwrap();
        assert!(
            text.starts_with(
                "CONNECT api.push.apple.com:443 HTTP/1.1\r\nHost: api.push.apple.com:443\r\n"
            ),
            "{text:?}"
        );
        assert!(text.ends_with("\r\n\r\n"));
        assert!(!text.contains("Proxy-Authorization"));
        let p = Proxy::parse("http://alice:s3cret@proxy:3128").unwrap();
        let text = String::from_utf8(p.connect_request("[::1]:443")).unwrap();
        assert!(
            text.starts_with("CONNECT [::1]:443 HTTP/1.1\r\n"),
            "{text:?}"
        );
        assert!(
            text.contains("\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"),
            "{text:?}"
        );
        assert_eq!(text.matches("\r\n\r\n").count(), 1, "one head: {text:?}");
    }

    #[test]
    fn a_200_opens_the_tunnel() {
        let answer = b"HTTP/1.1 200 Connection established\r\nVia: 1.1 squid\r\n\r\n";
        let (r, len) = complete(answer);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (200, "Connection established")
        );
        assert_eq!(len, answer.len());
        // HTTP/1.0, no reason phrase, bare LFs.
        let (r, len) = complete(b"HTTP/1.0 200\n\n");
        assert_eq!((r.status, r.reason.as_str(), len), (200, "", 14));
    }

    #[test]
    fn bytes_after_the_head_belong_to_the_tunnel() {
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let mut answer = head.to_vec();
        answer.extend_from_slice(b"\x16\x03\x03early");
        let (r, len) = complete(&answer);
        assert_eq!(r.status, 200);
        assert_eq!(&answer[len..], b"\x16\x03\x03early");
    }

    #[test]
    fn interim_responses_are_skipped() {
        let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nX";
        let (r, len) = complete(answer);
        assert_eq!(r.status, 200);
        assert_eq!(len, answer.len() - 1);
        // Only the interim head so far: wait for the final one.
        assert_eq!(
            parse_response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2", 64).unwrap(),
            Parsed::Incomplete
        );
    }

    #[test]
    fn refusals_carry_status_reason_and_challenges() {
        let (r, _) = complete(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\
              Proxy-Authenticate: Negotiate\r\n\
              proxy-authenticate:  NTLM\r\n\
              Proxy-Authenticate: Negotiate\r\n\
              Content-Length: 5\r\n\r\nhello",
        );
        assert_eq!(r.status, 407);
        assert_eq!(r.reason, "Proxy Authentication Required");
        assert_eq!(r.challenges, ["Negotiate", "NTLM"]);
        let (r, _) = complete(b"HTTP/1.1 403 Forbidden\r\n\r\n");
        assert_eq!((r.status, r.reason.as_str()), (403, "Forbidden"));
        let (r, _) = complete(b"HTTP/1.1 502 Bad \x01Gateway\x7f\r\n\r\n");
        assert_eq!((r.status, r.reason.as_str()), (502, "Bad ?Gateway?"));
    }

    #[test]
    fn refusal_notes_explain_what_to_do() {
        let basic = ["Basic".to_owned()];
        assert!(refusal_note(407, false, &basic).contains("wants credentials"));
        assert!(refusal_note(407, true, &basic).contains("rejected the user name and password"));
        assert!(!refusal_note(407, true, &basic).contains("only Basic"));
        let ntlm = ["NTLM".to_owned()];
        assert!(refusal_note(407, false, &ntlm).contains("it asks for NTLM; only Basic"));
        assert!(refusal_note(403, false, &[]).contains("forbids"));
        assert!(refusal_note(502, false, &[]).contains("could not reach"));
        assert_eq!(refusal_note(418, false, &[]), "");
    }

    #[test]
    fn an_incomplete_head_waits_for_more() {
        for partial in [
            &b""[..],
            b"H",
            b"HTTP/1.",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nVia: x\r\n\r",
        ] {
            assert_eq!(
                parse_response(partial, MAX_RESPONSE_HEAD).unwrap(),
                Parsed::Incomplete,
                "{partial:?}"
            );
        }
    }

    #[test]
    fn garbage_is_refused_from_its_first_bytes() {
        for garbage in [
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            b"<html>",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1200 OK\r\n\r\n",
            b"\r\nHTTP/1.1 200 OK\r\n\r\n",
        ] {
            match parse_response(garbage, MAX_RESPONSE_HEAD) {
                Err(ProxyProtocolError::NotHttp { .. }) => {}
                other => panic!("{garbage:?}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_response(b"\x15\x03\x03\x00\x02\x02\x46", MAX_RESPONSE_HEAD),
            Err(ProxyProtocolError::Tls)
        ));
        let e = parse_response(b"SSH-2.0-OpenSSH\r\n", 64).unwrap_err();
        assert!(e.to_string().contains("SSH-2.0"), "{e}");
    }

    #[test]
    fn an_oversized_head_is_refused() {
        let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
        while answer.len() < MAX_RESPONSE_HEAD {
            answer.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        answer.truncate(MAX_RESPONSE_HEAD);
        assert!(matches!(
            parse_response(&answer, MAX_RESPONSE_HEAD),
            Err(ProxyProtocolError::HeadTooLarge {
                limit: MAX_RESPONSE_HEAD
            })
        ));
        // Just under the limit, it waits; ending exactly at the limit, it is taken.
        assert_eq!(
            parse_response(&answer[..MAX_RESPONSE_HEAD - 1], MAX_RESPONSE_HEAD).unwrap(),
            Parsed::Incomplete
        );
        let mut exact = answer[..MAX_RESPONSE_HEAD - 4].to_vec();
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(complete(&exact).1, MAX_RESPONSE_HEAD);
        // A head that ends past the limit is refused even when it is all there.
        let mut over = answer.clone();
        over.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            parse_response(&over, MAX_RESPONSE_HEAD),
            Err(ProxyProtocolError::HeadTooLarge { .. })
        ));
    }

    /// A proxy on 127.0.0.1 that reads one request head and answers `answer` in two writes;
    /// the task returns the head.
    async fn one_shot_proxy(
        answer: &'static [u8],
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if s.read(&mut b).await.unwrap() == 0 {
                    break;
                }
                head.push(b[0]);
            }
            // Two writes, so that the client must read more than once.
            let (a, b) = answer.split_at(answer.len() / 2);
            s.write_all(a).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s.write_all(b).await.unwrap();
            head
        });
        (addr, task)
    }

    #[tokio::test]
    async fn the_tunnel_keeps_what_the_proxy_sent_after_its_head() {
        let (addr, task) =
            one_shot_proxy(b"HTTP/1.1 200 Connection established\r\n\r\nearly bytes").await;
        let proxy = Proxy::parse(&format!("http://u:pw@{addr}")).unwrap();
        let endpoint = Endpoint::custom("apns.test", 443).unwrap();
        let run = async {
            let mut tunnel = open_tunnel(&proxy, &endpoint).await.unwrap();
            let mut early = [0u8; 11];
            tunnel.read_exact(&mut early).await.unwrap();
            early
        };
        let early = tokio::time::timeout(std::time::Duration::from_secs(5), run)
            .await
            .expect("in time");
        assert_eq!(&early, b"early bytes");
        let head = String::from_utf8(task.await.unwrap()).unwrap();
        assert!(
            head.starts_with("CONNECT apns.test:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Proxy-Authorization: Basic dTpwdw==\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_typed_and_redacted() {
        let (addr, _task) = one_shot_proxy(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n",
        )
        .await;
        let proxy = Proxy::parse(&format!("http://u:hunter2@{addr}")).unwrap();
        let endpoint = Endpoint::custom("apns.test", 443).unwrap();
        let e = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            open_tunnel(&proxy, &endpoint),
        )
        .await
        .expect("in time")
        .err()
        .expect("refused");
        assert!(
            matches!(e, ConnectError::ProxyRefused { status: 407, .. }),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains(&format!("http://u:****@{addr}")) && text.contains("407"),
            "{text}"
        );
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
