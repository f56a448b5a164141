//! One page of the device list (`GET /v1/devices?limit=N[&cursor=C]`): the page size, the
//! cursor, and the page assembled from store pages read after the cursor.
//!
//! Pages come in UDID order. The cursor is the UDID of the last device a request examined,
//! so the next request resumes right after it: each device is on at most one page, and
//! following the cursors until there is none yields exactly the filtered list (devices
//! added or removed meanwhile are seen or not, as with the streamed list).
//!
//! A filter is applied while reading. A request examines at most [`scan_bound`] devices
//! whatever the filter matches, then answers with what it found and the cursor where it
//! stopped: a short or empty page with a cursor means "keep going", not "the end".
//!
//! Nothing here does I/O: [`PageAssembly`] says which store page to read next and takes
//! what the store answered, so the service drives it and the tests feed it by hand.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use magicpush_store::Device;

use super::listing::PAGE;

/// The largest `limit`: a page a browser renders at once.
pub const MAX_LIMIT: usize = 1_000;

/// A request examines at most this many devices per device it may return, so that a filter
/// matching one device in ten still fills a page in one request.
pub const SCAN_PER_LIMIT: usize = 10;

/// A request examines at least this many devices before it answers a short page, so that a
/// rare match is found in few requests (a 100,000-device fleet in 20) while one request
/// still reads a few store pages, not the fleet.
pub const SCAN_FLOOR: usize = 5_000;

/// The longest cursor accepted, in characters: far more than any UDID needs, and a bound on
/// what a client can make the server decode.
const MAX_CURSOR_CHARS: usize = 1_024;

/// What a cursor's text says before the UDID, so that text this server did not give is
/// told apart from a cursor (and a later format can be told apart from this one).
const CURSOR_TAG: &str = "after:";

/// Devices one request of `limit` examines at most: [`SCAN_PER_LIMIT`] × `limit`, or
/// [`SCAN_FLOOR`] if that is more. A filter that matches little answers short pages with a
/// cursor rather than reading the whole fleet in one request.
pub fn scan_bound(limit: PageLimit) -> usize {
    (SCAN_PER_LIMIT * limit.get()).max(SCAN_FLOOR)
}

/// A paged request that is not well-formed (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    /// `limit` is not a whole number in 1..=[`MAX_LIMIT`].
    #[error("limit must be a whole number from 1 to {MAX_LIMIT}, got {given:?}")]
    Limit {
        /// As sent.
        given: String,
    },
    /// `cursor` is not one this server gave.
    #[error("cursor {shown:?} is not a cursor this server gave: pass a page's next_cursor as it is, or leave cursor out to start from the first device")]
    Cursor {
        /// The start of what was sent.
        shown: String,
    },
    /// `q` is empty or too long once trimmed.
    #[error("q must be 1 to {} characters once trimmed, got {chars}{}", super::search::MAX_SEARCH_CHARS, if *chars == 0 { " (leave q out to list every device)" } else { "" })]
    Search {
        /// Its length in characters, trimmed.
        chars: usize,
    },
    /// A parameter that only goes with `limit`.
    #[error("{param} goes with paging: give limit=N (1 to {MAX_LIMIT}) too, or leave {param} out to stream the whole list")]
    NeedsLimit {
        /// The parameter.
        param: &'static str,
    },
}

/// The most devices one page holds: 1..=[`MAX_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(usize);

impl PageLimit {
    /// `limit` as the query gives it.
    pub fn parse(text: &str) -> Result<Self, PagingError> {
        match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(PageLimit(n)),
            _ => Err(PagingError::Limit {
                given: text.chars().take(32).collect(),
            }),
        }
    }

    /// The number.
    pub fn get(self) -> usize {
        self.0
    }
}

/// Where a page starts: after the device with this UDID. Opaque to clients: base64url of
/// [`CURSOR_TAG`] and the UDID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    after: String,
}

impl Cursor {
    /// The cursor of the page after `udid`.
    pub fn after(udid: impl Into<String>) -> Self {
        Cursor { after: udid.into() }
    }

    /// The UDID the page starts after.
    pub fn udid(&self) -> &str {
        &self.after
    }

    /// The text a client passes back.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_TAG}{}", self.after))
    }

    /// A cursor [`Cursor::encode`] made; anything else is [`PagingError::Cursor`].
    pub fn decode(text: &str) -> Result<Self, PagingError> {
        let malformed = || PagingError::Cursor {
            shown: text.chars().take(64).collect(),
        };
        if text.is_empty() || text.chars().count() > MAX_CURSOR_CHARS {
            return Err(malformed());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| malformed())?;
        let text = String::from_utf8(bytes).map_err(|_| malformed())?;
        match text.strip_prefix(CURSOR_TAG) {
            Some(udid) if !udid.is_empty() => Ok(Cursor::after(udid)),
            _ => Err(malformed()),
        }
    }
}

/// A store read [`PageAssembly`] asks for: at most `count` devices after `after` (from the
/// first with `None`), in UDID order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read<'a> {
    /// The last UDID examined so far.
    pub after: Option<&'a str>,
    /// How many devices to read.
    pub count: usize,
}

/// An assembled page: the devices shown and, unless the fleet ended, where the next starts.
#[derive(Debug)]
pub struct Page {
    /// The devices the filter showed, in UDID order.
    pub devices: Vec<Device>,
    /// The next page's cursor; `None` once the last device has been examined.
    pub next: Option<Cursor>,
}

/// One page being assembled from store reads after a cursor.
///
/// Each read asks for one device more than it examines: that device tells whether the
/// fleet goes on, so the last page says so (no cursor) instead of leaving an empty page to
/// find out. Reads start at the devices still wanted and grow with what was examined, up to
/// a store page ([`PAGE`]): an unfiltered page costs one read of `limit + 1` devices.
#[derive(Debug)]
pub struct PageAssembly {
    limit: usize,
    /// Devices that may still be examined.
    budget: usize,
    examined: usize,
    /// The last UDID examined (at first, the cursor's).
    after: Option<String>,
    found: Vec<Device>,
    /// Devices the pending read examines (its count less the one that looks ahead).
    chunk: usize,
    /// Set when the page is complete: whether devices follow the last one examined.
    more: Option<bool>,
}

impl PageAssembly {
    /// A page of at most `limit` devices after `cursor` (from the first without one),
    /// examining at most [`scan_bound`] devices.
    pub fn new(limit: PageLimit, cursor: Option<Cursor>) -> Self {
        PageAssembly {
            limit: limit.get(),
            budget: scan_bound(limit),
            examined: 0,
            after: cursor.map(|c| c.after),
            found: Vec::new(),
            chunk: 0,
            more: None,
        }
    }

    /// The next store read, or `None` once the page is complete.
    pub fn next_read(&mut self) -> Option<Read<'_>> {
        if self.more.is_some() {
            return None;
        }
        let wanted = self.limit - self.found.len();
        self.chunk = wanted.max(self.examined).min(PAGE).min(self.budget);
        Some(Read {
            after: self.after.as_deref(),
            count: self.chunk + 1,
        })
    }

    /// What the store answered to [`PageAssembly::next_read`]: each device is examined in
    /// order and kept if `shows` it, until the page is full, the bound is reached or the
    /// fleet ends.
    pub fn take(&mut self, read: Vec<Device>, mut shows: impl FnMut(&Device) -> bool) {
        let len = read.len();
        if len == 0 {
            self.more = Some(false);
            return;
        }
        for (i, device) in read.into_iter().enumerate().take(self.chunk) {
            self.examined += 1;
            self.budget -= 1;
            self.after = Some(device.udid.clone());
            if shows(&device) {
                self.found.push(device);
            }
            let follows = i + 1 < len;
            if !follows || self.found.len() == self.limit || self.budget == 0 {
                self.more = Some(follows);
                return;
            }
        }
    }

    /// The page: what was found and, if devices follow, the cursor after the last examined.
    pub fn finish(self) -> Page {
        let next = match (self.more, self.after) {
            (Some(false), _) | (_, None) => None,
            (_, Some(after)) => Some(Cursor::after(after)),
        };
        Page {
            devices: self.found,
            next,
        }
    }

    /// Devices examined so far.
    pub fn examined(&self) -> usize {
        self.examined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(n: usize) -> Vec<Device> {
        (0..n).map(|i| Device::new(format!("U{i:06}"))).collect()
    }

    /// Answers `read` from `fleet` (sorted by UDID) as a store would.
    fn answer(fleet: &[Device], read: Read<'_>) -> Vec<Device> {
        let start = match read.after {
            Some(after) => fleet.partition_point(|d| d.udid.as_str() <= after),
            None => 0,
        };
        fleet[start..].iter().take(read.count).cloned().collect()
    }

    /// One page over `fleet`, with the number of reads it took.
    fn page(
        fleet: &[Device],
        limit: usize,
        cursor: Option<Cursor>,
        shows: impl Fn(&Device) -> bool,
    ) -> (Page, usize) {
        let mut assembly = PageAssembly::new(PageLimit::parse(&limit.to_string()).unwrap(), cursor);
        let mut reads = 0;
        while let Some(read) = assembly.next_read() {
            reads += 1;
            let devices = answer(fleet, read);
            assembly.take(devices, &shows);
        }
        (assembly.finish(), reads)
    }

    /// Every page from the first, until one has no cursor.
    fn walk(fleet: &[Device], limit: usize, shows: impl Fn(&Device) -> bool) -> Vec<Page> {
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let (p, _) = page(fleet, limit, cursor, &shows);
            cursor = p.next.clone();
            pages.push(p);
            if cursor.is_none() {
                return pages;
            }
            assert!(pages.len() < 100_000, "the walk does not end");
        }
    }

    fn udids(pages: &[Page]) -> Vec<String> {
        pages
            .iter()
            .flat_map(|p| p.devices.iter().map(|d| d.udid.clone()))
            .collect()
    }

    #[test]
    fn a_cursor_is_opaque_text_that_comes_back_as_it_went() {
        for udid in ["U000001", "00008030-001A2B3C4D5E802E", "田中/の?iPhone&x=1"] {
            let text = Cursor::after(udid).encode();
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "URL-safe: {text}"
            );
            assert_eq!(Cursor::decode(&text).unwrap().udid(), udid);
        }
    }

    #[test]
    fn text_this_server_did_not_give_is_not_a_cursor() {
        let untagged = URL_SAFE_NO_PAD.encode("U000001");
        let empty_udid = URL_SAFE_NO_PAD.encode(CURSOR_TAG);
        let not_utf8 = URL_SAFE_NO_PAD.encode([0xff, 0xfe]);
        let long = "A".repeat(MAX_CURSOR_CHARS + 1);
        for bad in [
            "",
            "not base64!",
            "a+b/",
            untagged.as_str(),
            empty_udid.as_str(),
            not_utf8.as_str(),
            long.as_str(),
        ] {
            let err = Cursor::decode(bad).unwrap_err();
            assert!(matches!(err, PagingError::Cursor { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("next_cursor"), "{err}");
        }
    }

    #[test]
    fn a_limit_is_a_whole_number_from_one_to_the_maximum() {
        assert_eq!(PageLimit::parse("1").unwrap().get(), 1);
        assert_eq!(PageLimit::parse("1000").unwrap().get(), MAX_LIMIT);
        for bad in [
            "0",
            "1001",
            "-1",
            "",
            "ten",
            "1.5",
            "99999999999999999999999",
        ] {
            let err = PageLimit::parse(bad).unwrap_err();
            assert!(err.to_string().contains("1 to 1000"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_scan_bound_is_ten_per_device_shown_and_never_below_the_floor() {
        let bound = |n: usize| scan_bound(PageLimit::parse(&n.to_string()).unwrap());
        assert_eq!(bound(1), SCAN_FLOOR);
        assert_eq!(bound(50), SCAN_FLOOR);
        assert_eq!(bound(1_000), 10_000);
    }

    #[test]
    fn unfiltered_pages_hold_every_device_once_in_order_and_the_last_has_no_cursor() {
        let devices = fleet(303);
        let pages = walk(&devices, 7, |_| true);
        let all: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
        assert_eq!(udids(&pages), all);
        assert_eq!(pages.len(), 303usize.div_ceil(7));
        assert!(pages.iter().all(|p| !p.devices.is_empty()));

        // A fleet a whole number of pages long: the last full page already says it is the last.
        let pages = walk(&fleet(21), 7, |_| true);
        assert_eq!(pages.len(), 3);
    }

    #[test]
    fn an_unfiltered_page_is_one_read_of_a_device_more_than_it_shows() {
        let devices = fleet(10_000);
        let mut assembly = PageAssembly::new(PageLimit::parse("50").unwrap(), None);
        let read = assembly.next_read().unwrap();
        assert_eq!(read.count, 51);
        let answered = answer(&devices, read);
        assembly.take(answered, |_| true);
        assert!(assembly.next_read().is_none());
        assert_eq!(assembly.examined(), 50);
        let page = assembly.finish();
        assert_eq!(page.devices.len(), 50);
        assert_eq!(page.next.unwrap().udid(), "U000049");
    }

    #[test]
    fn a_filter_is_applied_across_reads_and_pages() {
        let devices = fleet(2_000);
        let every_third = |d: &Device| d.udid[1..].parse::<usize>().unwrap() % 3 == 0;
        let pages = walk(&devices, 7, every_third);
        let expected: Vec<String> = devices
            .iter()
            .filter(|d| every_third(d))
            .map(|d| d.udid.clone())
            .collect();
        assert_eq!(udids(&pages), expected);
        assert!(pages.iter().all(|p| p.devices.len() <= 7));
    }

    #[test]
    fn a_filter_matching_nothing_stops_at_the_bound_with_a_cursor() {
        let devices = fleet(SCAN_FLOOR * 2 + 10);
        let (first, reads) = page(&devices, 1, None, |_| false);
        assert!(first.devices.is_empty());
        let next = first.next.expect("a cursor: keep going");
        assert_eq!(next.udid(), format!("U{:06}", SCAN_FLOOR - 1));
        assert!(reads <= 1 + SCAN_FLOOR.div_ceil(PAGE) + 12, "{reads} reads");

        let pages = walk(&devices, 1, |_| false);
        assert_eq!(pages.len(), 3, "two bounded scans, then the rest");
        assert!(pages.iter().all(|p| p.devices.is_empty()));
    }

    #[test]
    fn a_rare_match_at_the_end_is_found_after_short_pages() {
        let devices = fleet(SCAN_FLOOR + 100);
        let last = devices.last().unwrap().udid.clone();
        let pages = walk(&devices, 10, |d| d.udid == last);
        assert_eq!(udids(&pages), vec![last]);
        assert!(pages.last().unwrap().next.is_none());
    }

    #[test]
    fn an_empty_fleet_or_a_cursor_past_the_end_is_an_empty_last_page() {
        let (p, reads) = page(&[], 5, None, |_| true);
        assert!(p.devices.is_empty() && p.next.is_none());
        assert_eq!(reads, 1);
        let (p, _) = page(&fleet(3), 5, Some(Cursor::after("Z")), |_| true);
        assert!(p.devices.is_empty() && p.next.is_none());
    }

    #[test]
    fn a_cursor_between_udids_resumes_after_it() {
        let (p, _) = page(&fleet(10), 3, Some(Cursor::after("U000004x")), |_| true);
        let got: Vec<&str> = p.devices.iter().map(|d| d.udid.as_str()).collect();
        assert_eq!(got, ["U000005", "U000006", "U000007"]);
        assert_eq!(p.next.unwrap().udid(), "U000007");
    }
}
