//! The function store: a watch-fed cache of Functions and Servings that the
//! webhook answers from (SPEC section 2), or a fixed set loaded from YAML
//! files (the embedded default, no cluster needed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::function::{Function, Serving, serving_function_name};
use crate::workload::Owner;

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
    servings: bool,
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
            strip(&mut f);
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
            for (index, doc) in parse_documents(&text)
                .map_err(|message| LoadError::Parse {
                    path: path.clone(),
                    index: 0,
                    message,
                })?
                .into_iter()
                .enumerate()
            {
                let parse_err = |e: serde_json::Error| LoadError::Parse {
                    path: path.clone(),
                    index: index + 1,
                    message: e.to_string(),
                };
                match (
                    doc.get("apiVersion").and_then(Value::as_str),
                    doc.get("kind").and_then(Value::as_str),
                ) {
                    (Some(v), Some("Function")) if v.starts_with("core.openfunction.io/") => {
                        functions.push(serde_json::from_value(doc).map_err(parse_err)?)
                    }
                    (Some(v), Some("Serving")) if v.starts_with("core.openfunction.io/") => {
                        servings.push(serde_json::from_value(doc).map_err(parse_err)?)
                    }
                    (_, kind) => debug!(path = %path.display(), index, ?kind, "ignoring document"),
                }
            }
        }
        info!(dir = %dir.display(), functions = functions.len(), servings = servings.len(), "loaded local store");
        Ok(Self::from_objects(functions, servings))
    }

    /// A store fed by watches on the cluster, plus the future that drives
    /// the watches (run it for the life of the process). `namespace`
    /// restricts the watches; `timeout` bounds a live GET on a cache miss.
    ///
    /// Serving is watched (metadata only) when its CRD is served; finding
    /// that out retries with backoff while the API server is unreachable.
    pub async fn watch(
        client: Client,
        namespace: Option<&str>,
        timeout: Duration,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let functions: Api<Function> = api(&client, namespace);
        let servings: Api<PartialObjectMeta<Serving>> = api(&client, namespace);
        let serving_crd = serving_crd_served(&servings).await;

        let (freader, fwriter) = reflector::store::<Function>();
        let fstream = reflector::reflector(
            fwriter,
            watcher(functions, watcher::Config::default().any_semantic())
                .default_backoff()
                .modify(strip),
        );
        let (sreader, mut swriter) = reflector::store::<PartialObjectMeta<Serving>>();
        let sstream = if serving_crd {
            reflector::reflector(
                swriter,
                watcher(servings, watcher::Config::default().any_semantic())
                    .default_backoff()
                    .modify(strip),
            )
            .boxed()
        } else {
            info!("Serving CRD not served: following only the openfunction.io/function label");
            swriter.apply_watcher_event(&watcher::Event::Init);
            swriter.apply_watcher_event(&watcher::Event::InitDone);
            futures::stream::empty().boxed()
        };
        let driver = async move {
            let f = drain("functions", fstream);
            let s = drain("servings", sstream);
            futures::future::join(f, s).await;
        };
        let store = FunctionStore {
            functions: freader,
            servings: sreader,
            live: Some(Live {
                client,
                timeout,
                servings: serving_crd,
            }),
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
                        Some(live) if live.servings => (
                            live.get::<PartialObjectMeta<Serving>>(namespace, serving)
                                .await?
                                .map(|s| s.metadata),
                            Source::Api,
                        ),
                        _ => (None, Source::Cache),
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
            && let Some(mut f) = live.get::<Function>(namespace, &function_name).await?
        {
            strip(&mut f);
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

/// Whether the Serving CRD is served; retries with backoff while the API
/// server cannot be reached.
async fn serving_crd_served(api: &Api<PartialObjectMeta<Serving>>) -> bool {
    let mut delay = Duration::from_millis(500);
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(s)) if s.code == 404 => return false,
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "cannot reach the API server to discover Servings");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn drain<K, S>(what: &'static str, stream: S)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            // The default backoff already spaces out retries.
            warn!(error = %e, what, "watch error");
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
/// documents are skipped. Documents are read one at a time, each under the
/// YAML parser's default budget (a file may hold any number of them).
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut reader = text.as_bytes();
    let mut docs = Vec::new();
    for doc in serde_saphyr::read::<_, Value>(&mut reader) {
        let doc = doc.map_err(|e| e.to_string())?;
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    Ok(docs)
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
    fn managed_fields_are_stripped() {
        let mut f = function(Some("a"), "f");
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
        assert_eq!(cached.metadata.annotations.as_ref().unwrap().len(), 1);
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
