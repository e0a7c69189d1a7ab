//! The Function model and what is derived from it: mode resolution,
//! `FUNC_CONTEXT`, workload classification, the generated CRD. Pure: no IO.

pub mod crd;
pub mod func_context;
pub mod function;
pub mod mode;
pub mod v1beta2;
pub mod workload;

/// 64-bit FNV-1a: stable across builds and platforms.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
