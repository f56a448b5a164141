//! The pool's decisions, apart from sockets: which connection gets a push ([`pick`]), when a
//! connection slot (re)connects and how long it backs off ([`plan`]), whether and when a failed
//! push is resent ([`plan::RetryPolicy::resend`]), and what a certificate refusal on a
//! connection means ([`refusal`]). Time and randomness are passed in; the I/O loops only
//! carry the decisions out.

pub mod backoff;
pub mod budget;
pub mod pick;
pub mod plan;
pub mod refusal;

#[cfg(test)]
mod props;
