//! Every Function valid under the real OpenFunction v0.8.0 CRD (v1beta1) and
//! v1.2.0 CRD (v1beta2) must deserialize into our types and serialize back
//! without losing data.
//! Instances come from the CRD's own schema (`tests/common/real_crd.rs`);
//! when the CRD is absent the test says so and passes.

mod common;

use openfunction_dapr::model::func_context::{func_context, func_context_v1beta2};
use openfunction_dapr::model::function::Function;
use openfunction_dapr::model::mode::resolve;
use openfunction_dapr::model::v1beta2;
use serde_json::Value;

fn round_trips(doc: &Value, label: &str) {
    let f: Function =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{label}: {e}\n{doc:#}"));
    let back = serde_json::to_value(&f).unwrap();
    assert_eq!(&back, doc, "{label}: data lost in round trip");
}

#[test]
fn every_function_valid_under_the_real_crd_round_trips() {
    let Some((spec, status)) = common::real_crd::v1beta1_schemas() else {
        return; // the helper printed SKIPPED
    };
    let all = common::real_crd::instances(&spec, &status);
    // the maximal instance reaches the fields we model
    let maximal = &all[0].1;
    assert!(maximal["spec"]["serving"]["inputs"][1]["params"]["key-1"].is_string());
    assert!(maximal["spec"]["serving"]["bindings"]["key-0"]["metadata"][0]["value"].is_object());
    for (label, f) in &all {
        round_trips(f, label);
    }
}

#[test]
fn every_v1beta2_function_valid_under_the_v1_2_0_crd_round_trips_and_resolves() {
    let Some((spec, status)) = common::real_crd::v1beta2_schemas() else {
        return; // the helper printed SKIPPED
    };
    let all = common::real_crd::instances_of("core.openfunction.io/v1beta2", &spec, &status);
    let maximal = &all[0].1;
    assert!(maximal["spec"]["serving"]["triggers"]["dapr"][1]["inputName"].is_string());
    assert!(maximal["spec"]["serving"]["outputs"][1]["dapr"]["metadata"]["key-1"].is_string());
    assert!(maximal["spec"]["serving"]["tracing"]["provider"]["exporter"]["endpoint"].is_string());
    for (label, doc) in &all {
        let f: v1beta2::Function =
            serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{label}: {e}\n{doc:#}"));
        assert_eq!(
            &serde_json::to_value(&f).unwrap(),
            doc,
            "{label}: data lost"
        );
        // and everything derived from it is computed
        let n = v1beta2::read_function(doc.clone()).unwrap();
        let r = resolve("f", "ns", &n.spec, "cluster.local");
        assert_eq!(r.app_port, n.spec.port.unwrap_or(8080), "{label}");
        let ctx: Value = serde_json::from_str(&func_context("f", &n.spec)).unwrap();
        assert!(ctx["triggers"].is_object(), "{label}");
        assert!(func_context_v1beta2("f", &n.spec).is_some(), "{label}");
    }
}
