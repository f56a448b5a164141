//! magicpush-server: the MDM server — device identity, the push certificate's life, the
//! service that joins the store to the push engine, and the HTTP edge (the devices' check-in
//! and command endpoints, the admin API, metrics).
//!
//! # Layout
//! The checkin crates, lowest first; none depends on one above it:
//! - `magicpush-mdm` (`checkin/mdm`): the MDM protocol without I/O.
//! - `magicpush-store` (`checkin/store`): the store's model, its rules, the in-memory store.
//! - `magicpush-sqlite` (`checkin/sqlite`): the durable SQLite store.
//! - `magicpush-server` (this crate, `checkin/server`): [`identity`], [`pushcert`],
//!   [`service`] (the store and the engine behind one API) and [`http`] (the edge).
//! - `magicpush-cli` (`checkin/cli`): the `magicpush` binary.
//! - `magicpush-testkit` (`checkin/testkit`): the store conformance suite and a scripted
//!   pusher, for tests and benchmarks only.

pub mod client;
pub mod config;
pub mod http;
pub mod identity;
pub mod notify;
pub mod profile;
pub mod push;
pub mod pushcert;
pub mod service;
pub mod settings;
