//! Helpers shared by several integration test files (`mod common;`).
//! Each test file compiles its own copy and uses part of it.
#![allow(dead_code)]

pub mod cluster;
pub mod fake_api;
pub mod fixtures;
pub mod harness;
pub mod ofn;
pub mod proxy;
pub mod python;
pub mod real_crd;
#[cfg(unix)]
pub mod secret_volume;
pub mod serve_bin;
pub mod webhook;
