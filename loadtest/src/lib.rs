//! magicpush-loadtest: a mock APNs, the engine benchmark and a simulated device fleet.

pub mod bench;
pub mod cli;
pub mod cpu;
pub mod fleet;
pub use magicpush_mock_apns as mock_apns;
pub mod plain_http;
pub mod rss;
