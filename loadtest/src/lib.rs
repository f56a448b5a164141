//! magicpush-loadtest: a mock APNs, the engine benchmark and a simulated device fleet.

pub mod cli;
pub mod mock_apns;
