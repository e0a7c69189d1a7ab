//! The reconcile's API calls against a fake API server.
//!
//! The fake (`tests/common/fake_api.rs`, behind kube-rs' tower-test mock
//! service) keeps objects in memory and answers like kube-apiserver does
//! for what the controller uses: GET (404 Status when missing), server-side
//! apply (fieldManager required, creates with uid/resourceVersion/defaults,
//! immutable Service clusterIP and Deployment selector), JSON merge patch,
//! DELETE with uid preconditions (409 on mismatch) and Events. Every call is
//! recorded; each scenario asserts the verb, path, field manager and body of
//! every call, and fails on a missing or an extra one. The caches the
//! controller reads are fed from the fake's objects, as the watches would
//! (`tests/common/harness.rs`).
//!
//! Every scenario runs twice (`tests/controller_reconcile/scenarios.rs`):
//! with Functions read as `core.openfunction.io/v1beta1` and as `v1beta2`
//! (the fixtures converted as OpenFunction v1.2.0 converts them); the owner
//! references and the watched paths follow the version.

mod common;

/// Functions read as `core.openfunction.io/v1beta1`.
mod v1beta1 {
    const VERSION: openfunction_dapr::model::v1beta2::ApiVersion =
        openfunction_dapr::model::v1beta2::ApiVersion::V1beta1;
    include!("controller_reconcile/scenarios.rs");
}

/// Functions read as `core.openfunction.io/v1beta2` (OpenFunction 1.x).
mod v1beta2 {
    const VERSION: openfunction_dapr::model::v1beta2::ApiVersion =
        openfunction_dapr::model::v1beta2::ApiVersion::V1beta2;
    include!("controller_reconcile/scenarios.rs");
}
