//! APNs `reason` strings. [`Reason`] is defined with the engine's other causes in
//! [`crate::cause`], below both the protocol and the outcomes; it is re-exported here, where
//! the protocol's users look for it.

pub use crate::cause::Reason;
