//! Benchmarks driven from the command line.

pub mod apns;
pub mod checkin;
pub mod soak;
