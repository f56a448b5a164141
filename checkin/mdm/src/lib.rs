//! MDM protocol messages, decoded and encoded without I/O.
//!
//! - [`decode`] takes a request body (XML or binary plist) and returns a [`Message`]: a
//!   [`Checkin`] when `MessageType` is present, a [`Report`] when `Status` is present.
//!   [`decode_checkin`] and [`decode_report`] serve the dedicated endpoints.
//! - The plain XML bodies devices send are read by a one-pass scanner ([`scan_xml`]); every
//!   other body goes to the plist parser after the structural checks.
//! - Every failure is a [`DecodeError`] whose text says what is wrong; the HTTP layer answers
//!   `400` with it. No input makes these functions panic.
//! - [`Command`] encodes a queued command into the XML plist a device receives.

mod checkin;
mod command;
mod dict;
mod error;
pub mod json_values;
mod limits;
mod report;
mod scan;
mod secret;

use std::io::Cursor;

use plist::Value;

pub use checkin::{
    Authenticate, CheckOut, Checkin, GetBootstrapToken, SetBootstrapToken, TokenUpdate, UserChannel,
};
pub use command::{
    bootstrap_token_response, with_unlock_token, Command, DEVICE_INFORMATION,
    DEVICE_INFORMATION_QUERIES,
};
pub use dict::{MAX_DEVICE_ID, MAX_PUSH_MAGIC, MAX_TOKEN, MAX_TOPIC};
pub use error::DecodeError;
pub use limits::{MAX_DEPTH, MAX_VALUES};
pub use report::{DeviceInfo, ErrorChainItem, Report, Status};
pub use scan::scan_xml;
pub use secret::Secret;

/// A decoded request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A check-in (`MessageType` present).
    Checkin(Checkin),
    /// A command report (`Status` present).
    Report(Report),
}

/// Decodes a check-in or a command report, dispatching on the keys present.
pub fn decode(body: &[u8]) -> Result<Message, DecodeError> {
    let dict = parse_dictionary(body)?;
    match (
        dict.contains_key("MessageType"),
        dict.contains_key("Status"),
    ) {
        (true, true) => Err(DecodeError::AmbiguousKind),
        (true, false) => Checkin::from_dict(&dict).map(Message::Checkin),
        (false, true) => Report::from_dict(dict).map(Message::Report),
        (false, false) => Err(DecodeError::UnknownKind),
    }
}

/// Decodes a check-in (`PUT /mdm/checkin`); a command report is an error.
pub fn decode_checkin(body: &[u8]) -> Result<Checkin, DecodeError> {
    match decode(body)? {
        Message::Checkin(c) => Ok(c),
        Message::Report(_) => Err(DecodeError::WrongEndpoint {
            expected: "check-in",
            got: "command report",
        }),
    }
}

/// Decodes a command report (`PUT /mdm/server`); a check-in is an error.
pub fn decode_report(body: &[u8]) -> Result<Report, DecodeError> {
    match decode(body)? {
        Message::Report(r) => Ok(r),
        Message::Checkin(_) => Err(DecodeError::WrongEndpoint {
            expected: "command report",
            got: "check-in",
        }),
    }
}

/// The structural checks [`decode`] makes before parsing (nesting depth, value count, a
/// binary plist's object graph), on their own: for callers that parse plists themselves, and
/// for fuzzing.
pub fn check_limits(body: &[u8]) -> Result<(), DecodeError> {
    if body.starts_with(b"bplist") {
        limits::check_binary(body)
    } else {
        limits::check_xml(body)
    }
}

/// Parses an XML or binary plist (never the ASCII format) whose top level is a dictionary.
pub(crate) fn parse_dictionary(body: &[u8]) -> Result<plist::Dictionary, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::Empty);
    }
    let binary = body.starts_with(b"bplist");
    if !binary {
        if let Some(dict) = scan::scan_xml(body) {
            return Ok(dict);
        }
    }
    let format = if binary { "binary" } else { "XML" };
    if binary {
        limits::check_binary(body)?;
    } else {
        limits::check_xml(body)?;
    }
    // Defence in depth: a parser bug must become a 400, not a dead request task.
    let parsed = std::panic::catch_unwind(|| {
        if binary {
            Value::from_reader(Cursor::new(body))
        } else {
            Value::from_reader_xml(body)
        }
    });
    let value = match parsed {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return Err(DecodeError::NotAPlist {
                format,
                detail: e.to_string(),
            })
        }
        Err(_) => {
            return Err(DecodeError::NotAPlist {
                format,
                detail: "the plist parser failed on this input".into(),
            })
        }
    };
    match value {
        Value::Dictionary(d) => Ok(d),
        other => Err(DecodeError::NotADictionary {
            got: dict::type_name(&other),
        }),
    }
}
