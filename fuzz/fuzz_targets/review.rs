//! Any bytes as an AdmissionReview body: `admission::decode`, then the
//! whole `Webhook::review` on a local store (see `fuzz_checks::review`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::review(data));
