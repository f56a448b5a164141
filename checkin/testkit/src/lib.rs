//! Test support for magicpush's crates, never part of the `magicpush` binary (no crate the
//! binary is built from depends on this one): the store conformance suite every
//! [`Store`](magicpush_store::Store) passes, the differential test of the durable stores
//! against the memory store, a scripted [`PushSender`](magicpush_engine::PushSender), and a
//! TCP [`forward::Forwarder`] to cut a database away in tests.

pub mod conformance;
pub mod database;
pub mod differential;
pub mod forward;
pub mod pusher;

pub use pusher::{FakeOutcome, FakePusher};
