//! `patch::build_patch` on arbitrary JSON objects, the patch applied and
//! built again: it must apply and be idempotent (see `fuzz_checks::patch`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::patch(data));
