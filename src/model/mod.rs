//! The Function model and what is derived from it: mode resolution,
//! `FUNC_CONTEXT`, workload classification, the generated CRD. Pure: no IO.

pub mod crd;
pub mod func_context;
pub mod function;
pub mod mode;
pub mod v1beta2;
pub mod workload;
