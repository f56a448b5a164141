//! What the server needs to hand out enrollment profiles: its public address (`--public-url`,
//! the URLs a profile names), the profile signer (`--profile-signing-cert/--profile-signing-key`,
//! or the server's TLS certificate and key), and the server's TLS CA to include as a root
//! payload (`--profile-include-server-ca`). The profile itself is built and signed by
//! [`magicpush_profile`].

use magicpush_profile::{EnrollmentProfile, ProfileError, ProfileSigner};
use magicpush_scep::DeviceCa;

/// `--public-url`: the scheme, host, optional port and optional path prefix devices reach this
/// server at, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

/// Why a `--public-url` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--public-url {url:?}: {why}")]
pub struct PublicUrlError {
    url: String,
    why: &'static str,
}

impl PublicUrl {
    /// Parses `text`: `https://host[:port][/prefix]` (or `http://` for a test behind no TLS);
    /// no user info, query or fragment.
    pub fn parse(text: &str) -> Result<PublicUrl, PublicUrlError> {
        let err = |why| PublicUrlError {
            url: text.to_owned(),
            why,
        };
        let uri: http::Uri = text
            .parse()
            .map_err(|_| err("not a URL (e.g. https://mdm.example.com)"))?;
        match uri.scheme_str() {
            Some("https") | Some("http") => {}
            _ => {
                return Err(err(
                    "the scheme must be https:// (devices refuse anything else)",
                ))
            }
        }
        let Some(authority) = uri.authority() else {
            return Err(err("no host"));
        };
        if authority.as_str().contains('@') {
            return Err(err("user info is not allowed"));
        }
        if authority.host().is_empty() {
            return Err(err("no host"));
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(err("a query or fragment is not allowed"));
        }
        let path = uri.path().trim_end_matches('/');
        Ok(PublicUrl(format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("https"),
            authority.as_str().to_ascii_lowercase(),
            path
        )))
    }

    /// Whether the URL is plain `http://` (devices need https; tests and loopback only).
    pub fn is_plain_http(&self) -> bool {
        self.0.starts_with("http://")
    }

    /// `path` (starting with `/`) under this URL.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Enrollment profiles as this server writes them.
#[derive(Debug)]
pub struct EnrollmentProfiles {
    public_url: PublicUrl,
    signer: Option<ProfileSigner>,
    server_ca_der: Option<Vec<u8>>,
}

impl EnrollmentProfiles {
    /// Profiles naming `public_url`, signed with `signer` when given, with `server_ca_der` as
    /// a root payload when given.
    pub fn new(
        public_url: PublicUrl,
        signer: Option<ProfileSigner>,
        server_ca_der: Option<Vec<u8>>,
    ) -> Self {
        EnrollmentProfiles {
            public_url,
            signer,
            server_ca_der,
        }
    }

    /// The public URL.
    pub fn public_url(&self) -> &PublicUrl {
        &self.public_url
    }

    /// Whether profiles are signed.
    pub fn signed(&self) -> bool {
        self.signer.is_some()
    }

    /// The URL of invitation `id`.
    pub fn invitation_url(&self, id: &str) -> String {
        self.public_url.join(&format!("/enroll/{id}"))
    }

    /// A profile for tenant `topic` (named `name`) with SCEP challenge `challenge` for the
    /// device CA `ca`: signed when there is a signer.
    pub fn profile(
        &self,
        topic: &str,
        name: Option<&str>,
        challenge: &str,
        ca: &DeviceCa,
    ) -> Result<Vec<u8>, ProfileError> {
        let organization = name.unwrap_or("magicpush");
        let display_name = format!("{organization} device management");
        // One identifier per tenant: installing a new profile of the same tenant replaces
        // the old one rather than stacking a second MDM payload.
        let identifier = format!("com.magicpush.enrollment.{}", identifier_part(topic));
        let server_url = self.public_url.join("/mdm/server");
        let check_in_url = self.public_url.join("/mdm/checkin");
        let scep_url = self.public_url.join("/scep");
        let plist = magicpush_profile::render(&EnrollmentProfile {
            display_name: &display_name,
            organization,
            identifier: &identifier,
            topic,
            server_url: &server_url,
            check_in_url: &check_in_url,
            scep_url: &scep_url,
            challenge,
            subject_common_name: "magicpush device",
            ca_certificate_der: ca.certificate_der(),
            server_ca_der: self.server_ca_der.as_deref(),
        });
        match &self.signer {
            Some(signer) => signer.sign(&plist),
            None => Ok(plist),
        }
    }
}

/// The topic's last dot-separated part (the UUID of `com.apple.mgmt.External.<uuid>`), kept to
/// the characters a payload identifier takes.
fn identifier_part(topic: &str) -> String {
    let last = topic.rsplit('.').next().unwrap_or(topic);
    let kept: String = last
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if kept.is_empty() {
        "default".into()
    } else {
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_checked_and_normalised() {
        let url = PublicUrl::parse("https://MDM.example.com:8443/prefix/").unwrap();
        assert_eq!(url.as_str(), "https://mdm.example.com:8443/prefix");
        assert_eq!(
            url.join("/scep"),
            "https://mdm.example.com:8443/prefix/scep"
        );
        assert!(!url.is_plain_http());
        assert!(PublicUrl::parse("http://127.0.0.1:8080")
            .unwrap()
            .is_plain_http());
        for bad in [
            "mdm.example.com",
            "ftp://mdm.example.com",
            "https://",
            "https://user:pw@mdm.example.com",
            "https://mdm.example.com/?a=b",
            "https://mdm.example.com/#x",
            "",
            "https://mdm example.com",
        ] {
            let e = PublicUrl::parse(bad).unwrap_err();
            assert!(e.to_string().contains("--public-url"), "{bad}: {e}");
        }
    }

    #[test]
    fn identifiers_keep_the_topics_uuid() {
        assert_eq!(
            identifier_part("com.apple.mgmt.External.1b2c-3D"),
            "1b2c-3D"
        );
        assert_eq!(identifier_part("../.."), "default");
    }
}
