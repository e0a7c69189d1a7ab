//! openfunction-dapr: a mutating admission webhook and a companion
//! controller that wire OpenFunction functions to Dapr, either through a
//! per-pod sidecar or through one shared Dapr proxy per function.
//!
//! The pure logic lives in [`mode`], [`func_context`], [`workload`],
//! [`patch`] and [`proxy`]; IO lives in [`store`], [`webhook`], [`tls`]
//! and [`controller`].

pub mod admission;
pub mod certs;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod func_context;
pub mod function;
pub mod inject;
pub mod leader;
pub mod metrics;
pub mod mode;
pub mod patch;
pub mod proxy;
pub mod prune;
pub mod serve;
pub mod server;
pub mod store;
pub mod tls;
pub mod webhook;
pub mod workload;
