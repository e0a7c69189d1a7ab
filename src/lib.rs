//! openfunction-dapr wires OpenFunction functions to Dapr: a mutating
//! admission webhook, a companion controller and (in standalone mode) the
//! data plane beside the shared daprd.
//!
//! Dependencies flow one way, top to bottom:
//!
//! - [`cli`], [`serve`], [`inject`], [`metrics`]: the process (flags,
//!   wiring, the offline command, the Prometheus registry);
//! - [`webhook`], [`controller`]: the two parts `serve` runs; [`proxy`]:
//!   the data plane (`openfunction-dapr proxy`);
//! - [`ops`]: TLS, certificates, leader election, the HTTP servers;
//! - [`model`]: the Function and everything derived from it, pure.

pub mod check;
pub mod cli;
pub mod controller;
pub mod inject;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod proxy;
pub mod serve;
pub mod webhook;
