//! Where pushes go: Apple's production or sandbox gateway, or any `https://host:port`.

use std::fmt;
use std::str::FromStr;

/// An APNs endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Endpoint {
    /// `api.push.apple.com:443` — where MDM pushes always go.
    #[default]
    Production,
    /// `api.sandbox.push.apple.com:443`.
    Sandbox,
    /// Any host and port, for a mock APNs or a proxy: made by [`Endpoint::custom`] or by
    /// parsing a URL, which validate it.
    Custom(CustomEndpoint),
}

/// A validated host and port (see [`Endpoint::custom`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomEndpoint {
    host: String,
    port: u16,
    authority: http::uri::Authority,
}

/// A URL that is not `https://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid APNs URL {url:?}: {why} (expected https://host[:port], \"production\" or \"sandbox\")"
)]
pub struct InvalidEndpoint {
    /// What was given.
    pub url: String,
    /// What is wrong.
    pub why: &'static str,
}

impl Endpoint {
    /// A custom endpoint: `host` a DNS name or an IP address (IPv6 without brackets), `port`
    /// not 0. Refused when `host:port` is not a valid authority.
    pub fn custom(host: impl Into<String>, port: u16) -> Result<Endpoint, InvalidEndpoint> {
        let host = host.into();
        let bad = |why| InvalidEndpoint {
            url: format!("{host}:{port}"),
            why,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if port == 0 {
            return Err(bad("port 0"));
        }
        if host.contains(['/', '@', '?', '#', ' ', '[', ']']) {
            return Err(bad("not a host name or IP address"));
        }
        if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not a host name or IP address"));
        }
        let text = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let authority = text
            .parse()
            .map_err(|_| bad("not a host name or IP address"))?;
        Ok(Endpoint::Custom(CustomEndpoint {
            host,
            port,
            authority,
        }))
    }

    /// The host to connect to and to name in TLS SNI.
    pub fn host(&self) -> &str {
        match self {
            Endpoint::Production => "api.push.apple.com",
            Endpoint::Sandbox => "api.sandbox.push.apple.com",
            Endpoint::Custom(c) => &c.host,
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        match self {
            Endpoint::Custom(c) => c.port,
            _ => 443,
        }
    }

    /// `host:port` for the `:authority` pseudo-header.
    pub fn authority(&self) -> http::uri::Authority {
        match self {
            Endpoint::Production => http::uri::Authority::from_static("api.push.apple.com:443"),
            Endpoint::Sandbox => {
                http::uri::Authority::from_static("api.sandbox.push.apple.com:443")
            }
            Endpoint::Custom(c) => c.authority.clone(),
        }
    }
}

impl FromStr for Endpoint {
    type Err = InvalidEndpoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| InvalidEndpoint {
            url: s.to_owned(),
            why,
        };
        match s {
            "production" => return Ok(Endpoint::Production),
            "sandbox" | "development" => return Ok(Endpoint::Sandbox),
            _ => {}
        }
        let uri: http::Uri = s.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("scheme must be https"));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(bad("must not have a path"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        match (host.as_str(), port) {
            ("api.push.apple.com", 443) => Ok(Endpoint::Production),
            ("api.sandbox.push.apple.com", 443) => Ok(Endpoint::Sandbox),
            _ => Endpoint::custom(host, port).map_err(|e| bad(e.why)),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_urls() {
        assert_eq!("production".parse(), Ok(Endpoint::Production));
        assert_eq!(
            "https://api.push.apple.com".parse(),
            Ok(Endpoint::Production)
        );
        assert_eq!(
            "https://api.sandbox.push.apple.com:443/".parse(),
            Ok(Endpoint::Sandbox)
        );
        let e: Endpoint = "https://127.0.0.1:8443".parse().unwrap();
        assert_eq!(e.host(), "127.0.0.1");
        assert_eq!(e.port(), 8443);
        assert_eq!(e.to_string(), "https://127.0.0.1:8443");
        let v6: Endpoint = "https://[::1]:9000".parse().unwrap();
        assert_eq!(v6.authority().as_str(), "[::1]:9000");
        assert!("http://x:1".parse::<Endpoint>().is_err());
        assert!("https://x:1/3/device".parse::<Endpoint>().is_err());
        assert!("nonsense".parse::<Endpoint>().is_err());
        assert!("https://x:0".parse::<Endpoint>().is_err());
    }

    #[test]
    fn custom_endpoints_are_validated() {
        assert_eq!(
            Endpoint::custom("127.0.0.1", 9)
                .unwrap()
                .authority()
                .as_str(),
            "127.0.0.1:9"
        );
        assert_eq!(
            Endpoint::custom("::1", 9).unwrap().authority().as_str(),
            "[::1]:9"
        );
        for (host, port) in [
            ("", 443),
            ("x", 0),
            ("a b", 1),
            ("a/b", 1),
            ("[::1]", 1),
            ("x:y", 1),
            ("user@host", 1),
        ] {
            assert!(Endpoint::custom(host, port).is_err(), "{host:?}:{port}");
        }
    }
}
