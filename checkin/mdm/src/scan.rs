//! The fast path for the plists devices send: an XML plist of dictionaries, arrays, strings,
//! data, booleans and integers (every check-in, an Idle report, a DeviceInformation result). It
//! is read in one pass over the bytes into the same [`plist::Dictionary`] the plist parser
//! would build, without the parser's event stream and without the separate structural check:
//! the scanner enforces the same nesting depth and value budget itself, counting as
//! [`super::limits`] does.
//!
//! The scanner accepts a strict subset of what the plist parser accepts and gives `None` for
//! anything else — comments, entities, CDATA, attributes on value tags, dates, reals, a
//! carriage return, a body over the limits — so the full path decides (and words the error
//! for) every body that is not plainly well-formed. That the two agree wherever the scanner
//! answers is checked by differential tests and by the `checkin_decode` fuzz target.

use base64::Engine as _;
use plist::{Dictionary, Value};

use super::limits::value_budget;
use super::MAX_DEPTH;

/// Reads `body` as an XML plist dictionary of the plain kinds, or `None` when it is anything
/// else (which the full parser then reads or refuses).
pub fn scan_xml(body: &[u8]) -> Option<Dictionary> {
    let mut s = Scanner {
        body,
        at: 0,
        budget: value_budget(body.len()),
    };
    s.skip_ws();
    if s.rest().starts_with(b"<?") {
        s.eat_one_of(DECLARATIONS)?;
        s.skip_ws();
    }
    if s.rest().starts_with(b"<!") {
        s.eat_one_of(&[DOCTYPE])?;
        s.skip_ws();
    }
    let wrapped = s.eat_plist_open()?;
    if wrapped {
        s.count()?;
    }
    s.skip_ws();
    s.count()?;
    let dict = s.dict(1)?;
    s.skip_ws();
    if wrapped {
        s.expect(b"</plist>")?;
        s.skip_ws();
    }
    (s.at == s.body.len()).then_some(dict)
}

struct Scanner<'a> {
    body: &'a [u8],
    at: usize,
    /// Elements still allowed (every start tag counts, as in the structural check).
    budget: usize,
}

impl<'a> Scanner<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.body[self.at..]
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n') = self.body.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.rest().starts_with(lit) {
            self.at += lit.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, lit: &[u8]) -> Option<()> {
        self.eat(lit).then_some(())
    }

    /// `<plist>` or `<plist version="1.0">` (true), no wrapper at all (false), or `None` for
    /// another plist tag (the parser's business).
    fn eat_plist_open(&mut self) -> Option<bool> {
        if !self.rest().starts_with(b"<plist") {
            return Some(false);
        }
        self.eat_one_of(&[b"<plist>", b"<plist version=\"1.0\">"])?;
        Some(true)
    }

    /// One of `literals`, or `None`.
    fn eat_one_of(&mut self, literals: &[&[u8]]) -> Option<()> {
        literals.iter().any(|lit| self.eat(lit)).then_some(())
    }

    /// The text up to the next `<`: plain characters only (no entity, no carriage return),
    /// valid UTF-8.
    fn text(&mut self) -> Option<&'a str> {
        let len = self.rest().iter().position(|&b| b == b'<')?;
        let raw = &self.rest()[..len];
        if raw.iter().any(|&b| matches!(b, b'&' | b'\r' | b'>' | 0)) {
            return None;
        }
        self.at += len;
        std::str::from_utf8(raw).ok()
    }

    /// `<tag>text</tag>` after its opening tag was eaten.
    fn content(&mut self, close: &[u8]) -> Option<&'a str> {
        let text = self.text()?;
        self.expect(close)?;
        Some(text)
    }

    /// One more element, if the budget allows it.
    fn count(&mut self) -> Option<()> {
        self.budget = self.budget.checked_sub(1)?;
        Some(())
    }

    /// A dictionary at nesting `depth` (the root is 1), its start tag counted.
    fn dict(&mut self, depth: usize) -> Option<Dictionary> {
        if self.eat(b"<dict/>") {
            return Some(Dictionary::new());
        }
        self.expect(b"<dict>")?;
        let mut dict = Dictionary::new();
        loop {
            self.skip_ws();
            if self.eat(b"</dict>") {
                return Some(dict);
            }
            self.count()?;
            let key = if self.eat(b"<key/>") {
                ""
            } else {
                self.expect(b"<key>")?;
                self.content(b"</key>")?
            };
            self.skip_ws();
            let value = self.value(depth)?;
            dict.insert(key.to_owned(), value);
        }
    }

    /// An array at nesting `depth`, its start tag counted.
    fn array(&mut self, depth: usize) -> Option<Vec<Value>> {
        if self.eat(b"<array/>") {
            return Some(Vec::new());
        }
        self.expect(b"<array>")?;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b"</array>") {
                return Some(items);
            }
            items.push(self.value(depth)?);
        }
    }

    /// A value inside a container at nesting `depth`.
    fn value(&mut self, depth: usize) -> Option<Value> {
        self.count()?;
        if self.rest().starts_with(b"<dict") {
            return self.nested(depth)?.dict(depth + 1).map(Value::Dictionary);
        }
        if self.rest().starts_with(b"<array") {
            return self.nested(depth)?.array(depth + 1).map(Value::Array);
        }
        self.scalar()
    }

    /// `self`, if a container may open below `depth`.
    fn nested(&mut self, depth: usize) -> Option<&mut Self> {
        (depth < MAX_DEPTH).then_some(self)
    }

    fn scalar(&mut self) -> Option<Value> {
        if self.eat(b"<string>") {
            return Some(Value::String(self.content(b"</string>")?.to_owned()));
        }
        if self.eat(b"<string/>") {
            return Some(Value::String(String::new()));
        }
        if self.eat(b"<data>") {
            let text = self.content(b"</data>")?;
            return decode_base64(text).map(Value::Data);
        }
        if self.eat(b"<true/>") {
            return Some(Value::Boolean(true));
        }
        if self.eat(b"<false/>") {
            return Some(Value::Boolean(false));
        }
        if self.eat(b"<integer>") {
            return integer(self.content(b"</integer>")?).map(Value::Integer);
        }
        None
    }
}

/// The XML declarations the scanner knows; any other goes to the parser, which checks its
/// attributes (a fuzzer found declarations the scanner skipped and the parser refused).
const DECLARATIONS: &[&[u8]] = &[
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    b"<?xml version=\"1.0\" encoding=\"utf-8\"?>",
    b"<?xml version=\"1.0\"?>",
];

/// Apple's property-list doctype, the only one the scanner knows.
const DOCTYPE: &[u8] = b"<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">";

/// Standard base64 with the whitespace the plist parser strips; `None` if it does not decode
/// (the full parser then words the error).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let engine = &base64::engine::general_purpose::STANDARD;
    if !text.bytes().any(|b| b.is_ascii_whitespace()) {
        return engine.decode(text).ok();
    }
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    engine.decode(compact).ok()
}

/// A decimal integer that fits an `i64` (anything else goes to the full parser).
fn integer(text: &str) -> Option<plist::Integer> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok().map(plist::Integer::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the plist parser makes of `body`, if a dictionary.
    fn full(body: &str) -> Option<Dictionary> {
        match Value::from_reader_xml(body.as_bytes()) {
            Ok(Value::Dictionary(d)) => Some(d),
            _ => None,
        }
    }

    fn agrees(body: &str) {
        let fast = scan_xml(body.as_bytes()).expect("the scanner reads it");
        assert_eq!(Some(fast), full(body), "{body}");
    }

    const HEAD: &str = concat!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" ",
        "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n",
        "<plist version=\"1.0\">\n"
    );

    fn doc(entries: &str) -> String {
        format!("{HEAD}<dict>\n{entries}</dict>\n</plist>\n")
    }

    #[test]
    fn reads_what_devices_send_as_the_parser_does() {
        agrees(&doc(concat!(
            "\t<key>MessageType</key>\n\t<string>TokenUpdate</string>\n",
            "\t<key>Token</key>\n\t<data>\n\tAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\t</data>\n",
            "\t<key>AwaitingConfiguration</key>\n\t<false/>\n",
            "\t<key>Flag</key><true/>\n",
            "\t<key>Count</key><integer>-42</integer>\n",
            "\t<key>Empty</key><string/>\n",
            "\t<key>Spaces</key><string>  an  iPhone </string>\n",
            "\t<key>Unicode</key><string>山田の iPad</string>\n",
            "\t<key/><string>empty key</string>\n",
            "\t<key>Token</key><data></data>\n",
        )));
        agrees("<dict><key>Status</key><string>Idle</string></dict>");
        agrees("<plist><dict/></plist>");
        agrees("<plist version=\"1.0\"><dict></dict></plist>  \n");
        agrees("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<plist><dict/></plist>");
        agrees(
            "  <?xml version=\"1.0\"?><plist><dict><key>a</key><string>b</string></dict></plist>",
        );
    }

    #[test]
    fn leaves_everything_else_to_the_parser() {
        for body in [
            doc("<key>A</key><string>AT&amp;T</string>"), // an entity
            doc("<key>A</key><string>a\r\nb</string>"),   // line ending normalisation
            doc("<!-- note --><key>A</key><string>b</string>"), // a comment
            doc("<key>A</key><string><![CDATA[x]]></string>"), // CDATA
            doc("<key>A</key><date>2024-01-01T00:00:00Z</date>"), // a date
            doc("<key>A</key><real>1.5</real>"),          // a real
            doc("<key>A</key><integer>0x10</integer>"),   // hex
            doc("<key>A</key><integer>99999999999999999999</integer>"), // over i64
            doc("<key>A</key><string a=\"1\">b</string>"), // an attribute
            doc("<key>A</key><data>!!</data>"),           // bad base64
            doc("<key>A</key>"),                          // no value
            doc("<key>A</key><string>b</key>"),           // mismatched close
            format!("{HEAD}<dict></dict></plist><x/>"),   // trailing content
            format!("{HEAD}<dict></dict>"),               // unclosed plist
            "<array/>".to_owned(),                        // not a dictionary
            "\u{feff}<dict/>".to_owned(),                 // a byte order mark
            "<!DOCTYPE plist [<!ENTITY a \"b\">]><dict/>".to_owned(),
        ] {
            assert_eq!(scan_xml(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn reads_nested_results_as_the_parser_does() {
        agrees(&doc(concat!(
            "<key>QueryResponses</key><dict>\n",
            "  <key>DeviceName</key><string>iPad</string>\n",
            "  <key>ServiceSubscriptions</key><array>\n",
            "    <dict><key>Slot</key><string>CTSubscriptionSlotOne</string>",
            "<key>IsRoaming</key><false/></dict>\n",
            "    <dict/>\n",
            "  </array>\n",
            "  <key>Empty</key><array/>\n",
            "  <key>Nested</key><array><array><integer>1</integer></array><string>x</string></array>\n",
            "</dict>\n",
        )));
    }

    #[test]
    fn nesting_and_size_stay_within_the_structural_limits() {
        let nest = |depth: usize| {
            // The root dictionary is level one; each array adds one.
            let inner = format!(
                "{}{}",
                "<array>".repeat(depth - 1),
                "</array>".repeat(depth - 1)
            );
            format!("<dict><key>A</key>{inner}</dict>")
        };
        agrees(&nest(MAX_DEPTH));
        let deep = nest(MAX_DEPTH + 1);
        assert_eq!(scan_xml(deep.as_bytes()), None);
        assert!(super::super::check_limits(deep.as_bytes()).is_err());
        // Exactly the structural check's budget of elements, then one more.
        let budget = value_budget(0);
        let body = |entries: usize| format!("<dict>{}</dict>", "<key/><true/>".repeat(entries));
        let fits = body((budget - 1) / 2);
        assert!(fits.len() / 8 < budget, "the budget is the minimum one");
        agrees(&fits);
        let over = body((budget - 1) / 2 + 1);
        assert_eq!(scan_xml(over.as_bytes()), None);
        assert!(super::super::check_limits(over.as_bytes()).is_err());
    }

    #[test]
    fn invalid_utf8_is_left_to_the_parser() {
        let mut body = b"<dict><key>A</key><string>".to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(b"</string></dict>");
        assert_eq!(scan_xml(&body), None);
    }

    /// Found by the `checkin_decode` fuzz target: bytes that are not UTF-8 inside the XML
    /// declaration, which the scanner skipped and the parser refuses.
    #[test]
    fn odd_bytes_in_skipped_markup_are_left_to_the_parser() {
        for (prefix, suffix) in [
            (
                &b"<?xml version=\"1."[..],
                &b"\" encoding=\"UTF-8\"?><dict/>"[..],
            ),
            (b"<!DOCTYPE plist ", b"><dict/>"),
            (b"<plist version=\"", b"\"><dict/></plist>"),
        ] {
            for odd in [&[0xffu8, 0xff][..], &[0], &[0x7f], &[0xc3, 0xa9]] {
                let body = [prefix, odd, suffix].concat();
                assert_eq!(scan_xml(&body), None, "{body:?}");
            }
        }
        // The second find: attributes the parser cannot read.
        let body = "<?xml versiing=\"UF-8\"?>\n<plist versi'on=\"0.0\">\n<dict/></plist>";
        assert_eq!(scan_xml(body.as_bytes()), None);
    }

    #[test]
    fn a_duplicate_key_keeps_the_parser_s_choice() {
        agrees("<dict><key>A</key><string>1</string><key>B</key><true/><key>A</key><string>2</string></dict>");
    }

    #[test]
    fn every_fixture_the_scanner_reads_matches_the_parser() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/plists");
        let mut read = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            if let Some(fast) = scan_xml(&body) {
                read += 1;
                let full = match Value::from_reader_xml(body.as_slice()) {
                    Ok(Value::Dictionary(d)) => d,
                    other => panic!("the parser disagrees: {other:?}"),
                };
                assert_eq!(fast, full);
            }
        }
        assert!(read >= 3, "the fixtures are read by the scanner ({read})");
    }
}
