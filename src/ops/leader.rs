//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one
//! replica runs the controller while every replica serves the webhook.
//!
//! Built on the `kube-lease-manager` crate (server-side apply on the Lease,
//! conflict detection). This module adds what a controller needs around it:
//!
//! - every Lease request has its own timeout ([`LeaderSettings::request_timeout`]),
//!   so a renewal that hangs fails well before the lease runs out;
//! - the leader stops its work as soon as a renewal fails or the lease is
//!   lost, instead of carrying on and overlapping with the next leader;
//! - after stepping down the manager is rebuilt, so the next term starts
//!   from the Lease as it is on the server;
//! - on shutdown the work is stopped first, then the lease is released so
//!   another replica can take over at once.
//!
//! Timing, with the defaults (15 s lease, 5 s grace, 3 s request timeout):
//! the leader renews 5 s before its lease expires (every ~10 s). A renewal
//! that fails or times out (≤ 3 s) makes the leader stop at once, i.e. at
//! least 2 s before the lease could be taken by another replica. Followers
//! sleep until the observed lease expires, then take it: if the leader dies
//! without releasing, another replica leads at most one lease duration
//! (15 s) after the last renewal, plus up to 1 s of randomised wait and one
//! round trip. A clean shutdown releases the lease; followers notice it when
//! they next look (at the latest when the old lease would have expired).
//! Clock skew between nodes up to the grace period (5 s) is tolerated.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Default name of the Lease.
pub const DEFAULT_LEASE_NAME: &str = "openfunction-dapr-controller";
/// Default namespace of the Lease when `POD_NAMESPACE` is not set.
pub const DEFAULT_LEASE_NAMESPACE: &str = "openfunction-dapr";
/// Default lease duration.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default grace: the leader renews this long before the lease expires.
pub const DEFAULT_RENEW_GRACE: Duration = Duration::from_secs(5);
/// Default timeout of each Lease request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long stopped work may take to finish before it is aborted.
pub const WORK_STOP_TIMEOUT: Duration = Duration::from_secs(10);

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where and how to hold the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderSettings {
    pub lease_name: String,
    pub namespace: String,
    /// Unique per replica: the pod name.
    pub identity: String,
    /// How long a lease is valid after its last renewal (whole seconds).
    pub lease_duration: Duration,
    /// The leader renews this long before expiry (whole seconds, less than
    /// `lease_duration`); also the tolerated clock skew.
    pub renew_grace: Duration,
    /// Timeout of every Lease request; keep it below `renew_grace`.
    pub request_timeout: Duration,
}

impl LeaderSettings {
    /// Defaults with the given identity.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            lease_name: DEFAULT_LEASE_NAME.to_owned(),
            namespace: DEFAULT_LEASE_NAMESPACE.to_owned(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_grace: DEFAULT_RENEW_GRACE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    fn checked(&self) -> Result<(u64, u64), LeaderError> {
        let duration = self.lease_duration.as_secs();
        let grace = self.renew_grace.as_secs();
        if grace == 0 || duration <= grace {
            return Err(LeaderError::Settings(format!(
                "the renew grace ({grace} s) must be at least 1 s and less than the lease duration ({duration} s)"
            )));
        }
        if self.identity.is_empty() {
            return Err(LeaderError::Settings("empty identity".to_owned()));
        }
        Ok((duration, grace))
    }
}

/// This replica's identity: `POD_NAME`, else the host name, else a
/// process-unique fallback.
pub fn default_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            format!("openfunction-dapr-{}-{nanos:x}", std::process::id())
        })
}

/// The namespace of the Lease: `POD_NAMESPACE`, else [`DEFAULT_LEASE_NAMESPACE`].
pub fn default_lease_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_LEASE_NAMESPACE.to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election settings: {0}")]
    Settings(String),
}

/// A client whose every request fails after `timeout` (for the small Lease
/// requests; never use it for watches).
pub fn with_request_timeout(client: Client, timeout: Duration) -> Client {
    let namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |req: Request<Body>| {
        let client = client.clone();
        async move {
            match tokio::time::timeout(timeout, client.send(req)).await {
                Ok(Ok(resp)) => Ok::<Response<Body>, tower::BoxError>(resp),
                Ok(Err(e)) => Err(Box::new(e) as tower::BoxError),
                Err(_) => Err(format!("request timed out after {timeout:?}").into()),
            }
        }
    });
    Client::new(service, namespace)
}

enum TermEnd<E> {
    Shutdown,
    Lost,
    RenewFailed(String),
    WorkEnded(Result<Result<(), E>, tokio::task::JoinError>),
}

/// Run `work` only while this replica holds the lease, until `shutdown`.
///
/// `work` is started each time the lease is won and gets a receiver that
/// fires when it must stop (lease lost, renewal failed, or shutdown); it
/// should then finish promptly (it is aborted after [`WORK_STOP_TIMEOUT`]).
/// If `work` ends on its own, the lease is released and, after a back-off,
/// contested again. `on_change` is told every change of leadership.
///
/// Returns after `shutdown`, once the work has stopped and the lease is
/// released. API errors never end it: they are logged and retried.
pub async fn run_while_leader<W, Fut, E>(
    client: Client,
    settings: LeaderSettings,
    mut work: W,
    on_change: impl Fn(bool) + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), LeaderError>
where
    W: FnMut(oneshot::Receiver<()>) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (duration, grace) = settings.checked()?;
    let client = with_request_timeout(client, settings.request_timeout);
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    let mut backoff = MIN_BACKOFF;

    'manager: loop {
        // (Re)build the manager: reads (or creates) the Lease.
        let build = LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(duration)
            .with_grace(grace)
            .build();
        let manager: LeaseManager = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            built = build => match built {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, lease = %settings.lease_name, namespace = %settings.namespace,
                        "cannot set up the leader election lease; retrying in {backoff:?}");
                    if sleep_or_shutdown(backoff, &mut shutdown).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue 'manager;
                }
            }
        };
        debug!(identity = %settings.identity, "contesting the lease");

        loop {
            // Follower: wait to win the lease.
            let won = tokio::select! {
                _ = &mut shutdown => {
                    release(&manager, &settings).await;
                    return Ok(());
                }
                changed = manager.changed() => changed,
            };
            match won {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(error = %e, "leader election: lease request failed; retrying in {backoff:?}");
                    if sleep_or_shutdown(backoff, &mut shutdown).await {
                        release(&manager, &settings).await;
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue 'manager;
                }
            }

            // Leader: run the work until something ends the term.
            info!(identity = %settings.identity, lease = %settings.lease_name,
                namespace = %settings.namespace, "became the leader; starting the controller");
            on_change(true);
            let (stop_tx, stop_rx) = oneshot::channel();
            let mut task = tokio::spawn(work(stop_rx));
            let end = tokio::select! {
                _ = &mut shutdown => TermEnd::Shutdown,
                changed = manager.changed() => match changed {
                    Ok(_) => TermEnd::Lost,
                    Err(e) => TermEnd::RenewFailed(e.to_string()),
                },
                ended = &mut task => TermEnd::WorkEnded(ended),
            };
            if !matches!(end, TermEnd::WorkEnded(_)) {
                let _ = stop_tx.send(());
                if tokio::time::timeout(WORK_STOP_TIMEOUT, &mut task)
                    .await
                    .is_err()
                {
                    warn!("the controller did not stop in {WORK_STOP_TIMEOUT:?}; aborting it");
                    task.abort();
                }
            }
            on_change(false);
            match end {
                TermEnd::Shutdown => {
                    info!("shutting down: releasing the lease");
                    release(&manager, &settings).await;
                    return Ok(());
                }
                TermEnd::Lost => {
                    warn!("lost the lease to another replica; the controller stopped");
                    backoff = MIN_BACKOFF;
                    continue 'manager;
                }
                TermEnd::RenewFailed(e) => {
                    warn!(error = %e, "could not renew the lease; the controller stopped");
                }
                TermEnd::WorkEnded(Ok(Ok(()))) => {
                    warn!("the controller ended on its own; giving up the lease");
                }
                TermEnd::WorkEnded(Ok(Err(e))) => {
                    warn!(error = %e, "the controller failed; giving up the lease");
                }
                TermEnd::WorkEnded(Err(e)) => {
                    warn!(error = %e, "the controller panicked; giving up the lease");
                }
            }
            release(&manager, &settings).await;
            if sleep_or_shutdown(backoff, &mut shutdown).await {
                return Ok(());
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue 'manager;
        }
    }
}

async fn release(manager: &LeaseManager, settings: &LeaderSettings) {
    let timeout = settings.request_timeout * 3;
    match tokio::time::timeout(timeout, manager.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "could not release the lease"),
        Err(_) => debug!("releasing the lease timed out"),
    }
}

/// Sleep `d`; true when shutdown came first.
async fn sleep_or_shutdown<S: Future<Output = ()> + Unpin>(d: Duration, shutdown: &mut S) -> bool {
    tokio::select! {
        _ = shutdown => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = LeaderSettings::new("me");
        assert_eq!(ok.checked().unwrap(), (15, 5));
        assert!(ok.request_timeout < ok.renew_grace);
        let mut bad = ok.clone();
        bad.renew_grace = Duration::from_secs(15);
        assert!(bad.checked().is_err());
        let mut bad = ok.clone();
        bad.renew_grace = Duration::ZERO;
        assert!(bad.checked().is_err());
        let mut bad = ok;
        bad.identity.clear();
        assert!(bad.checked().is_err());
    }

    #[test]
    fn identity_is_never_empty() {
        assert!(!default_identity().is_empty());
        assert!(!default_lease_namespace().is_empty());
    }
}
