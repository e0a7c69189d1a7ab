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
//!
//! A Lease that cannot be taken for any reason but another holder (its
//! namespace is missing, RBAC forbids it, the API server cannot be reached)
//! is a [`LeaseFault`]: logged at ERROR, naming the cause, at once and then
//! once per minute while it lasts, and reported to the caller (for
//! `/readyz` and the metrics); the elector keeps trying.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube_lease_manager::LeaseManagerError;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

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

/// The namespace of the Lease when none is set: `POD_NAMESPACE`, else the
/// client's default namespace, which kube takes from the service account's
/// namespace file in a cluster and from the kubeconfig context's namespace
/// (`default` when it names none) outside one.
pub fn default_lease_namespace(client_default: &str) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| Some(client_default.trim().to_owned()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_LEASE_NAMESPACE.to_owned())
}

/// Why the Lease cannot be taken, other than another holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFault {
    /// `namespace_missing`, `forbidden`, `unauthorized`, `not_found`,
    /// `api_error`, `unreachable` or `other` (a metrics label).
    pub reason: &'static str,
    /// For people: names the Lease and the cause.
    pub message: String,
}

/// How often a lasting [`LeaseFault`] is logged again.
pub const FAULT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The fault behind a failed Lease request; `None` when another replica
/// simply got there first (a conflict), which is how an election goes.
pub fn classify(e: &LeaseManagerError, settings: &LeaderSettings) -> Option<LeaseFault> {
    let lease = format!("Lease {}/{}", settings.namespace, settings.lease_name);
    let (reason, cause) = match e {
        LeaseManagerError::LeaseAlreadyExists(_) => return None,
        LeaseManagerError::KubeError(kube::Error::Api(status)) => match status.code {
            409 => return None,
            404 if status.message.contains("namespace")
                || status
                    .details
                    .as_ref()
                    .is_some_and(|d| d.kind == "namespaces") =>
            {
                (
                    "namespace_missing",
                    format!(
                        "namespace {:?} does not exist (set --lease-namespace or POD_NAMESPACE): {}",
                        settings.namespace, status.message
                    ),
                )
            }
            404 => ("not_found", status.message.clone()),
            403 => (
                "forbidden",
                format!(
                    "forbidden: the service account may not get, create or update Leases in {:?} ({})",
                    settings.namespace, status.message
                ),
            ),
            401 => ("unauthorized", format!("unauthorized: {}", status.message)),
            code => (
                "api_error",
                format!("the API server answered {code}: {}", status.message),
            ),
        },
        LeaseManagerError::KubeError(e) => (
            "unreachable",
            format!("the API server cannot be reached: {e}"),
        ),
        e => ("other", e.to_string()),
    };
    Some(LeaseFault {
        reason,
        message: format!("cannot take {lease}: {cause}"),
    })
}

/// Logs faults at ERROR once per [`FAULT_LOG_INTERVAL`] (and whenever the
/// cause changes), and tells `report` when a fault starts, changes or ends.
struct FaultLog<R: Fn(Option<&LeaseFault>)> {
    current: Option<LeaseFault>,
    logged_at: Option<std::time::Instant>,
    /// ERROR lines written (for tests).
    logged: u32,
    report: R,
}

impl<R: Fn(Option<&LeaseFault>)> FaultLog<R> {
    fn new(report: R) -> Self {
        FaultLog {
            current: None,
            logged_at: None,
            logged: 0,
            report,
        }
    }

    fn error(&mut self, e: &LeaseManagerError, settings: &LeaderSettings, retry: Duration) {
        self.error_at(e, settings, retry, std::time::Instant::now());
    }

    fn error_at(
        &mut self,
        e: &LeaseManagerError,
        settings: &LeaderSettings,
        retry: Duration,
        now: std::time::Instant,
    ) {
        let Some(fault) = classify(e, settings) else {
            warn!(error = %e, "leader election: lease request failed; retrying in {retry:?}");
            return;
        };
        let changed = self.current.as_ref() != Some(&fault);
        let due = self
            .logged_at
            .is_none_or(|t| now.duration_since(t) >= FAULT_LOG_INTERVAL);
        if changed || due {
            error!(reason = fault.reason, lease = %settings.lease_name, namespace = %settings.namespace,
                "{}; the controller cannot run until this is fixed (retrying; logged again every minute)", fault.message);
            self.logged_at = Some(now);
            self.logged += 1;
        } else {
            debug!(
                reason = fault.reason,
                "{}; retrying in {retry:?}", fault.message
            );
        }
        if changed {
            (self.report)(Some(&fault));
            self.current = Some(fault);
        }
    }

    fn ok(&mut self) {
        if let Some(f) = self.current.take() {
            info!(reason = f.reason, "the Lease can be taken again");
            self.logged_at = None;
            (self.report)(None);
        }
    }
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
    work: W,
    on_change: impl Fn(bool) + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), LeaderError>
where
    W: FnMut(oneshot::Receiver<()>) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    run_while_leader_reporting(client, settings, work, on_change, |_| {}, shutdown).await
}

/// [`run_while_leader`], telling `on_fault` when a [`LeaseFault`] starts
/// (or changes: `Some`) and when it ends (`None`).
pub async fn run_while_leader_reporting<W, Fut, E>(
    client: Client,
    settings: LeaderSettings,
    mut work: W,
    on_change: impl Fn(bool) + Send,
    on_fault: impl Fn(Option<&LeaseFault>) + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), LeaderError>
where
    W: FnMut(oneshot::Receiver<()>) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (duration, grace) = settings.checked()?;
    let mut faults = FaultLog::new(on_fault);
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
                    faults.error(&e, &settings, backoff);
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
                Ok(true) => faults.ok(),
                Ok(false) => {
                    faults.ok();
                    continue;
                }
                Err(e) => {
                    faults.error(&e, &settings, backoff);
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

    fn api_error(code: u16, message: &str, kind: &str) -> LeaseManagerError {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "message": message, "reason": "x", "code": code,
            "details": {"kind": kind}
        }))
        .unwrap();
        LeaseManagerError::KubeError(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn faults_are_classified() {
        let s = LeaderSettings::new("me");
        let reason = |e: LeaseManagerError| classify(&e, &s).map(|f| f.reason);
        assert_eq!(
            reason(api_error(
                404,
                "namespaces \"openfunction-dapr\" not found",
                "namespaces"
            )),
            Some("namespace_missing")
        );
        assert_eq!(
            reason(api_error(403, "forbidden", "leases")),
            Some("forbidden")
        );
        assert_eq!(reason(api_error(401, "no", "")), Some("unauthorized"));
        assert_eq!(reason(api_error(503, "down", "")), Some("api_error"));
        // another replica got there first: how an election goes
        assert_eq!(reason(api_error(409, "conflict", "leases")), None);
        assert_eq!(
            reason(LeaseManagerError::LeaseAlreadyExists("l".into())),
            None
        );
        let f = classify(
            &api_error(
                404,
                "namespaces \"openfunction-dapr\" not found",
                "namespaces",
            ),
            &s,
        )
        .unwrap();
        assert!(
            f.message.starts_with(
                "cannot take Lease openfunction-dapr/openfunction-dapr-controller: namespace"
            ),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_lasting_fault_is_logged_once_a_minute_and_reported_once() {
        let s = LeaderSettings::new("me");
        let reports = std::sync::Mutex::new(Vec::new());
        let mut log = FaultLog::new(|f: Option<&LeaseFault>| {
            reports.lock().unwrap().push(f.map(|f| f.reason))
        });
        let t0 = std::time::Instant::now();
        let missing = api_error(404, "namespaces \"x\" not found", "namespaces");
        // a retry every 5 s for 150 s: logged at 0, 60 and 120 s
        for i in 0..30 {
            log.error_at(
                &missing,
                &s,
                Duration::from_secs(5),
                t0 + Duration::from_secs(5 * i),
            );
        }
        assert_eq!(log.logged, 3);
        // another cause: logged and reported at once
        log.error_at(
            &api_error(403, "forbidden", "leases"),
            &s,
            Duration::from_secs(5),
            t0 + Duration::from_secs(151),
        );
        assert_eq!(log.logged, 4);
        log.ok();
        log.ok();
        assert_eq!(
            *reports.lock().unwrap(),
            vec![Some("namespace_missing"), Some("forbidden"), None]
        );
    }

    #[test]
    fn identity_is_never_empty() {
        assert!(!default_identity().is_empty());
        assert!(!default_lease_namespace("").is_empty());
    }
}
