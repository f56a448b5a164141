//! The push certificate's life outside the engine, as the seed's manual walks it: the
//! request (key + CSR, vendor-signed or not), the keys waiting for Apple's certificate, the
//! history of registered certificates, and the expiry warnings. The service
//! (`crate::service::pushcert`) wires them to the admin API.

pub mod expiry;
pub mod history;
pub mod journal;
pub mod legacy;
pub mod pending;
pub mod request;
