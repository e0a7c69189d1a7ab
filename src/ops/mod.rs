//! Operations shared by every part: TLS with certificate reload, the
//! certificate Secret bootstrap, leader election, and the HTTP servers
//! (TLS webhook listener, plain admin port with health and readiness).

pub mod certs;
pub mod discovery;
pub mod leader;
pub mod server;
pub mod tls;
