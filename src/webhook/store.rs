//! The function store: a watch-fed cache of Functions and Servings that the
//! webhook answers from (SPEC section 2), or a fixed set loaded from YAML
//! files (the embedded default, no cluster needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::model::function::{Function, Serving, serving_function_name};
use crate::model::v1beta2::{self, ApiVersion, NoObserver, VersionObserver, read_function};
use crate::model::workload::Owner;
use crate::ops::discovery::{
    DISCOVERY_INTERVAL, map_event, version_to_read, version_to_read_retrying,
};

/// Where a look-up was answered from (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cache,
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Api => "api",
        }
    }
}

/// The answer to a look-up that did not fail.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found {
        function: Arc<Function>,
        source: Source,
    },
    /// Nothing names a Function: the reason, for an admission warning.
    NotFound(String),
}

/// A look-up that could not be answered; the webhook denies, saying it is
/// temporary, and the creating controller retries.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("looking up {what} failed: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("looking up {what} timed out after {timeout:?}")]
    Timeout { what: String, timeout: Duration },
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {index}: {message}")]
    Parse {
        path: PathBuf,
        index: usize,
        message: String,
    },
}

/// Live GETs on a cache miss.
#[derive(Clone)]
struct Live {
    client: Client,
    timeout: Duration,
    /// The versions read now.
    versions: tokio::sync::watch::Receiver<Versions>,
}

/// Functions and Servings by namespace and name.
#[derive(Clone)]
pub struct FunctionStore {
    functions: Store<Function>,
    servings: Store<PartialObjectMeta<Serving>>,
    live: Option<Live>,
}

impl FunctionStore {
    /// A store holding exactly these objects (no cluster).
    pub fn from_objects(functions: Vec<Function>, servings: Vec<Serving>) -> Self {
        let mut fw = Writer::<Function>::default();
        fw.apply_watcher_event(&watcher::Event::Init);
        for mut f in functions {
            slim(&mut f);
            if f.namespace().is_none() {
                f.metadata.namespace = Some("default".into());
            }
            fw.apply_watcher_event(&watcher::Event::InitApply(f));
        }
        fw.apply_watcher_event(&watcher::Event::InitDone);
        let mut sw = Writer::<PartialObjectMeta<Serving>>::default();
        sw.apply_watcher_event(&watcher::Event::Init);
        for s in servings {
            let mut meta = PartialObjectMeta::<Serving> {
                types: None,
                metadata: s.metadata,
                _phantom: Default::default(),
            };
            strip(&mut meta);
            if meta.metadata.namespace.is_none() {
                meta.metadata.namespace = Some("default".into());
            }
            sw.apply_watcher_event(&watcher::Event::InitApply(meta));
        }
        sw.apply_watcher_event(&watcher::Event::InitDone);
        FunctionStore {
            functions: fw.as_reader(),
            servings: sw.as_reader(),
            live: None,
        }
    }

    /// Load every Function and Serving from the `.yaml`, `.yml` and `.json`
    /// files of `dir` (multi-document YAML; other kinds are ignored).
    pub fn from_dir(dir: &Path) -> Result<Self, LoadError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LoadError::Io { path, source }
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            })
            .collect();
        paths.sort();
        let (mut functions, mut servings) = (Vec::new(), Vec::new());
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let mut failed = None;
            for_each_document(&text, |index, doc| {
                let kind = (
                    doc.get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    doc.get("kind").and_then(Value::as_str).unwrap_or_default(),
                );
                let result = match kind {
                    (v, "Function") if v.starts_with("core.openfunction.io/") => read_function(doc)
                        .map(|mut f| {
                            slim(&mut f);
                            functions.push(f)
                        }),
                    (v, "Serving") if v.starts_with("core.openfunction.io/") => {
                        serde_json::from_value(doc).map(|s| servings.push(s))
                    }
                    (_, kind) => {
                        debug!(path = %path.display(), index, kind, "ignoring document");
                        Ok(())
                    }
                };
                result.map_err(|e| {
                    failed = Some(index);
                    e.to_string()
                })
            })
            .map_err(|message| LoadError::Parse {
                path: path.clone(),
                index: failed.unwrap_or(0),
                message,
            })?;
        }
        info!(dir = %dir.display(), functions = functions.len(), servings = servings.len(), "loaded local store");
        Ok(Self::from_objects(functions, servings))
    }

    /// A store fed by watches on the cluster, plus the future that drives
    /// the watches (run it for the life of the process). `namespace`
    /// restricts the watches; `timeout` bounds a live GET on a cache miss.
    pub async fn watch(
        client: Client,
        namespace: Option<&str>,
        timeout: Duration,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        Self::watch_observed(client, namespace, timeout, Arc::new(NoObserver)).await
    }

    /// [`Self::watch`], telling `observer` which versions are read.
    ///
    /// Functions and Servings are read in `v1beta2` where the API server
    /// serves it, else `v1beta1` (never a version that needs OpenFunction's
    /// conversion webhook); the served versions are looked at again every
    /// [`DISCOVERY_INTERVAL`] and the watches restart when they change.
    /// Serving is watched (metadata only) when its CRD is served. Finding
    /// the versions retries with backoff while the API server is
    /// unreachable.
    pub async fn watch_observed(
        client: Client,
        namespace: Option<&str>,
        timeout: Duration,
        observer: Arc<dyn VersionObserver>,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        Self::watch_with(client, namespace, timeout, observer, DISCOVERY_INTERVAL).await
    }

    /// [`Self::watch_observed`], looking at the served versions every
    /// `discovery`.
    pub async fn watch_with(
        client: Client,
        namespace: Option<&str>,
        timeout: Duration,
        observer: Arc<dyn VersionObserver>,
        discovery: Duration,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let versions = Versions::discover(&client).await;
        versions.report(&*observer);
        let (tx, rx) = tokio::sync::watch::channel(versions);
        let mut fwriter = Writer::<Function>::default();
        let mut swriter = Writer::<PartialObjectMeta<Serving>>::default();
        let store = FunctionStore {
            functions: fwriter.as_reader(),
            servings: swriter.as_reader(),
            live: Some(Live {
                client: client.clone(),
                timeout,
                versions: rx,
            }),
        };
        let namespace = namespace.map(str::to_owned);
        let driver = async move {
            let mut versions = versions;
            loop {
                let changed = versions.changed(&client, discovery);
                let watches = run_watches(
                    &client,
                    namespace.as_deref(),
                    versions,
                    &mut fwriter,
                    &mut swriter,
                );
                tokio::select! {
                    new = changed => {
                        versions = new;
                        versions.report(&*observer);
                        let _ = tx.send(versions);
                    }
                    () = watches => return,
                }
            }
        };
        (store, driver)
    }

    /// Resolves once every cache has its initial list.
    pub async fn ready(&self) {
        let _ = self.functions.wait_until_ready().await;
        let _ = self.servings.wait_until_ready().await;
    }

    /// Number of cached Functions.
    pub fn len(&self) -> usize {
        self.functions.state().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached Function `name` in `namespace`, without a live GET.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Arc<Function>> {
        self.functions.get(&ObjectRef::new(name).within(namespace))
    }

    /// Find the Function a workload in `namespace` belongs to. Never looks
    /// outside `namespace`.
    pub async fn lookup(&self, namespace: &str, owner: Owner<'_>) -> Result<Lookup, LookupError> {
        let (function_name, source) = match owner {
            Owner::Function(name) => (name.to_owned(), Source::Cache),
            Owner::Serving(serving) => {
                let (meta, source) = match self
                    .servings
                    .get(&ObjectRef::new(serving).within(namespace))
                {
                    Some(m) => (Some(m.metadata.clone()), Source::Cache),
                    None => match &self.live {
                        Some(live) => (live.serving_meta(namespace, serving).await?, Source::Api),
                        None => (None, Source::Cache),
                    },
                };
                let Some(meta) = meta else {
                    return Ok(Lookup::NotFound(format!(
                        "Serving {namespace}/{serving} not found"
                    )));
                };
                let Some(name) = serving_function_name(&meta) else {
                    return Ok(Lookup::NotFound(format!(
                        "Serving {namespace}/{serving} names no Function \
                         (no openfunction.io/function label or Function controller)"
                    )));
                };
                (name.to_owned(), source)
            }
        };
        if let Some(f) = self.cached(namespace, &function_name) {
            return Ok(Lookup::Found {
                function: f,
                source,
            });
        }
        if let Some(live) = &self.live
            && let Some(mut f) = live.function(namespace, &function_name).await?
        {
            slim(&mut f);
            return Ok(Lookup::Found {
                function: Arc::new(f),
                source: Source::Api,
            });
        }
        Ok(Lookup::NotFound(format!(
            "Function {namespace}/{function_name} not found"
        )))
    }
}

impl Live {
    /// The Function `name`, read in the version in use.
    async fn function(&self, namespace: &str, name: &str) -> Result<Option<Function>, LookupError> {
        let version = self.versions.borrow().functions;
        Ok(match version {
            ApiVersion::V1beta1 => self.get::<Function>(namespace, name).await?,
            ApiVersion::V1beta2 => self
                .get::<v1beta2::Function>(namespace, name)
                .await?
                .map(v1beta2::normalize),
        })
    }

    /// The metadata of Serving `name`, read in the version in use; `None`
    /// without a GET when no Serving version is served.
    async fn serving_meta(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ObjectMeta>, LookupError> {
        let version = self.versions.borrow().servings;
        Ok(match version {
            None => None,
            Some(ApiVersion::V1beta1) => self
                .get::<PartialObjectMeta<Serving>>(namespace, name)
                .await?
                .map(|s| s.metadata),
            Some(ApiVersion::V1beta2) => self
                .get::<PartialObjectMeta<v1beta2::Serving>>(namespace, name)
                .await?
                .map(|s| s.metadata),
        })
    }

    async fn get<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, LookupError>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        // Label values reach us before the API server validates them, and
        // kube-rs puts the name into the request path as it is: never ask
        // for a name that no object can have (`../../a/functions/f`).
        if !is_object_name(namespace) || !is_object_name(name) {
            debug!(namespace, name, "not an object name: no look-up");
            return Ok(None);
        }
        let what = format!("{} {namespace}/{name}", K::kind(&K::DynamicType::default()));
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        match tokio::time::timeout(self.timeout, api.get_opt(name)).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(source)) => Err(LookupError::Api { what, source }),
            Err(_) => Err(LookupError::Timeout {
                what,
                timeout: self.timeout,
            }),
        }
    }
}

/// Whether `s` can name a namespace or a namespaced object: a DNS-1123
/// subdomain (lowercase alphanumerics, `-` and `.`, starting and ending
/// with an alphanumeric, at most 253 characters).
pub fn is_object_name(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            s.len() <= 253
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.')
        }
        _ => false,
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The versions of Functions and Servings the store reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Versions {
    /// `v1beta1` also when neither is served (the watch then retries).
    functions: ApiVersion,
    /// `None`: the Serving CRD is not served.
    servings: Option<ApiVersion>,
}

impl Versions {
    /// Ask the API server (retrying until it answers).
    async fn discover(client: &Client) -> Versions {
        let functions = version_to_read_retrying(client, "functions").await;
        let servings = version_to_read_retrying(client, "servings").await;
        Versions {
            functions: functions.unwrap_or_default(),
            servings,
        }
    }

    /// Resolves with the new versions when the served ones change (looked
    /// at every `period`; an unreachable API server changes nothing).
    async fn changed(self, client: &Client, period: Duration) -> Versions {
        loop {
            tokio::time::sleep(period).await;
            let Ok(functions) = version_to_read(client, "functions").await else {
                continue;
            };
            let Ok(servings) = version_to_read(client, "servings").await else {
                continue;
            };
            let now = Versions {
                functions: functions.unwrap_or_default(),
                servings,
            };
            if now != self {
                return now;
            }
        }
    }

    fn report(&self, observer: &dyn VersionObserver) {
        info!(functions = %self.functions, servings = ?self.servings.map(ApiVersion::as_str),
            "webhook store: reading core.openfunction.io in these versions");
        if self.servings.is_none() {
            info!("Serving CRD not served: following only the openfunction.io/function label");
        }
        observer.version_in_use("webhook", "functions", Some(self.functions));
        observer.version_in_use("webhook", "servings", self.servings);
    }
}

/// Feed the writers from watches of `versions` (forever: watch errors are
/// retried with backoff). A restart relists: the writers swap in the new
/// contents at the end of the initial list.
async fn run_watches(
    client: &Client,
    namespace: Option<&str>,
    versions: Versions,
    functions: &mut Writer<Function>,
    servings: &mut Writer<PartialObjectMeta<Serving>>,
) {
    let config = || watcher::Config::default().any_semantic();
    let mut fstream = match versions.functions {
        ApiVersion::V1beta1 => watcher(api::<Function>(client, namespace), config())
            .default_backoff()
            .modify(slim)
            .boxed(),
        ApiVersion::V1beta2 => watcher(api::<v1beta2::Function>(client, namespace), config())
            .default_backoff()
            .map_ok(|e| map_event(e, v1beta2::normalize))
            .modify(slim)
            .boxed(),
    };
    let mut sstream = match versions.servings {
        Some(ApiVersion::V1beta1) => watcher(
            api::<PartialObjectMeta<Serving>>(client, namespace),
            config(),
        )
        .default_backoff()
        .modify(strip)
        .boxed(),
        Some(ApiVersion::V1beta2) => watcher(
            api::<PartialObjectMeta<v1beta2::Serving>>(client, namespace),
            config(),
        )
        .default_backoff()
        .map_ok(|e| {
            map_event(e, |s| PartialObjectMeta::<Serving> {
                types: None,
                metadata: s.metadata,
                _phantom: Default::default(),
            })
        })
        .modify(strip)
        .boxed(),
        None => {
            servings.apply_watcher_event(&watcher::Event::Init);
            servings.apply_watcher_event(&watcher::Event::InitDone);
            futures::stream::pending().boxed()
        }
    };
    loop {
        tokio::select! {
            Some(event) = fstream.next() => match event {
                Ok(e) => functions.apply_watcher_event(&e),
                // The default backoff already spaces out retries.
                Err(e) => warn!(error = %e, what = "functions", "watch error"),
            },
            Some(event) = sstream.next() => match event {
                Ok(e) => servings.apply_watcher_event(&e),
                Err(e) => warn!(error = %e, what = "servings", "watch error"),
            },
            else => return,
        }
    }
}

/// Keep only what the webhook reads of a Function: its name, namespace and
/// uid, and the spec fields of mode resolution and FUNC_CONTEXT (SPEC 3, 4,
/// 7). Component metadata, templates, build settings, status and the rest
/// can be most of a Function's size and are never read here.
fn slim(f: &mut Function) {
    strip(f);
    let meta = &mut f.metadata;
    meta.labels = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    f.status = None;
    f.spec.image = String::new();
    f.spec.extra = Default::default();
    if let Some(s) = f.spec.serving.as_mut() {
        s.template = None;
        s.scale_options = None;
        s.triggers = None;
        s.extra = Default::default();
        for c in s
            .bindings
            .iter_mut()
            .chain(s.pubsub.iter_mut())
            .flat_map(|m| m.values_mut())
        {
            c.metadata = Vec::new();
            c.extra = Default::default();
        }
        for io in s.inputs.iter_mut().chain(s.outputs.iter_mut()).flatten() {
            io.extra = Default::default();
        }
    }
    // the v1beta2 spec: everything but what the contexts read
    if let Some(src) = f.spec.v1beta2.as_mut() {
        let spec = &mut Arc::make_mut(src).spec;
        spec.image = String::new();
        spec.extra = Default::default();
        if let Some(s) = spec.serving.as_mut() {
            s.template = None;
            s.scale_options = None;
            s.extra = Default::default();
            for c in s
                .bindings
                .iter_mut()
                .chain(s.pubsub.iter_mut())
                .flat_map(|m| m.values_mut())
                .chain(
                    s.states
                        .iter_mut()
                        .flat_map(|m| m.values_mut())
                        .filter_map(|st| st.spec.as_mut()),
                )
            {
                c.metadata = Vec::new();
                c.extra = Default::default();
            }
        }
    }
}

/// Drop what the webhook never reads and that can dominate an object's
/// size: managedFields and kubectl's last-applied copy.
fn strip<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Parse multi-document YAML (JSON is YAML) into JSON values; empty
/// documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for_each_document(text, |_, doc| {
        docs.push(doc);
        Ok(())
    })?;
    Ok(docs)
}

/// Call `f` with each non-empty document of multi-document YAML, one at a
/// time, so a large file never holds all its documents at once.
///
/// When every document marker is a bare `---` line (and there are no
/// directives), the text is split at those lines and a document that is
/// JSON is parsed by serde_json, many times faster than a YAML parser on
/// the same text; anything else goes to the YAML parser, each document
/// under its default budget.
pub fn for_each_document(
    text: &str,
    mut f: impl FnMut(usize, Value) -> Result<(), String>,
) -> Result<(), String> {
    // A directive, a document end, or a marker with content on its line.
    let special = |l: &str| {
        l.starts_with('%')
            || l.starts_with("...")
            || (l.starts_with("---") && l.trim_end() != "---")
    };
    let simple_markers = !text.lines().any(special);
    let mut index = 0;
    let mut emit = |doc: Value| -> Result<(), String> {
        if doc.is_null() {
            return Ok(());
        }
        index += 1;
        f(index, doc)
    };
    if !simple_markers {
        let mut reader = text.as_bytes();
        for doc in serde_saphyr::read::<_, Value>(&mut reader) {
            emit(doc.map_err(|e| e.to_string())?)?;
        }
        return Ok(());
    }
    let mut start = 0;
    let mut chunks = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            chunks.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    chunks.push(&text[start..]);
    for chunk in chunks {
        let trimmed = chunk.trim_start();
        if trimmed.is_empty()
            || trimmed
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let doc = if trimmed.starts_with('{') {
            match serde_json::from_str::<Value>(chunk) {
                Ok(v) => v,
                // Flow-style YAML that is not JSON (e.g. `{a: 1}`).
                Err(_) => serde_saphyr::from_str::<Value>(chunk).map_err(|e| e.to_string())?,
            }
        } else {
            serde_saphyr::from_str::<Value>(chunk).map_err(|e| e.to_string())?
        };
        emit(doc)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn function(ns: Option<&str>, name: &str) -> Function {
        let mut meta = json!({"name": name});
        if let Some(ns) = ns {
            meta["namespace"] = json!(ns);
        }
        serde_json::from_value(json!({
            "apiVersion": "core.openfunction.io/v1beta1", "kind": "Function",
            "metadata": meta, "spec": {"image": "i"}
        }))
        .unwrap()
    }

    fn serving(ns: &str, name: &str, labels: Value) -> Serving {
        serde_json::from_value(json!({
            "apiVersion": "core.openfunction.io/v1beta1", "kind": "Serving",
            "metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": {}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn lookups_by_function_and_serving_never_cross_namespaces() {
        let store = FunctionStore::from_objects(
            vec![function(Some("a"), "f"), function(None, "g")],
            vec![
                serving("a", "s1", json!({"openfunction.io/function": "f"})),
                serving("b", "s2", json!({"openfunction.io/function": "f"})),
                serving("a", "s3", json!({})),
            ],
        );
        store.ready().await;
        let found = |l: Lookup| match l {
            Lookup::Found { function, source } => {
                assert_eq!(source, Source::Cache);
                function.metadata.name.clone().unwrap()
            }
            Lookup::NotFound(r) => panic!("not found: {r}"),
        };
        let missing = |l: Lookup| match l {
            Lookup::NotFound(r) => r,
            Lookup::Found { .. } => panic!("found"),
        };
        assert_eq!(
            found(store.lookup("a", Owner::Function("f")).await.unwrap()),
            "f"
        );
        assert_eq!(
            found(store.lookup("default", Owner::Function("g")).await.unwrap()),
            "g"
        );
        assert_eq!(
            found(store.lookup("a", Owner::Serving("s1")).await.unwrap()),
            "f"
        );
        assert!(
            missing(store.lookup("b", Owner::Function("f")).await.unwrap())
                .contains("b/f not found")
        );
        // s2 is in b and names f, but f lives in a
        assert!(
            missing(store.lookup("b", Owner::Serving("s2")).await.unwrap())
                .contains("Function b/f")
        );
        assert!(
            missing(store.lookup("a", Owner::Serving("s3")).await.unwrap())
                .contains("names no Function")
        );
        assert!(
            missing(store.lookup("a", Owner::Serving("nope")).await.unwrap())
                .contains("Serving a/nope")
        );
    }

    #[test]
    fn only_what_the_webhook_reads_is_cached() {
        let mut f = function(Some("a"), "f");
        f.spec = serde_json::from_value(json!({
            "version": "v1", "image": "img", "port": 9000, "build": {"builder": "b"},
            "serving": {"runtime": "async", "annotations": {"dapr.io/app-id": "x"},
                "inputs": [{"name": "i", "component": "c", "futureField": 1}],
                "bindings": {"c": {"type": "bindings.cron", "version": "v1",
                    "metadata": [{"name": "schedule", "value": "@every 2s"}]}},
                "template": {"containers": []}, "scaleOptions": {"minReplicas": 0}}
        }))
        .unwrap();
        let full = f.spec.clone();
        f.metadata.managed_fields = Some(vec![Default::default()]);
        f.metadata.annotations = Some(
            [
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".to_string(),
                ),
                ("keep".to_string(), "me".to_string()),
            ]
            .into(),
        );
        let store = FunctionStore::from_objects(vec![f], vec![]);
        let cached = store.cached("a", "f").unwrap();
        assert!(cached.metadata.managed_fields.is_none());
        assert!(cached.metadata.annotations.is_none());
        let serving = cached.spec.serving.as_ref().unwrap();
        assert!(serving.template.is_none() && serving.scale_options.is_none());
        assert!(serving.bindings.as_ref().unwrap()["c"].metadata.is_empty());
        assert!(cached.spec.extra.is_empty());
        // what mode resolution and FUNC_CONTEXT read is unchanged
        let name = "f";
        assert_eq!(
            crate::model::mode::resolve(name, "a", &cached.spec, "cluster.local"),
            crate::model::mode::resolve(name, "a", &full, "cluster.local")
        );
        assert_eq!(
            crate::model::func_context::func_context(name, &cached.spec),
            crate::model::func_context::func_context(name, &full)
        );
    }

    #[test]
    fn slimmed_v1beta2_functions_keep_what_the_contexts_read() {
        let doc = serde_json::json!({
            "apiVersion": "core.openfunction.io/v1beta2", "kind": "Function",
            "metadata": {"name": "f", "namespace": "a",
                "annotations": {"plugins": "pre: [p]", "plugins.tracing": "enabled: false"}},
            "spec": {"image": "i", "version": "v1", "build": {"x": 1}, "serving": {
                "template": {"containers": []}, "scaleOptions": {"maxReplicas": 3},
                "workloadType": "Deployment",
                "triggers": {"http": {"port": 9000, "route": {"gatewayRef": {"name": "gw", "namespace": "n"}}},
                    "dapr": [{"name": "c", "inputName": "in"}],
                    "inputs": [{"dapr": {"name": "s"}}]},
                "bindings": {"c": {"type": "bindings.cron", "version": "v1",
                    "metadata": [{"name": "schedule", "value": "@every 2s"}]}},
                "states": {"s": {"spec": {"type": "state.redis", "version": "v1",
                    "metadata": [{"name": "redisHost", "value": "r:6379"}]}}},
                "outputs": [{"dapr": {"name": "o", "type": "bindings.kafka", "operation": "create"}}],
                "hooks": {"pre": ["a"], "post": ["b"]},
                "tracing": {"enabled": true, "provider": {"name": "skywalking"}}
            }}
        });
        let full = crate::model::v1beta2::read_function(doc).unwrap();
        let store = FunctionStore::from_objects(vec![full.clone()], vec![]);
        let cached = store.cached("a", "f").unwrap();
        let src = cached.spec.v1beta2.as_ref().unwrap();
        let serving = src.spec.serving.as_ref().unwrap();
        assert!(serving.template.is_none() && serving.scale_options.is_none());
        assert!(
            serving.states.as_ref().unwrap()["s"]
                .spec
                .as_ref()
                .unwrap()
                .metadata
                .is_empty()
        );
        assert!(src.spec.extra.is_empty());
        use crate::model::func_context::{func_context, func_context_v1beta2};
        assert_eq!(
            crate::model::mode::resolve("f", "a", &cached.spec, "cluster.local"),
            crate::model::mode::resolve("f", "a", &full.spec, "cluster.local")
        );
        assert_eq!(
            func_context("f", &cached.spec),
            func_context("f", &full.spec)
        );
        assert_eq!(
            func_context_v1beta2("f", &cached.spec),
            func_context_v1beta2("f", &full.spec)
        );
        assert!(func_context("f", &cached.spec).contains(r#""prePlugins":["p"]"#));
    }

    #[test]
    fn documents_split_fast_path_and_yaml_agree() {
        let text = "# header\n---\n{\"a\": 1, \"b\": [\"x\"]}\n---\na: 2\nb: |\n  line\n  ---x\n---\n# only a comment\n---\n{c: 3}\n";
        let fast = parse_documents(text).unwrap();
        let mut reader = text.as_bytes();
        let yaml: Vec<Value> = serde_saphyr::read::<_, Value>(&mut reader)
            .map(|d| d.unwrap())
            .filter(|d| !d.is_null())
            .collect();
        assert_eq!(fast, yaml);
        assert_eq!(fast.len(), 3);
        assert_eq!(fast[1]["b"], "line\n---x\n");
        // a marker with content on its line takes the YAML parser's path
        assert_eq!(
            parse_documents("--- {a: 1}\n--- {a: 2}\n").unwrap().len(),
            2
        );
    }

    #[test]
    fn loads_the_fixture_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/functions");
        let store = FunctionStore::from_dir(&dir).unwrap();
        assert_eq!(store.len(), 6);
        assert!(store.cached("default", "cron-input-kafka-output").is_some());
    }

    #[test]
    fn object_names() {
        for ok in ["f", "cron-kafka", "a.b-c", "0", "x".repeat(253).as_str()] {
            assert!(is_object_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../a",
            "a/b",
            "f?x=1",
            "F",
            "-f",
            "f-",
            "f%2F",
            "a b",
            "x".repeat(254).as_str(),
        ] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }

    #[test]
    fn bad_yaml_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "a: [unclosed").unwrap();
        let err = FunctionStore::from_dir(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bad.yaml"), "{err}");
    }
}
