//! The pool's decisions, apart from sockets: which connection gets a push ([`pick`]), when a
//! connection slot (re)connects and how long it backs off ([`plan`]), and whether a failed
//! push is resent ([`plan::RetryPolicy`]).

pub mod backoff;
pub mod pick;
pub mod plan;
