//! `openfunction-dapr serve`: wires the store, the webhook, TLS, the admin
//! port and (against a cluster) the controller, and runs them until
//! SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cli::ServeArgs;
use crate::controller;
use crate::metrics::Metrics;
use crate::ops::certs;
use crate::ops::server::{self, Health, ServeOptions};
use crate::ops::tls::{self, ReloadingResolver};
use crate::webhook::store::FunctionStore;
use crate::webhook::{self, Webhook};

/// How often mounted certificate files are checked for a new pair.
const CERT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Run until a shutdown signal; a second signal exits at once.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let health = Health::new();
    let metrics = Arc::new(Metrics::new());

    // Admin port first, so probes answer (not ready) while we start.
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_listener = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding admin address {}", args.admin_addr))?;
    info!(addr = %admin_listener.local_addr()?, "admin server listening (/livez, /readyz, /metrics)");
    let admin = tokio::spawn(server::serve_plain(
        admin_listener,
        server::admin_router(health.clone()).merge(metrics.router()),
        stopped(stop_rx.clone()),
    ));

    // One client for the certificate bootstrap, the store and the controller.
    let client = match &args.local {
        Some(_) => None,
        None => Some(kube::Client::try_default().await.context(
            "no cluster configuration (kubeconfig or in-cluster); use --local DIR to run without a cluster",
        )?),
    };
    let resolver = certificate(&args, client.as_ref()).await?;
    tokio::spawn(tls::watch(resolver.clone(), CERT_POLL_INTERVAL));
    {
        // Keep the expiry gauge right across reloads.
        let (resolver, metrics) = (resolver.clone(), metrics.clone());
        tokio::spawn(async move {
            loop {
                if let Some(t) = resolver.not_after() {
                    metrics.set_certificate_expiry(t);
                }
                tokio::time::sleep(CERT_POLL_INTERVAL).await;
            }
        });
    }
    let client_ca = match &args.client_ca {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let tls_config = tls::server_config(resolver, client_ca.as_deref())?;

    let (store, controller) = match (&args.local, client) {
        (Some(dir), _) => (FunctionStore::from_dir(dir)?, None),
        (None, None) => unreachable!("a client is made whenever --local is absent"),
        (None, Some(client)) => {
            let settings = args
                .controller
                .clone()
                .with_shared(&args.cluster_domain, args.namespace.clone());
            let report = Arc::new(ControllerReport {
                metrics: metrics.clone(),
                health: health.clone(),
            });
            let controller = tokio::spawn(controller::run_with_metrics(
                client.clone(),
                settings,
                report,
                stopped(stop_rx.clone()),
            ));
            let (store, driver) = FunctionStore::watch_with(
                client,
                args.namespace.as_deref(),
                args.lookup_timeout,
                metrics.clone(),
                args.controller.api_discovery(),
            )
            .await;
            tokio::spawn(driver);
            (store, Some(controller))
        }
    };

    let webhook = Arc::new(
        Webhook::new(store.clone(), args.cluster_domain.clone())
            .with_grpc_endpoint_form(args.dapr_grpc_endpoint_form)
            .with_observer(metrics.clone()),
    );
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding webhook address {}", args.addr))?;
    info!(addr = %listener.local_addr()?, path = webhook::MUTATE_PATH, "webhook listening (HTTPS)");
    let opts = ServeOptions {
        drain_timeout: args.drain_timeout,
        ..ServeOptions::default()
    };
    let https = tokio::spawn(server::serve_tls(
        listener,
        tls_config,
        webhook::router(webhook),
        opts,
        stopped(stop_rx.clone()),
    ));

    {
        let health = health.clone();
        tokio::spawn(async move {
            store.ready().await;
            info!(functions = store.len(), "function caches synced; ready");
            health.set_ready(true);
        });
    }

    server::shutdown_signal().await;
    health.set_ready(false);
    info!(delay = ?args.shutdown_delay, "shutting down: readiness false, still answering");
    tokio::select! {
        () = tokio::time::sleep(args.shutdown_delay) => {}
        () = server::shutdown_signal() => {
            warn!("second signal: exiting at once");
            std::process::exit(1);
        }
    }
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = https => {}
        () = server::shutdown_signal() => {
            warn!("second signal: exiting at once");
            std::process::exit(1);
        }
    }
    if let Some(controller) = controller {
        // Stops reconciling and releases the Lease; bounded by the drain timeout.
        match tokio::time::timeout(args.drain_timeout, controller).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "controller stopped with an error"),
            Err(_) => warn!("controller did not stop in time"),
            _ => {}
        }
    }
    let _ = admin.await;
    info!("drained; bye");
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The mounted pair; else, in a cluster, the pair kept in a Secret (see
/// `certs`); else a self-signed one whose CA is written to disk.
async fn certificate(
    args: &ServeArgs,
    client: Option<&kube::Client>,
) -> anyhow::Result<Arc<ReloadingResolver>> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let r = ReloadingResolver::from_files(cert, key)
            .with_context(|| format!("loading {} and {}", cert.display(), key.display()))?;
        info!(cert = %cert.display(), "serving certificate loaded; reloaded when the files change");
        return Ok(Arc::new(r));
    }
    if let Some(secret) = certs::bootstrap_secret(
        args.cert_secret.as_deref(),
        args.local.is_some(),
        certs::in_cluster(),
    ) && let Some(client) = client
    {
        let target = certs::CertTarget {
            namespace: args.cert_namespace.as_deref(),
            service: &args.webhook_service,
            webhook_config_name: &args.webhook_config_name,
        };
        return certs::start(client.clone(), &target, secret).await;
    }
    let names = vec!["localhost".to_owned()];
    let generated = tls::generate_ca_and_cert(&names, true)?;
    let ca_out = args
        .ca_out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("openfunction-dapr-ca.pem"));
    write_ca(&ca_out, &generated.ca_pem)?;
    info!(ca = %ca_out.display(), "generated a self-signed certificate for localhost and 127.0.0.1; trust this CA");
    Ok(Arc::new(ReloadingResolver::from_pem(
        &generated.cert_pem,
        &generated.key_pem,
    )?))
}

fn write_ca(path: &PathBuf, pem: &str) -> anyhow::Result<()> {
    std::fs::write(path, pem).with_context(|| format!("writing the CA to {}", path.display()))
}

/// The controller reports to the metrics, and a Lease fault also to
/// `/readyz` (as a detail: the webhook stays ready). Forward every method
/// of [`controller::ControllerMetrics`].
struct ControllerReport {
    metrics: Arc<Metrics>,
    health: Health,
}

impl controller::ControllerMetrics for ControllerReport {
    fn reconciled(&self, ok: bool, duration: Duration) {
        controller::ControllerMetrics::reconciled(&*self.metrics, ok, duration);
    }
    fn write(&self, verb: &'static str, kind: &'static str) {
        self.metrics.write(verb, kind);
    }
    fn leader(&self, is_leader: bool) {
        self.metrics.leader(is_leader);
    }
    fn proxies(&self, count: usize) {
        self.metrics.proxies(count);
    }
    fn deferred(&self, count: usize) {
        self.metrics.deferred(count);
    }
    fn api_version(&self, version: Option<crate::model::v1beta2::ApiVersion>) {
        controller::ControllerMetrics::api_version(&*self.metrics, version);
    }
    fn lease_fault(&self, fault: Option<&crate::ops::leader::LeaseFault>) {
        self.metrics.lease_fault(fault);
        self.health.set_detail(
            "controller",
            fault.map(|f| format!("{} (retrying; the controller is not running)", f.message)),
        );
    }
}
