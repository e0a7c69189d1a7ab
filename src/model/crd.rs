//! The `Function` CustomResourceDefinition we ship for clusters that do not
//! run OpenFunction (`openfunction-dapr crd`, checked in as
//! `manifests/crd/functions.core.openfunction.io.yaml`).
//!
//! Names, group, scope and the status subresource come from the
//! `#[derive(CustomResource)]` on [`crate::model::function::FunctionSpec`]; the
//! schema is written by hand here, because the derived one cannot be
//! structural (our types keep unknown fields in `#[serde(flatten)]` maps and
//! opaque `serde_json::Value`s). It follows our types:
//!
//! - the fields we read are typed, with the same types, `required` lists and
//!   enums as the real OpenFunction v0.8.0 CRD (so a Function accepted here
//!   is accepted there too, and the other way round for those fields);
//! - `spec`, `spec.serving`, every input/output, every Dapr component and
//!   `status` carry `x-kubernetes-preserve-unknown-fields: true`, so every
//!   other field of a Function valid under the real CRD (`build`, `route`,
//!   `serving.labels`, ...) is accepted and stored, never pruned;
//! - only `v1beta1` is served (and stored). OpenFunction also serves
//!   `v1alpha2`, converted by its own conversion webhook; without that
//!   webhook a `v1alpha2` Function would be stored unconverted and read back
//!   as a `v1beta1` one with a different layout (its Dapr settings silently
//!   lost), so we would rather refuse it: `no matches for kind "Function" in
//!   version "core.openfunction.io/v1alpha2"`.
//!
//! `tests/crd.rs` checks that the checked-in file is what this module
//! generates, that the schema is structural, and that it accepts (without
//! pruning) every Function valid under the real CRD.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceValidation,
    JSONSchemaProps,
};
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::model::function::Function;

/// Name of the CustomResourceDefinition.
pub const CRD_NAME: &str = "functions.core.openfunction.io";
/// Where the generated CRD is checked in, relative to the repository root.
pub const CRD_PATH: &str = "manifests/crd/functions.core.openfunction.io.yaml";

/// The `openAPIV3Schema` of `Function` `v1beta1`, as JSON.
pub fn function_schema_json() -> Value {
    let string = || json!({"type": "string"});
    let string_map = || json!({"type": "object", "additionalProperties": {"type": "string"}});
    // `DaprIo`: one entry of spec.serving.inputs / outputs.
    let dapr_io = json!({
        "type": "object",
        "description": "A Dapr input or output of the function.",
        "required": ["name", "component"],
        "properties": {
            "name": string(),
            "component": string(),
            "topic": string(),
            "operation": string(),
            "params": string_map(),
        },
        "x-kubernetes-preserve-unknown-fields": true,
    });
    // `DaprComponent`: one value of spec.serving.bindings / pubsub.
    let dapr_component = json!({
        "type": "object",
        "description": "A Dapr component spec.",
        "required": ["type", "version", "metadata"],
        "properties": {
            "type": string(),
            "version": string(),
            "metadata": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": string(),
                        // A Dapr metadata value may be any JSON value.
                        "value": {"x-kubernetes-preserve-unknown-fields": true},
                    },
                    "x-kubernetes-preserve-unknown-fields": true,
                },
            },
        },
        "x-kubernetes-preserve-unknown-fields": true,
    });
    let opaque_object = || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    json!({
        "type": "object",
        "description": "Function is an OpenFunction function (core.openfunction.io/v1beta1). \
            This is the schema openfunction-dapr ships for clusters without OpenFunction: \
            the fields it reads are typed, every other field is preserved.",
        "properties": {
            "apiVersion": string(),
            "kind": string(),
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "version": string(),
                    "image": string(),
                    "port": {"type": "integer", "format": "int32"},
                    "serving": {
                        "type": "object",
                        "required": ["runtime"],
                        "properties": {
                            "runtime": {"type": "string", "enum": ["knative", "async"]},
                            "annotations": string_map(),
                            "inputs": {"type": "array", "items": dapr_io.clone()},
                            "outputs": {"type": "array", "items": dapr_io},
                            "bindings": {"type": "object", "additionalProperties": dapr_component.clone()},
                            "pubsub": {"type": "object", "additionalProperties": dapr_component},
                            "template": opaque_object(),
                            "scaleOptions": opaque_object(),
                            "triggers": {"type": "array", "items": opaque_object()},
                        },
                        "x-kubernetes-preserve-unknown-fields": true,
                    },
                },
                "x-kubernetes-preserve-unknown-fields": true,
            },
            "status": opaque_object(),
        },
    })
}

/// The `openAPIV3Schema` of `Function` `v1beta1`.
pub fn function_schema() -> JSONSchemaProps {
    serde_json::from_value(function_schema_json()).expect("the hand-written schema is valid")
}

/// The printer columns of the real CRD, so `kubectl get functions` looks
/// the same with either CRD installed.
fn printer_columns() -> Vec<CustomResourceColumnDefinition> {
    let column = |name: &str, type_: &str, json_path: &str| CustomResourceColumnDefinition {
        name: name.to_owned(),
        type_: type_.to_owned(),
        json_path: json_path.to_owned(),
        ..CustomResourceColumnDefinition::default()
    };
    vec![
        column("BuildState", "string", ".status.build.state"),
        column("ServingState", "string", ".status.serving.state"),
        column("Builder", "string", ".status.build.resourceRef"),
        column("Serving", "string", ".status.serving.resourceRef"),
        column(
            "Address",
            "string",
            ".status.addresses[?(@.type==\"Internal\")].value",
        ),
        column("Age", "date", ".metadata.creationTimestamp"),
    ]
}

/// The Function CRD: `v1beta1` served and stored, structural schema,
/// status subresource, short name `fn`.
pub fn function_crd() -> CustomResourceDefinition {
    let mut crd = Function::crd();
    for version in &mut crd.spec.versions {
        version.schema = Some(CustomResourceValidation {
            open_api_v3_schema: Some(function_schema()),
        });
        version.additional_printer_columns = Some(printer_columns());
    }
    crd
}

/// The CRD as the YAML document checked in at [`CRD_PATH`].
pub fn function_crd_yaml() -> String {
    let crd = serde_json::to_value(function_crd()).expect("a CRD serializes");
    let body = serde_saphyr::to_string(&crd).expect("a CRD renders as YAML");
    format!(
        "# Generated by `openfunction-dapr crd`; do not edit by hand.\n\
         # Regenerate: cargo run -- crd > {CRD_PATH}\n\
         ---\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_one_served_storage_version_with_a_schema() {
        let crd = function_crd();
        assert_eq!(crd.metadata.name.as_deref(), Some(CRD_NAME));
        assert_eq!(crd.spec.group, "core.openfunction.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "Function");
        assert_eq!(crd.spec.names.short_names, Some(vec!["fn".to_owned()]));
        assert_eq!(crd.spec.versions.len(), 1);
        let v = &crd.spec.versions[0];
        assert_eq!(
            (v.name.as_str(), v.served, v.storage),
            ("v1beta1", true, true)
        );
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        assert!(v.schema.is_some());
    }

    #[test]
    fn yaml_parses_back_to_the_crd() {
        let yaml = function_crd_yaml();
        let back: CustomResourceDefinition = serde_saphyr::from_str(&yaml).expect("parses");
        assert_eq!(back, function_crd());
    }
}
