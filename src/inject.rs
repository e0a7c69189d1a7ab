//! `openfunction-dapr inject`: the webhook and the controller, offline.
//! Reads Functions and workloads from YAML, prints every workload as the
//! webhook would admit it, then the objects the controller would create.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::controller::resources::{
    ProxySettings, desired_function_service, desired_proxy_deployment, proxy_replicas,
};
use crate::model::function::{Function, Serving};
use crate::model::mode::{GrpcEndpointForm, Mode, resolve};
use crate::model::v1beta2::read_function;
use crate::model::workload::{Classification, Kind, classify};
use crate::webhook::admission::{function_warnings, mutate_workload};
use crate::webhook::patch;
use crate::webhook::store::{FunctionStore, Lookup, parse_documents};

/// One input file: its display name (`-` for stdin) and its text.
pub struct Input {
    pub name: String,
    pub text: String,
}

/// The printed documents and the warnings for stderr.
#[derive(Debug, Default)]
pub struct Output {
    pub documents: Vec<Value>,
    pub warnings: Vec<String>,
}

impl Output {
    /// Multi-document YAML.
    pub fn to_yaml(&self) -> Result<String, InjectError> {
        let mut out = String::new();
        for doc in &self.documents {
            out.push_str("---\n");
            out.push_str(
                &serde_saphyr::to_string(doc).map_err(|e| InjectError::Render(e.to_string()))?,
            );
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("{file}: not YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: document {index}: {message}")]
    Document {
        file: String,
        index: usize,
        message: String,
    },
    #[error("rendering YAML: {0}")]
    Render(String),
}

enum Doc {
    Function(Box<Function>),
    Serving(Box<Serving>),
    Workload(Kind, Value),
}

/// Run the webhook on every workload of `inputs` and compute the
/// controller's objects for every Function of `inputs`.
pub async fn inject(
    inputs: &[Input],
    cluster_domain: &str,
    grpc_endpoint_form: GrpcEndpointForm,
    proxy: &ProxySettings,
) -> Result<Output, InjectError> {
    let mut docs = Vec::new();
    for input in inputs {
        let values = parse_documents(&input.text).map_err(|message| InjectError::Yaml {
            file: input.name.clone(),
            message,
        })?;
        for (i, value) in values.into_iter().enumerate() {
            let err = |message: String| InjectError::Document {
                file: input.name.clone(),
                index: i + 1,
                message,
            };
            docs.push((
                (input.name.clone(), i + 1),
                classify_document(value).map_err(err)?,
            ));
        }
    }

    let functions: Vec<Function> = docs
        .iter()
        .filter_map(|(_, d)| match d {
            Doc::Function(f) => Some(Function::clone(f)),
            _ => None,
        })
        .collect();
    let servings = docs
        .iter()
        .filter_map(|(_, d)| match d {
            Doc::Serving(s) => Some(Serving::clone(s)),
            _ => None,
        })
        .collect();
    let store = FunctionStore::from_objects(functions.clone(), servings);

    let mut out = Output::default();
    let mut warnings = BTreeSet::new();
    for ((file, index), doc) in docs {
        let Doc::Workload(kind, object) = doc else {
            continue;
        };
        let owner = match classify(&object, kind) {
            Classification::Workload(owner) => owner,
            Classification::NotFunction | Classification::Proxy => {
                out.documents.push(object);
                continue;
            }
        };
        let namespace = namespace_of(&object);
        let with_message = |message: String| InjectError::Document {
            file: file.clone(),
            index,
            message,
        };
        let function = match store.lookup(&namespace, owner).await {
            Ok(Lookup::Found { function, .. }) => function,
            Ok(Lookup::NotFound(reason)) => {
                return Err(with_message(format!(
                    "{kind} of a Function not in the input: {reason}",
                    kind = kind.as_str()
                )));
            }
            // A local store never calls the API server.
            Err(e) => return Err(with_message(e.to_string())),
        };
        let m = mutate_workload(
            &object,
            kind,
            &namespace,
            &function,
            cluster_domain,
            grpc_endpoint_form,
        )
        .map_err(|e| with_message(e.to_string()))?;
        warnings.extend(m.warnings);
        let patched = patch::apply(&object, &m.patch)
            .map_err(|e| with_message(format!("applying the patch: {e}")))?;
        out.documents.push(patched);
    }

    for mut f in functions {
        let namespace = f
            .metadata
            .namespace
            .get_or_insert_with(|| "default".into())
            .clone();
        let name = f.metadata.name.clone().unwrap_or_default();
        let resolved = resolve(&name, &namespace, &f.spec, cluster_domain);
        warnings.extend(function_warnings(&namespace, &name, &resolved));
        if resolved.mode != Mode::Standalone {
            continue;
        }
        let to_value =
            |v: Result<Value, serde_json::Error>| v.map_err(|e| InjectError::Render(e.to_string()));
        if let (_, Some(w)) = proxy_replicas(&f.spec) {
            warnings.insert(format!("Function {namespace}/{name}: {w}"));
        }
        out.documents
            .push(to_value(serde_json::to_value(desired_proxy_deployment(
                &f, proxy,
            )))?);
        if let Some(service) = desired_function_service(&f, proxy) {
            out.documents.push(to_value(serde_json::to_value(service))?);
        }
    }
    out.warnings = warnings.into_iter().collect();
    Ok(out)
}

fn namespace_of(object: &Value) -> String {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_owned()
}

fn classify_document(value: Value) -> Result<Doc, String> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (api_version, kind) {
        (v, "Function") if v.starts_with("core.openfunction.io/") => read_function(value)
            .map(|f| Doc::Function(Box::new(f)))
            .map_err(|e| format!("invalid Function: {e}")),
        (v, "Serving") if v.starts_with("core.openfunction.io/") => serde_json::from_value(value)
            .map(Doc::Serving)
            .map_err(|e| format!("invalid Serving: {e}")),
        ("apps/v1", "Deployment") => Ok(Doc::Workload(Kind::Deployment, value)),
        ("v1", "Pod") => Ok(Doc::Workload(Kind::Pod, value)),
        ("", _) | (_, "") => Err("not a Kubernetes object (no apiVersion or kind)".into()),
        (v, k) => Err(format!(
            "unsupported kind {v}/{k}: expected Function, Serving, Deployment or Pod"
        )),
    }
}
