//! `admission.k8s.io/v1` AdmissionReview decoding and encoding, and the
//! pure decision for one request (SPEC section 5).
//!
//! The response is written with our own types rather than kube's
//! `AdmissionResponse`, which serializes the patch as an array of numbers
//! (kube-rs#1781); the API server wants base64.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::model::func_context::{func_context, func_context_v1beta2};
use crate::model::function::Function;
use crate::model::mode::{GrpcEndpointForm, Mode, Resolved, resolve};
use crate::model::v1beta2::read_function;
use crate::model::workload::Kind;
use crate::webhook::patch::{Injection, Op, PatchError, build_patch};
use crate::webhook::prune;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const REVIEW_KIND: &str = "AdmissionReview";

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ReviewRequest {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub request: Option<Request>,
}

#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

/// The fields of `request` we read; `oldObject` and the rest are skipped.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub uid: String,
    #[serde(default)]
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub operation: String,
    /// The object, parsed after decoding: pruned to what the webhook reads
    /// for a workload ([`crate::webhook::prune`]), whole for a Function, not at all
    /// for anything else.
    #[serde(skip)]
    pub object: Option<Value>,
    #[serde(default, rename = "object")]
    raw_object: Option<Box<RawValue>>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// What kind of request this is, for the webhook's dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Workload(Kind),
    Function,
    /// Not a resource/operation we act on.
    Other,
}

impl Request {
    pub fn target(&self) -> Target {
        if self.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
            return Target::Other;
        }
        let r = &self.resource;
        let op = self.operation.as_str();
        match (r.group.as_str(), r.resource.as_str(), op) {
            ("", "pods", "CREATE") => Target::Workload(Kind::Pod),
            ("apps", "deployments", "CREATE" | "UPDATE") => Target::Workload(Kind::Deployment),
            ("core.openfunction.io", "functions", "CREATE" | "UPDATE") => Target::Function,
            _ => Target::Other,
        }
    }

    /// The request's namespace, else the object's.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                self.object
                    .as_ref()?
                    .pointer("/metadata/namespace")?
                    .as_str()
                    .filter(|n| !n.is_empty())
            })
    }

    /// `namespace/name` (or `generateName`) for logs and messages.
    pub fn display_name(&self) -> String {
        let name = self
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                let meta = self.object.as_ref()?.get("metadata")?;
                meta.get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .or_else(|| meta.get("generateName").and_then(Value::as_str))
            })
            .unwrap_or("");
        format!("{}/{}", self.namespace().unwrap_or(""), name)
    }
}

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not an AdmissionReview; `uid` is set when it could
    /// still be read, so the answer can be an AdmissionReview.
    #[error("{reason}")]
    Invalid { uid: Option<String>, reason: String },
}

/// Decode an AdmissionReview request body.
pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
    match serde_json::from_slice::<ReviewRequest>(body) {
        Ok(review) => {
            let uid = review
                .request
                .as_ref()
                .map(|r| r.uid.clone())
                .filter(|u| !u.is_empty());
            let invalid = |reason: String| DecodeError::Invalid {
                uid: uid.clone(),
                reason,
            };
            if review.api_version != API_VERSION || review.kind != REVIEW_KIND {
                return Err(invalid(format!(
                    "unsupported review {:?}/{:?}: expected {API_VERSION} {REVIEW_KIND}",
                    review.api_version, review.kind
                )));
            }
            let Some(request) = review.request else {
                return Err(invalid("AdmissionReview has no request".into()));
            };
            if request.uid.is_empty() {
                return Err(invalid("AdmissionReview request has an empty uid".into()));
            }
            let mut request = request;
            if let Some(raw) = request.raw_object.take() {
                let parsed = match request.target() {
                    Target::Workload(_) => prune::workload(raw.get()).map(Some),
                    Target::Function => serde_json::from_str(raw.get()).map(Some),
                    Target::Other => Ok(None),
                };
                request.object =
                    parsed.map_err(|e| invalid(format!("cannot decode request.object: {e}")))?;
            }
            Ok(request)
        }
        Err(e) => Err(DecodeError::Invalid {
            uid: salvage_uid(body),
            reason: format!("cannot decode AdmissionReview: {e}"),
        }),
    }
}

/// Read `request.uid` from a body that failed to decode as a whole.
fn salvage_uid(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Uid {
        uid: String,
    }
    #[derive(Deserialize)]
    struct Outer {
        request: Uid,
    }
    serde_json::from_slice::<Outer>(body)
        .ok()
        .map(|o| o.request.uid)
        .filter(|u| !u.is_empty())
}

/// A status attached to a refusal.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

/// The answer to one request, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub allowed: bool,
    pub patch: Vec<Op>,
    pub warnings: Vec<String>,
    pub status: Option<Status>,
}

impl Answer {
    pub fn allow() -> Self {
        Answer {
            allowed: true,
            patch: Vec::new(),
            warnings: Vec::new(),
            status: None,
        }
    }

    pub fn deny(code: u16, message: impl Into<String>) -> Self {
        Answer {
            allowed: false,
            patch: Vec::new(),
            warnings: Vec::new(),
            status: Some(Status {
                code,
                message: message.into(),
            }),
        }
    }

    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a Status>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// Encode the AdmissionReview answer for request `uid`. The patch, when
/// there is one, is base64 of the JSON Patch with `patchType: JSONPatch`.
pub fn encode(uid: &str, answer: &Answer) -> Vec<u8> {
    let patch = (!answer.patch.is_empty()).then(|| {
        // Serializing our own op types cannot fail.
        let json = serde_json::to_vec(&answer.patch).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    });
    let out = ReviewOut {
        api_version: API_VERSION,
        kind: REVIEW_KIND,
        response: ResponseOut {
            uid,
            allowed: answer.allowed,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            status: answer.status.as_ref(),
            warnings: &answer.warnings,
        },
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// The outcome of admitting one function workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub mode: Mode,
    pub resolved: Resolved,
    pub patch: Vec<Op>,
    pub warnings: Vec<String>,
}

/// Decide the patch for a workload of `function` (found in `namespace`).
pub fn mutate_workload(
    object: &Value,
    kind: Kind,
    namespace: &str,
    function: &Function,
    cluster_domain: &str,
    grpc_endpoint_form: GrpcEndpointForm,
) -> Result<Mutation, PatchError> {
    let name = function.metadata.name.as_deref().unwrap_or_default();
    let resolved = resolve(name, namespace, &function.spec, cluster_domain);
    let ctx = func_context(name, &function.spec);
    let ctx_v1beta2 = func_context_v1beta2(name, &function.spec);
    let patch = build_patch(
        object,
        kind,
        &Injection {
            function: name,
            namespace,
            resolved: &resolved,
            func_context: &ctx,
            grpc_endpoint_form,
            func_context_v1beta2: ctx_v1beta2.as_deref(),
        },
    )?;
    let warnings = function_warnings(namespace, name, &resolved);
    Ok(Mutation {
        mode: resolved.mode,
        patch,
        warnings,
        resolved,
    })
}

/// The resolution warnings of a Function, prefixed with its name.
pub fn function_warnings(namespace: &str, name: &str, resolved: &Resolved) -> Vec<String> {
    resolved
        .warnings
        .iter()
        .map(|w| format!("Function {namespace}/{name}: {w}"))
        .collect()
}

/// Answer a Function CREATE/UPDATE: always allowed, with a warning for every
/// invalid annotation.
pub fn review_function(request: &Request, cluster_domain: &str) -> Answer {
    let Some(object) = request.object.as_ref() else {
        return Answer::allow();
    };
    let namespace = request.namespace().unwrap_or("default");
    match read_function(object.clone()) {
        Ok(f) => {
            let name = f.metadata.name.as_deref().unwrap_or_default();
            let resolved = resolve(name, namespace, &f.spec, cluster_domain);
            Answer {
                warnings: function_warnings(namespace, name, &resolved),
                ..Answer::allow()
            }
        }
        Err(e) => Answer::allow().with_warning(format!(
            "Function {}: cannot interpret its spec for Dapr settings: {e}",
            request.display_name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request
        }))
        .unwrap()
    }

    #[test]
    fn decodes_pod_create() {
        let body = review(json!({
            "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "ns", "operation": "CREATE", "object": {"metadata": {"generateName": "f-"}},
            "oldObject": null, "dryRun": false, "userInfo": {"username": "x"}
        }));
        let r = decode(&body).unwrap();
        assert_eq!(r.uid, "u1");
        assert_eq!(r.target(), Target::Workload(Kind::Pod));
        assert_eq!(r.display_name(), "ns/f-");
    }

    #[test]
    fn dispatch() {
        let req = |group: &str, resource: &str, op: &str, sub: Option<&str>| Request {
            uid: "u".into(),
            resource: GroupVersionResource {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
            },
            sub_resource: sub.map(Into::into),
            operation: op.into(),
            ..Default::default()
        };
        assert_eq!(
            req("", "pods", "CREATE", None).target(),
            Target::Workload(Kind::Pod)
        );
        assert_eq!(req("", "pods", "UPDATE", None).target(), Target::Other);
        assert_eq!(
            req("", "pods", "CREATE", Some("binding")).target(),
            Target::Other
        );
        assert_eq!(
            req("apps", "deployments", "UPDATE", None).target(),
            Target::Workload(Kind::Deployment)
        );
        assert_eq!(
            req("apps", "deployments", "DELETE", None).target(),
            Target::Other
        );
        assert_eq!(
            req("apps", "deployments", "UPDATE", Some("scale")).target(),
            Target::Other
        );
        assert_eq!(
            req("core.openfunction.io", "functions", "CREATE", None).target(),
            Target::Function
        );
        assert_eq!(req("", "services", "CREATE", None).target(), Target::Other);
    }

    #[test]
    fn refusals_keep_the_uid_when_readable() {
        match decode(br#"{"request": {"uid": "abc", "object": 5, "resource": 7}}"#) {
            Err(DecodeError::Invalid { uid, .. }) => assert_eq!(uid.as_deref(), Some("abc")),
            Ok(_) => panic!("decoded garbage"),
        }
        for body in [
            &b""[..],
            b"{",
            b"\xff\xfe",
            b"[]",
            br#"{"request": {"uid": ""}}"#,
        ] {
            match decode(body) {
                Err(DecodeError::Invalid { uid, .. }) => assert_eq!(uid, None),
                Ok(_) => panic!("decoded {body:?}"),
            }
        }
        // wrong apiVersion: refused, uid kept
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
            "request": {"uid": "u2"}
        }))
        .unwrap();
        match decode(&body) {
            Err(DecodeError::Invalid { uid, reason }) => {
                assert_eq!(uid.as_deref(), Some("u2"));
                assert!(reason.contains("unsupported"), "{reason}");
            }
            Ok(_) => panic!("accepted v1beta1"),
        }
        let body = serde_json::to_vec(
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
        )
        .unwrap();
        assert!(decode(&body).is_err());
    }

    #[test]
    fn patch_goes_on_the_wire_as_base64() {
        let answer = Answer {
            patch: vec![Op::Add {
                path: "/metadata/annotations/dapr.io~1enabled".into(),
                value: json!("false"),
            }],
            ..Answer::allow()
        };
        let out: Value = serde_json::from_slice(&encode("u", &answer)).unwrap();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], "u");
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let patch = out["response"]["patch"]
            .as_str()
            .expect("patch is a base64 string");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let ops: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(
            ops,
            json!([{"op": "add", "path": "/metadata/annotations/dapr.io~1enabled", "value": "false"}])
        );
    }

    #[test]
    fn empty_answer_has_no_patch_fields() {
        let out: Value = serde_json::from_slice(&encode("u", &Answer::allow())).unwrap();
        assert_eq!(
            out,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "u", "allowed": true}})
        );
        let out: Value = serde_json::from_slice(&encode(
            "u",
            &Answer::deny(503, "try again").with_warning("w"),
        ))
        .unwrap();
        assert_eq!(
            out["response"]["status"],
            json!({"code": 503, "message": "try again"})
        );
        assert_eq!(out["response"]["warnings"], json!(["w"]));
        assert_eq!(out["response"]["allowed"], false);
    }

    #[test]
    fn function_review_warns_on_invalid_annotations() {
        let body = review(json!({
            "uid": "u", "resource": {"group": "core.openfunction.io", "version": "v1beta1", "resource": "functions"},
            "namespace": "ns", "operation": "CREATE",
            "object": {"apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
                "metadata": {"name": "f", "namespace": "ns"},
                "spec": {"image": "i", "serving": {"runtime": "knative", "annotations": {
                    "openfunction.io/enable-dapr": "yes", "dapr.io/app-protocol": "tcp"}}}}
        }));
        let req = decode(&body).unwrap();
        let a = review_function(&req, "cluster.local");
        assert!(a.allowed);
        assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
        assert!(a.warnings[0].starts_with("Function ns/f: "));
    }
}
