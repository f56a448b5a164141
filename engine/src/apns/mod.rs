//! The APNs protocol without sockets: request encoding, response classification, reasons.

pub mod reason;
pub mod request;
pub mod response;
