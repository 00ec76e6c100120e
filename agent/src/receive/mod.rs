//! `diskferry-agent receive`: the relay's far end, in the destination
//! region. It serves the protocol of [`crate::relay`] (the wire messages and
//! the sender live there), one [`session::Session`] per disk, each owning the
//! real sink (page blob or file) that a direct sync would open.
//!
//! - `server.rs`: HTTP/1.1 over TLS, bearer-token auth, routing, body limits;
//! - `session.rs`: one thread per disk owning its sink; windows verified off
//!   the sink's thread, applied in order, once;
//! - `grants.rs`: what each token may do (its disks, `force`);
//! - `metrics.rs`: the receiver's `/metrics`.

pub mod grants;
pub mod metrics;
pub mod server;
pub mod session;
