//! What a simulated device reads from its enrollment profile (`GET /enroll/{id}`, signed or
//! a plain plist): the SCEP payload's `Challenge`, `Subject` and `URL`, and the MDM payload's
//! `Topic`.

use plist::{Dictionary, Value};

/// The SCEP payload's type.
const SCEP_PAYLOAD: &str = "com.apple.security.scep";
/// The MDM payload's type.
const MDM_PAYLOAD: &str = "com.apple.mdm";

/// What the fleet needs of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnrollmentProfile {
    /// The one-time SCEP challenge.
    pub(crate) challenge: String,
    /// The CN of the SCEP `Subject`, `None` without one.
    pub(crate) common_name: Option<String>,
    /// The path of the SCEP `URL` (the device sends it to the node it talks to).
    pub(crate) scep_path: String,
    /// The MDM payload's push topic.
    pub(crate) topic: String,
}

/// A profile the fleet cannot use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProfileError {
    /// Not a signed profile or a plist.
    #[error("the profile: {0}")]
    Content(String),
    /// The plist is not a profile.
    #[error("the profile's plist: {0}")]
    Plist(#[from] plist::Error),
    /// A payload or key is missing or of the wrong type.
    #[error("the profile has no {0}")]
    Missing(&'static str),
}

impl EnrollmentProfile {
    /// Reads the body of `GET /enroll/{id}`.
    pub(crate) fn read(body: &[u8]) -> Result<EnrollmentProfile, ProfileError> {
        let plist = magicpush_profile::content_of(body)
            .map_err(|e| ProfileError::Content(e.to_string()))?;
        let root: Dictionary = plist::from_bytes(&plist)?;
        let payloads = root
            .get("PayloadContent")
            .and_then(Value::as_array)
            .ok_or(ProfileError::Missing("PayloadContent array"))?;
        let payload = |kind: &str| {
            payloads
                .iter()
                .filter_map(Value::as_dictionary)
                .find(|p| p.get("PayloadType").and_then(Value::as_string) == Some(kind))
        };
        let scep = payload(SCEP_PAYLOAD)
            .ok_or(ProfileError::Missing("com.apple.security.scep payload"))?
            .get("PayloadContent")
            .and_then(Value::as_dictionary)
            .ok_or(ProfileError::Missing("SCEP PayloadContent"))?;
        let mdm = payload(MDM_PAYLOAD).ok_or(ProfileError::Missing("com.apple.mdm payload"))?;
        let text = |d: &Dictionary, key: &'static str| {
            d.get(key)
                .and_then(Value::as_string)
                .map(str::to_owned)
                .ok_or(ProfileError::Missing(key))
        };
        let url = text(scep, "URL")?;
        Ok(EnrollmentProfile {
            challenge: text(scep, "Challenge")?,
            common_name: scep.get("Subject").and_then(common_name),
            scep_path: path_of(&url).to_owned(),
            topic: text(mdm, "Topic")?,
        })
    }

    /// The CN the device requests: the Subject's, its `%…%` variables (as
    /// `%HardwareUUID%`) replaced by the device's UDID; the UDID without a Subject CN.
    pub(crate) fn common_name_for(&self, udid: &str) -> String {
        let Some(cn) = &self.common_name else {
            return udid.to_owned();
        };
        let mut out = String::new();
        let mut rest = cn.as_str();
        while let Some(start) = rest.find('%') {
            let Some(len) = rest[start + 1..].find('%') else {
                break;
            };
            out.push_str(&rest[..start]);
            out.push_str(udid);
            rest = &rest[start + len + 2..];
        }
        out.push_str(rest);
        out
    }
}

/// The CN of an X.500 name as a profile writes it: an array of RDNs, each an array of
/// `[type, value]` pairs.
fn common_name(subject: &Value) -> Option<String> {
    subject
        .as_array()?
        .iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_array)
        .find_map(|pair| match pair.as_slice() {
            [kind, value] if kind.as_string() == Some("CN") => value.as_string().map(str::to_owned),
            _ => None,
        })
}

/// The path (and query) of an absolute URL; the text itself when it is already a path.
pub(crate) fn path_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadContent</key><array>
    <dict>
      <key>PayloadType</key><string>com.apple.security.scep</string>
      <key>PayloadContent</key><dict>
        <key>URL</key><string>http://127.0.0.1:8080/scep</string>
        <key>Challenge</key><string>c-123</string>
        <key>Subject</key><array><array><array><string>O</string><string>Acme</string></array></array>
          <array><array><string>CN</string><string>device-%HardwareUUID%</string></array></array></array>
      </dict>
    </dict>
    <dict>
      <key>PayloadType</key><string>com.apple.mdm</string>
      <key>Topic</key><string>com.apple.mgmt.External.abc</string>
      <key>ServerURL</key><string>http://127.0.0.1:8080/mdm/server</string>
    </dict>
  </array>
</dict></plist>"#;

    #[test]
    fn a_plain_profile_is_read() {
        let p = EnrollmentProfile::read(PROFILE.as_bytes()).unwrap();
        assert_eq!(p.challenge, "c-123");
        assert_eq!(p.scep_path, "/scep");
        assert_eq!(p.topic, "com.apple.mgmt.External.abc");
        assert_eq!(p.common_name.as_deref(), Some("device-%HardwareUUID%"));
        assert_eq!(p.common_name_for("U-1"), "device-U-1");
        let plain = EnrollmentProfile {
            common_name: None,
            ..p
        };
        assert_eq!(plain.common_name_for("U-1"), "U-1");
    }

    #[test]
    fn a_profile_without_scep_is_refused() {
        let no_scep = PROFILE.replace("com.apple.security.scep", "com.apple.other");
        assert!(matches!(
            EnrollmentProfile::read(no_scep.as_bytes()),
            Err(ProfileError::Missing(_))
        ));
        assert!(EnrollmentProfile::read(b"not a profile").is_err());
    }

    #[test]
    fn paths_of_urls() {
        assert_eq!(path_of("https://h:1/scep?x=1"), "/scep?x=1");
        assert_eq!(path_of("http://h"), "/");
        assert_eq!(path_of("http://127.0.0.1:9/enroll/abc"), "/enroll/abc");
        assert_eq!(path_of("/enroll/abc"), "/enroll/abc");
    }
}
