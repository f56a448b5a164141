//! The APNs protocol without sockets: request encoding, response classification, reasons.

pub mod reason;
