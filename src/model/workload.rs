//! Which objects are function workloads, and where their Function is
//! (SPEC section 2). Works on raw JSON, as the webhook receives it.

use serde_json::Value;

use crate::model::function::{FUNCTION_LABEL, PROXY_LABEL, SERVING_LABEL};

/// The two kinds of workload the webhook patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Deployment,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
        }
    }

    /// JSON pointer of the pod metadata this kind's patch targets.
    pub fn meta_path(self) -> &'static str {
        match self {
            Kind::Pod => "/metadata",
            Kind::Deployment => "/spec/template/metadata",
        }
    }

    /// JSON pointer of the pod spec this kind's patch targets.
    pub fn spec_path(self) -> &'static str {
        match self {
            Kind::Pod => "/spec",
            Kind::Deployment => "/spec/template/spec",
        }
    }
}

/// How a workload names its Function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner<'a> {
    /// `openfunction.io/function: <fn>`
    Function(&'a str),
    /// `openfunction.io/serving: <serving>`
    Serving(&'a str),
}

/// What the webhook should do with an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classification<'a> {
    /// No function label: not ours.
    NotFunction,
    /// A Dapr proxy pod (label `openfunction.io/proxy`): never patched.
    Proxy,
    Workload(Owner<'a>),
}

fn label<'a>(object: &'a Value, pointer: &str, key: &str) -> Option<&'a str> {
    object
        .pointer(pointer)?
        .get(key)?
        .as_str()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Classify a Pod or Deployment by its labels (for a Deployment: on the
/// Deployment or its pod template). The function label wins over the
/// serving label.
pub fn classify(object: &Value, kind: Kind) -> Classification<'_> {
    let sources: &[&str] = match kind {
        Kind::Pod => &["/metadata/labels"],
        Kind::Deployment => &["/metadata/labels", "/spec/template/metadata/labels"],
    };
    let find = |key: &str| sources.iter().find_map(|p| label(object, p, key));
    if sources
        .iter()
        .any(|p| object.pointer(p).and_then(|l| l.get(PROXY_LABEL)).is_some())
    {
        return Classification::Proxy;
    }
    if let Some(f) = find(FUNCTION_LABEL) {
        return Classification::Workload(Owner::Function(f));
    }
    if let Some(s) = find(SERVING_LABEL) {
        return Classification::Workload(Owner::Serving(s));
    }
    Classification::NotFunction
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_labels() {
        let pod = json!({"metadata": {"labels": {"openfunction.io/function": "f"}}});
        assert_eq!(
            classify(&pod, Kind::Pod),
            Classification::Workload(Owner::Function("f"))
        );
        let pod = json!({"metadata": {"labels": {"openfunction.io/serving": "s", "app": "x"}}});
        assert_eq!(
            classify(&pod, Kind::Pod),
            Classification::Workload(Owner::Serving("s"))
        );
        let pod = json!({"metadata": {"labels": {
            "openfunction.io/serving": "s", "openfunction.io/function": "f"}}});
        assert_eq!(
            classify(&pod, Kind::Pod),
            Classification::Workload(Owner::Function("f"))
        );
        let pod = json!({"metadata": {"labels": {"openfunction.io/proxy": "f", "openfunction.io/function": "f"}}});
        assert_eq!(classify(&pod, Kind::Pod), Classification::Proxy);
        assert_eq!(
            classify(&json!({"metadata": {}}), Kind::Pod),
            Classification::NotFunction
        );
        assert_eq!(classify(&json!({}), Kind::Pod), Classification::NotFunction);
        // empty or non-string values are no label
        let pod = json!({"metadata": {"labels": {"openfunction.io/function": ""}}});
        assert_eq!(classify(&pod, Kind::Pod), Classification::NotFunction);
        let pod = json!({"metadata": {"labels": {"openfunction.io/function": 3}}});
        assert_eq!(classify(&pod, Kind::Pod), Classification::NotFunction);
    }

    #[test]
    fn deployment_labels_on_object_or_template() {
        let d = json!({"metadata": {"labels": {"openfunction.io/function": "f"}}, "spec": {}});
        assert_eq!(
            classify(&d, Kind::Deployment),
            Classification::Workload(Owner::Function("f"))
        );
        let d = json!({"metadata": {}, "spec": {"template": {"metadata": {"labels": {"openfunction.io/serving": "s"}}}}});
        assert_eq!(
            classify(&d, Kind::Deployment),
            Classification::Workload(Owner::Serving("s"))
        );
        let d =
            json!({"spec": {"template": {"metadata": {"labels": {"openfunction.io/proxy": "f"}}}}});
        assert_eq!(classify(&d, Kind::Deployment), Classification::Proxy);
        // a pod-template label is not looked at for a Pod
        let p = json!({"spec": {"template": {"metadata": {"labels": {"openfunction.io/function": "f"}}}}});
        assert_eq!(classify(&p, Kind::Pod), Classification::NotFunction);
    }
}
