//! The few XML property-list shapes a simulated device sends, written directly (no document
//! tree: the fleet sends hundreds of thousands of them), and the one answer it reads, the
//! command the server hands out after a report.

use base64::Engine as _;

const HEADER: &str = concat!(
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
    "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" ",
    "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n",
    "<plist version=\"1.0\">\n<dict>\n"
);
const FOOTER: &str = "</dict>\n</plist>\n";

/// Builds one XML plist whose root is a dictionary. Keys are written in call order.
pub(crate) struct PlistWriter {
    out: String,
}

impl PlistWriter {
    /// Starts the root dictionary; `capacity` is a hint in bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity.max(HEADER.len() + FOOTER.len()));
        out.push_str(HEADER);
        PlistWriter { out }
    }

    fn key(&mut self, key: &str) {
        self.out.push_str("<key>");
        escape_into(&mut self.out, key);
        self.out.push_str("</key>\n");
    }

    /// `<key>key</key><string>value</string>`.
    pub(crate) fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        self.out.push_str("<string>");
        escape_into(&mut self.out, value);
        self.out.push_str("</string>\n");
        self
    }

    /// `<key>key</key><data>base64</data>`.
    pub(crate) fn data(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.key(key);
        self.out.push_str("<data>");
        base64::engine::general_purpose::STANDARD.encode_string(value, &mut self.out);
        self.out.push_str("</data>\n");
        self
    }

    /// `<key>key</key><true/>` or `<false/>`.
    pub(crate) fn boolean(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out
            .push_str(if value { "<true/>\n" } else { "<false/>\n" });
        self
    }

    /// Opens a nested dictionary under `key`; close it with [`PlistWriter::end_dict`].
    pub(crate) fn begin_dict(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.out.push_str("<dict>\n");
        self
    }

    /// Closes the dictionary opened last.
    pub(crate) fn end_dict(&mut self) -> &mut Self {
        self.out.push_str("</dict>\n");
        self
    }

    /// Closes the root dictionary and returns the document.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.push_str(FOOTER);
        self.out.into_bytes()
    }
}

fn escape_into(out: &mut String, text: &str) {
    if !text.contains(['&', '<', '>']) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// The command in a server's answer to a report: its `CommandUUID` and `RequestType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandRef {
    pub(crate) uuid: String,
    pub(crate) request_type: String,
}

/// Reads the command out of a server answer; `Ok(None)` for an empty body (nothing queued).
///
/// The common case — an XML plist whose `CommandUUID` and `RequestType` are plain strings — is
/// read by scanning; anything else (binary plists, entities) goes through the `plist` crate.
pub(crate) fn command_of(body: &[u8]) -> Result<Option<CommandRef>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let scanned = std::str::from_utf8(body).ok().and_then(|text| {
        let uuid = string_after_key(text, "CommandUUID")?;
        let request_type = string_after_key(text, "RequestType")?;
        Some(CommandRef {
            uuid: uuid.to_owned(),
            request_type: request_type.to_owned(),
        })
    });
    if let Some(found) = scanned {
        return Ok(Some(found));
    }
    let dict: plist::Dictionary =
        plist::from_bytes(body).map_err(|e| format!("answer is not a plist dictionary: {e}"))?;
    let uuid = dict
        .get("CommandUUID")
        .and_then(plist::Value::as_string)
        .ok_or("answer has no CommandUUID string")?;
    let request_type = dict
        .get("Command")
        .and_then(plist::Value::as_dictionary)
        .and_then(|c| c.get("RequestType"))
        .and_then(plist::Value::as_string)
        .ok_or("answer has no Command.RequestType string")?;
    Ok(Some(CommandRef {
        uuid: uuid.to_owned(),
        request_type: request_type.to_owned(),
    }))
}

/// The text of `<string>` right after `<key>key</key>`, if it needs no unescaping.
fn string_after_key<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let marker = format!("<key>{key}</key>");
    let rest = &text[text.find(&marker)? + marker.len()..];
    let rest = rest.trim_start().strip_prefix("<string>")?;
    let value = &rest[..rest.find("</string>")?];
    (!value.contains('&')).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_plist_the_plist_crate_reads_back() {
        let mut w = PlistWriter::new(0);
        w.string("MessageType", "Authenticate")
            .string("DeviceName", "R&D <iPad> 営業")
            .data("Token", &[0, 1, 2, 254, 255])
            .boolean("AwaitingConfiguration", false)
            .begin_dict("QueryResponses")
            .string("OSVersion", "18.5")
            .boolean("IsSupervised", true)
            .end_dict();
        let doc = w.finish();
        let dict: plist::Dictionary = plist::from_bytes(&doc).unwrap();
        assert_eq!(dict["MessageType"].as_string(), Some("Authenticate"));
        assert_eq!(dict["DeviceName"].as_string(), Some("R&D <iPad> 営業"));
        assert_eq!(dict["Token"].as_data(), Some(&[0u8, 1, 2, 254, 255][..]));
        assert_eq!(dict["AwaitingConfiguration"].as_boolean(), Some(false));
        let q = dict["QueryResponses"].as_dictionary().unwrap();
        assert_eq!(q["OSVersion"].as_string(), Some("18.5"));
        assert_eq!(q["IsSupervised"].as_boolean(), Some(true));
    }

    #[test]
    fn reads_the_command_by_scanning_or_parsing() {
        let mut command = plist::Dictionary::new();
        command.insert("RequestType".into(), "DeviceInformation".into());
        let mut d = plist::Dictionary::new();
        d.insert("Command".into(), plist::Value::Dictionary(command));
        d.insert("CommandUUID".into(), "ABC-123".into());
        let want = CommandRef {
            uuid: "ABC-123".into(),
            request_type: "DeviceInformation".into(),
        };

        let mut xml = Vec::new();
        plist::Value::Dictionary(d.clone())
            .to_writer_xml(&mut xml)
            .unwrap();
        assert_eq!(command_of(&xml).unwrap(), Some(want.clone()));

        let mut binary = Vec::new();
        plist::Value::Dictionary(d)
            .to_writer_binary(&mut binary)
            .unwrap();
        assert_eq!(command_of(&binary).unwrap(), Some(want));

        assert_eq!(command_of(b"").unwrap(), None);
        assert_eq!(command_of(b" \n").unwrap(), None);
        assert!(command_of(b"<html>oops</html>").is_err());
    }
}
