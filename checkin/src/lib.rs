//! magicpush-checkin: the MDM check-in server, device store, command queue and connectivity
//! report, plus the `magicpush` command line.

pub mod cli;
pub mod client;
pub mod config;
pub mod connectivity;
pub mod http;
pub mod identity;
pub mod mdm;
pub mod notify;
pub mod private;
pub mod push;
pub mod pushcert;
pub mod service;
pub mod store;
