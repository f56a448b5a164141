//! The device list's search (`?q=`): a text found, ignoring case, in a device's UDID, serial
//! number or name, as the console's search box means it.

use magicpush_store::Device;

use super::paging::PagingError;

/// The longest search, in characters once trimmed: longer than any UDID, serial or name a
/// device reports, and a bound on the work one comparison costs.
pub const MAX_SEARCH_CHARS: usize = 128;

/// A search text, trimmed and lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    needle: String,
}

impl Search {
    /// `q` as the query gives it: trimmed, 1..=[`MAX_SEARCH_CHARS`] characters.
    pub fn parse(q: &str) -> Result<Self, PagingError> {
        let q = q.trim();
        let chars = q.chars().count();
        if chars == 0 || chars > MAX_SEARCH_CHARS {
            return Err(PagingError::Search { chars });
        }
        Ok(Search {
            needle: q.to_lowercase(),
        })
    }

    /// Whether the text is in `device`'s UDID, serial number or name, ignoring case.
    pub fn matches(&self, device: &Device) -> bool {
        let found = |text: &str| text.to_lowercase().contains(&self.needle);
        found(&device.udid)
            || device.info.serial_number.as_deref().is_some_and(found)
            || device.info.device_name.as_deref().is_some_and(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(udid: &str, serial: Option<&str>, name: Option<&str>) -> Device {
        let mut d = Device::new(udid);
        d.info.serial_number = serial.map(str::to_owned);
        d.info.device_name = name.map(str::to_owned);
        d
    }

    #[test]
    fn a_search_finds_the_udid_serial_or_name_ignoring_case() {
        let d = device(
            "00008030-001A2B3C4D5E802E",
            Some("F2LXK0ABCDEF"),
            Some("田中のiPhone"),
        );
        for q in [
            "001a2b",
            "  f2lxk0 ",
            "IPHONE",
            "田中",
            "00008030-001A2B3C4D5E802E",
        ] {
            assert!(Search::parse(q).unwrap().matches(&d), "{q:?}");
        }
        for q in ["MQ3D2J", "佐藤", "802F"] {
            assert!(!Search::parse(q).unwrap().matches(&d), "{q:?}");
        }
        let bare = device("U1", None, None);
        assert!(!Search::parse("F2L").unwrap().matches(&bare));
    }

    #[test]
    fn a_search_is_one_to_the_maximum_characters_once_trimmed() {
        assert!(Search::parse(&"あ".repeat(MAX_SEARCH_CHARS)).is_ok());
        for (q, chars) in [
            ("", 0),
            ("   ", 0),
            (&*"x".repeat(MAX_SEARCH_CHARS + 1), 129),
        ] {
            assert_eq!(
                Search::parse(q),
                Err(PagingError::Search { chars }),
                "{q:?}"
            );
        }
        let empty = Search::parse(" ").unwrap_err().to_string();
        assert!(empty.contains("leave q out"), "{empty}");
    }
}
