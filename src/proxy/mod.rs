//! `openfunction-dapr proxy`: the data plane beside the shared daprd of a
//! standalone function (SPEC section 9).
//!
//! daprd talks to the proxy as to its app (gRPC `AppCallback`, or Dapr's
//! HTTP app protocol); the proxy lists the function's inputs from
//! `FUNC_CONTEXT` ([`context`]), finds the function pods ([`discovery`]),
//! picks one by least outstanding requests ([`balance`]) and answers daprd
//! only after the function did ([`deliver`]). Health and Prometheus
//! metrics ([`metrics`]) are on a separate admin port.

pub mod balance;
pub mod context;
pub mod deliver;
pub mod discovery;
pub mod grpc;
pub mod http;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ops::server::{self, Health};
use context::FunctionInputs;
use deliver::{Deliverer, Gate};
use discovery::{Pool, Resolve};
use metrics::ProxyMetrics;

/// Default of `--event-timeout`.
pub const DEFAULT_EVENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `--max-in-flight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Default of `--drain-timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// The app protocol daprd speaks to the proxy (and the proxy to functions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    /// `APP_PROTOCOL` as the webhook and controller write it.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "grpc" => Ok(Self::Grpc),
            "http" => Ok(Self::Http),
            other => Err(format!(
                "APP_PROTOCOL {other:?} is not supported by the proxy (grpc or http)"
            )),
        }
    }
}

/// Everything [`serve`] needs.
pub struct ProxyConfig {
    pub inputs: FunctionInputs,
    pub protocol: Protocol,
    pub resolver: Arc<dyn Resolve>,
    pub event_timeout: Duration,
    pub max_in_flight: usize,
    /// After the shutdown signal, how long in-flight events may take.
    pub drain_timeout: Duration,
}

/// Serves the app channel on `listener` (and health and metrics on
/// `admin`) until `shutdown` completes; then stops taking events, lets the
/// in-flight ones finish for up to the drain timeout, and returns.
pub async fn serve(
    config: ProxyConfig,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(ProxyMetrics::new());
    let health = Health::new();
    let gate = Gate::new(config.max_in_flight);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let admin_task = admin.map(|admin| {
        let router = server::admin_router(health.clone())
            .merge(metrics.router())
            .route("/healthz", get(|| async { "ok" }));
        tokio::spawn(server::serve_plain(admin, router, stopped()))
    });

    tracing::info!(
        function = %config.inputs.name,
        protocol = ?config.protocol,
        bindings = ?config.inputs.bindings,
        topics = ?config.inputs.topics.iter().map(|t| format!("{}/{}", t.pubsub, t.topic)).collect::<Vec<_>>(),
        target = %config.resolver.describe(),
        max_in_flight = config.max_in_flight,
        event_timeout = ?config.event_timeout,
        "proxy serving"
    );
    for w in &config.inputs.warnings {
        tracing::warn!("FUNC_CONTEXT: {w}");
    }

    let app = match config.protocol {
        Protocol::Grpc => {
            let pool = Arc::new(Pool::new(grpc::connect));
            let discovery = spawn_discovery(&config, pool.clone(), &metrics, stopped());
            let channel = grpc::AppChannel::new(
                config.inputs.clone(),
                Deliverer {
                    pool,
                    gate: gate.clone(),
                    metrics: metrics.clone(),
                    event_timeout: config.event_timeout,
                },
            );
            let server = tonic::transport::Server::builder()
                // Streams beyond twice the in-flight cap wait in daprd's
                // client, not in this process: memory stays bounded.
                .max_concurrent_streams(Some(max_streams(config.max_in_flight)))
                .http2_keepalive_interval(Some(Duration::from_secs(20)))
                .add_routes(channel.routes())
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    stopped(),
                );
            (
                tokio::spawn(async move {
                    if let Err(e) = server.await {
                        tracing::error!(error = %e, "gRPC server failed");
                    }
                }),
                discovery,
            )
        }
        Protocol::Http => {
            let client = http::client();
            let pool = Arc::new(Pool::new(|addr: SocketAddr| addr));
            let discovery = spawn_discovery(&config, pool.clone(), &metrics, stopped());
            let router = http::router(
                config.inputs.clone(),
                client,
                Deliverer {
                    pool,
                    gate: gate.clone(),
                    metrics: metrics.clone(),
                    event_timeout: config.event_timeout,
                },
            );
            let opts = server::ServeOptions {
                // Deliveries may wait for a pod up to the event timeout,
                // and functions may take long: daprd decides when to give up.
                request_timeout: Duration::from_secs(365 * 24 * 3600),
                drain_timeout: config.drain_timeout,
                ..server::ServeOptions::default()
            };
            (
                tokio::spawn(server::serve_plain_with(listener, router, opts, stopped())),
                discovery,
            )
        }
    };
    health.set_ready(true);

    shutdown.await;
    tracing::info!(
        in_flight = gate.in_flight(),
        "shutting down: no new events; draining"
    );
    health.set_ready(false);
    gate.drain();
    let (server_task, discovery_task) = app;
    if tokio::time::timeout(config.drain_timeout, gate.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = gate.in_flight(),
            timeout = ?config.drain_timeout,
            "drain timeout elapsed; abandoning in-flight events (daprd redelivers them)"
        );
    }
    let _ = stop_tx.send(true);
    // Let the answers just produced reach daprd, then close.
    if tokio::time::timeout(Duration::from_secs(2), server_task)
        .await
        .is_err()
    {
        tracing::debug!("app server did not close in time");
    }
    let _ = discovery_task.await;
    if let Some(admin) = admin_task {
        let _ = admin.await;
    }
    tracing::info!("proxy stopped");
    Ok(())
}

/// HTTP/2 streams daprd may open at once: twice the in-flight cap (events
/// waiting for a slot), at least 64.
fn max_streams(max_in_flight: usize) -> u32 {
    u32::try_from(max_in_flight.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .max(64)
}

fn spawn_discovery<C: Clone + Send + 'static>(
    config: &ProxyConfig,
    pool: Arc<Pool<C>>,
    metrics: &Arc<ProxyMetrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let metrics = metrics.clone();
    tokio::spawn(discovery::run(
        config.resolver.clone(),
        pool,
        move |r| match r {
            Ok(n) => {
                metrics.endpoints.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(_) => {
                metrics.resolutions_failed.inc();
            }
        },
        stop,
    ))
}
