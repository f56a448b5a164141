//! Test support for magicpush's crates, never part of the `magicpush` binary (no crate the
//! binary is built from depends on this one): the store conformance suite every
//! [`Store`](magicpush_store::Store) passes, the differential test of the durable stores
//! against the memory store, and a scripted [`PushSender`](magicpush_engine::PushSender).

pub mod conformance;
pub mod differential;
pub mod pusher;

pub use pusher::{FakeOutcome, FakePusher};
