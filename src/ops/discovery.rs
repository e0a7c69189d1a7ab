//! Which versions of a resource the API server serves (API discovery), so
//! a watch never asks for a version that needs a conversion webhook.

use std::time::Duration;

use kube::Client;
use kube::runtime::watcher;
use tracing::warn;

use crate::model::v1beta2::{ApiVersion, GROUP, VERSIONS};

/// How often the served versions are looked at again (a CRD change that
/// adds or removes a served version is noticed within this period).
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

/// The versions among `candidates` under which `group` serves `plural`, in
/// the order of `candidates`. A group version the API server does not know
/// (404) serves nothing; any other error is returned.
pub async fn served_versions<'a>(
    client: &Client,
    group: &str,
    plural: &str,
    candidates: &[&'a str],
) -> Result<Vec<&'a str>, kube::Error> {
    let mut served = Vec::new();
    for version in candidates {
        match client
            .list_api_group_resources(&format!("{group}/{version}"))
            .await
        {
            Ok(list) if list.resources.iter().any(|r| r.name == plural) => served.push(*version),
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(served)
}

/// [`served_versions`], retried with backoff until the API server answers.
pub async fn served_versions_retrying<'a>(
    client: &Client,
    group: &str,
    plural: &str,
    candidates: &[&'a str],
) -> Vec<&'a str> {
    let mut delay = Duration::from_millis(500);
    loop {
        match served_versions(client, group, plural, candidates).await {
            Ok(v) => return v,
            Err(e) => {
                warn!(error = %e, group, plural, retry_in = ?delay,
                    "cannot reach the API server to discover the served versions");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The version in which the product reads `core.openfunction.io` `plural`
/// (`functions` or `servings`): [`ApiVersion::choose`] of the versions the
/// API server serves; `None` when it serves neither.
pub async fn version_to_read(
    client: &Client,
    plural: &str,
) -> Result<Option<ApiVersion>, kube::Error> {
    served_versions(client, GROUP, plural, &VERSIONS)
        .await
        .map(ApiVersion::choose)
}

/// [`version_to_read`], retried with backoff until the API server answers.
pub async fn version_to_read_retrying(client: &Client, plural: &str) -> Option<ApiVersion> {
    ApiVersion::choose(served_versions_retrying(client, GROUP, plural, &VERSIONS).await)
}

/// A watcher event with its object converted by `f`.
pub fn map_event<A, B>(event: watcher::Event<A>, f: impl Fn(A) -> B) -> watcher::Event<B> {
    match event {
        watcher::Event::Apply(a) => watcher::Event::Apply(f(a)),
        watcher::Event::Delete(a) => watcher::Event::Delete(f(a)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(a) => watcher::Event::InitApply(f(a)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}
