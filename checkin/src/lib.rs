//! magicpush-checkin: the MDM check-in server, device store, command queue and connectivity
//! report, plus the `magicpush` command line.

pub mod cli;
pub mod connectivity;
pub mod mdm;
pub mod store;
