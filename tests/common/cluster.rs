//! The opt-in cluster tests' access to a real cluster: connect when
//! `KUBECONFIG` (or an in-cluster config) is there, else say they skip.

use std::future::Future;
use std::time::{Duration, Instant};

use kube::Client;

/// A client of the configured cluster, or `None` (printed) when there is
/// none or it does not answer.
pub async fn cluster() -> Option<Client> {
    let configured = std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if !configured {
        println!("skipped: KUBECONFIG is not set (no cluster to test against)");
        return None;
    }
    let client = match tokio::time::timeout(Duration::from_secs(15), Client::try_default()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            println!("skipped: no usable kubeconfig ({e})");
            return None;
        }
        Err(_) => {
            println!("skipped: loading the kubeconfig timed out");
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(15), client.apiserver_version()).await {
        Ok(Ok(v)) => {
            println!("cluster: Kubernetes {}.{}", v.major, v.minor);
            Some(client)
        }
        Ok(Err(e)) => {
            println!("skipped: the cluster is not reachable ({e})");
            None
        }
        Err(_) => {
            println!("skipped: the cluster did not answer in 15 s");
            None
        }
    }
}

/// Poll `probe` every 500 ms until it gives a value; panic after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            println!("  {what}: {:.1?}", start.elapsed());
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A short random suffix for names of test objects.
pub fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:x}",
        (nanos ^ (u128::from(std::process::id()) << 40)) & 0xff_ffff_ffff
    )
}

/// Functions of `ns` in `version` (the one the product reads).
pub fn functions_api(
    client: &Client,
    ns: &str,
    version: openfunction_dapr::model::v1beta2::ApiVersion,
) -> kube::Api<kube::api::DynamicObject> {
    let resource = kube::core::ApiResource {
        group: openfunction_dapr::model::v1beta2::GROUP.into(),
        version: version.as_str().into(),
        api_version: version.api_version().into(),
        kind: "Function".into(),
        plural: "functions".into(),
    };
    kube::Api::namespaced_with(client.clone(), ns, &resource)
}

/// Creates `f` (a v1beta1 fixture) in `ns` in `version`, converted as
/// OpenFunction v1.2.0's conversion webhook does where that is `v1beta2`,
/// and returns it as created.
pub async fn create_function(
    client: &Client,
    ns: &str,
    version: openfunction_dapr::model::v1beta2::ApiVersion,
    f: &openfunction_dapr::model::function::Function,
) -> openfunction_dapr::model::function::Function {
    use openfunction_dapr::model::v1beta2::{ApiVersion, read_function};
    let mut f = f.clone();
    f.metadata.namespace = Some(ns.to_owned());
    let mut doc = super::harness::function_document(&f);
    if version == ApiVersion::V1beta2 {
        doc = super::harness::v1beta2_document(&doc);
    }
    let obj: kube::api::DynamicObject = serde_json::from_value(doc).unwrap();
    let name = f.metadata.name.clone().unwrap_or_default();
    let created = functions_api(client, ns, version)
        .create(&kube::api::PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating Function {name}: {e}"));
    read_function(serde_json::to_value(created).unwrap()).unwrap()
}
