//! HTTP serving: the webhook's HTTPS server, the plain-HTTP admin server and
//! the admin routes (`/livez`, `/readyz`).
//!
//! Both servers share one accept loop:
//!
//! - every accepted socket gets `TCP_NODELAY` (HTTP/2 frames are small and
//!   latency-bound) and its own task; the TLS handshake runs in that task,
//!   bounded by [`ServeOptions::handshake_timeout`], so a slow or hostile
//!   client never stalls the loop;
//! - HTTPS speaks HTTP/2 when ALPN selects `h2` and HTTP/1.1 otherwise (HTTP/2
//!   over TLS requires ALPN); the admin port speaks HTTP/1.1;
//! - a request's headers must arrive within
//!   [`ServeOptions::header_read_timeout`], and the whole request (body
//!   included) must be answered within [`ServeOptions::request_timeout`]
//!   (else `408`), so a slow client cannot hold a connection slot forever;
//! - accept errors (`EMFILE`, `ENOBUFS`, ...) are logged and retried after a
//!   short pause instead of ending the server;
//! - at most [`ServeOptions::max_connections`] connections are open at once;
//!   beyond that new clients wait in the kernel's backlog;
//! - on shutdown the listener is closed (new connections are refused), idle
//!   keep-alive connections are closed, HTTP/2 clients get a GOAWAY, and
//!   in-flight requests run to completion for up to
//!   [`ServeOptions::drain_timeout`], after which the rest are dropped.
//!
//! Handlers can read the peer address with
//! `axum::extract::ConnectInfo<std::net::SocketAddr>`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinError, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

/// Pause after an accept error that is not about a single connection.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// Tunables of [`serve_tls`] and [`serve_plain`].
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Time allowed for a client to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for an HTTP/1 client to send a request's headers; this
    /// also bounds how long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Time allowed for one request, from its headers to the handler's
    /// answer (reading the body included): a client that stalls mid-body
    /// gets `408 Request Timeout` instead of holding its connection slot
    /// forever. The API server gives up on a webhook after at most 30 s.
    pub request_timeout: Duration,
    /// On shutdown, how long in-flight requests may run before their
    /// connections are dropped.
    pub drain_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings (`None`: no pings).
    pub h2_keepalive_interval: Option<Duration>,
    /// How long to wait for a ping acknowledgement before closing.
    pub h2_keepalive_timeout: Duration,
    /// Concurrent streams allowed per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Connections served at once; further clients wait to be accepted.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
            h2_keepalive_interval: Some(Duration::from_secs(20)),
            h2_keepalive_timeout: Duration::from_secs(20),
            h2_max_concurrent_streams: 256,
            max_connections: 1024,
        }
    }
}

/// Serves `app` over HTTPS on `listener` until `shutdown` completes, then
/// drains connections (see the module docs) and returns.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, Some(TlsAcceptor::from(tls)), app, opts, shutdown).await;
}

/// Serves `app` over plain HTTP/1.1 on `listener` (the admin port) until
/// `shutdown` completes, then drains connections and returns.
pub async fn serve_plain(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    serve(listener, None, app, ServeOptions::default(), shutdown).await;
}

/// [`serve_plain`] with other tunables (the proxy's HTTP app channel).
pub async fn serve_plain_with(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, None, app, opts, shutdown).await;
}

/// What the accept loop woke up for.
enum Event {
    Shutdown,
    Joined(Result<(), JoinError>),
    Permit(OwnedSemaphorePermit),
    Accepted(io::Result<(TcpStream, SocketAddr)>),
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let builder = http_builder(&opts);
    let graceful = GracefulShutdown::new();
    let (closing_tx, closing_rx) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let mut conns: JoinSet<()> = JoinSet::new();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut shutdown = pin!(shutdown);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = ?listener.local_addr().ok(), scheme, "listening");

    loop {
        let event = tokio::select! {
            biased;
            () = &mut shutdown => Event::Shutdown,
            Some(joined) = conns.join_next(), if !conns.is_empty() => Event::Joined(joined),
            Ok(p) = limit.clone().acquire_owned(), if permit.is_none() => Event::Permit(p),
            accepted = listener.accept(), if permit.is_some() => Event::Accepted(accepted),
        };
        let (tcp, peer) = match event {
            Event::Shutdown => break,
            Event::Joined(joined) => {
                log_join(joined);
                continue;
            }
            Event::Permit(p) => {
                permit = Some(p);
                continue;
            }
            Event::Accepted(Ok(accepted)) => accepted,
            Event::Accepted(Err(e)) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "accepted connection failed");
                continue;
            }
            Event::Accepted(Err(e)) => {
                tracing::error!(error = %e, "accept failed; retrying shortly");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                }
            }
        };
        let Some(permit) = permit.take() else {
            continue; // unreachable: accept is only polled with a permit
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let conn = Conn {
            peer,
            app: app.clone(),
            watcher: graceful.watcher(),
            closing: closing_rx.clone(),
            handshake_timeout: opts.handshake_timeout,
            request_timeout: opts.request_timeout,
            _permit: permit,
        };
        let span = tracing::debug_span!("conn", %peer, scheme);
        match &tls {
            Some(acceptor) => conns.spawn(
                conn.serve_tls(tcp, acceptor.clone(), builder.clone())
                    .instrument(span),
            ),
            None => conns.spawn(conn.serve_plain(tcp, builder.clone()).instrument(span)),
        };
    }

    // Stop accepting: from here on new connections are refused.
    drop(listener);
    tracing::info!(
        scheme,
        open = conns.len(),
        "shutting down; draining connections"
    );
    let _ = closing_tx.send(true);
    let drained = tokio::time::timeout(opts.drain_timeout, async {
        graceful.shutdown().await;
        while let Some(joined) = conns.join_next().await {
            log_join(joined);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            scheme,
            open = conns.len(),
            timeout = ?opts.drain_timeout,
            "drain timeout elapsed; dropping remaining connections"
        );
        conns.shutdown().await;
    }
    tracing::info!(scheme, "server stopped");
}

/// HTTP/1 and HTTP/2 settings shared by every connection.
fn http_builder(opts: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(opts.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(opts.h2_keepalive_interval)
        .keep_alive_timeout(opts.h2_keepalive_timeout)
        .max_concurrent_streams(opts.h2_max_concurrent_streams);
    builder
}

/// Errors about one connection that died in the backlog, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn log_join(joined: Result<(), JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        tracing::error!(error = %e, "connection task panicked");
    }
}

/// One accepted connection and what it needs to be served.
struct Conn {
    peer: SocketAddr,
    app: Router,
    watcher: Watcher,
    closing: watch::Receiver<bool>,
    handshake_timeout: Duration,
    request_timeout: Duration,
    /// Held for the connection's lifetime: one slot of `max_connections`.
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    async fn serve_tls(
        mut self,
        tcp: TcpStream,
        acceptor: TlsAcceptor,
        builder: auto::Builder<TokioExecutor>,
    ) {
        let handshake = tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp));
        let stream = tokio::select! {
            res = handshake => match res {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            },
            // Shutting down: nothing is in flight yet, just drop it.
            _ = self.closing.wait_for(|closing| *closing) => return,
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        tracing::debug!(h2, "TLS handshake complete");
        let builder = if h2 {
            builder.http2_only()
        } else {
            builder.http1_only()
        };
        self.serve_http(TokioIo::new(stream), builder).await;
    }

    async fn serve_plain(self, tcp: TcpStream, builder: auto::Builder<TokioExecutor>) {
        self.serve_http(TokioIo::new(tcp), builder.http1_only())
            .await;
    }

    async fn serve_http<I>(self, io: I, builder: auto::Builder<TokioExecutor>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Conn {
            peer,
            app,
            watcher,
            request_timeout,
            ..
        } = self;
        let service = service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let response = app.clone().oneshot(req);
            async move {
                match tokio::time::timeout(request_timeout, response).await {
                    Ok(response) => response,
                    Err(_) => {
                        tracing::debug!("request timed out");
                        Ok((StatusCode::REQUEST_TIMEOUT, "request timed out").into_response())
                    }
                }
            }
        });
        let conn = builder.serve_connection(io, service);
        match watcher.watch(conn).await {
            Ok(()) => tracing::debug!("connection closed"),
            Err(e) => tracing::debug!(error = %e, "connection closed with error"),
        }
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT). If no signal handler can be
/// installed it logs the error and never completes.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
                tracing::info!("received SIGTERM");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let interrupt = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("received SIGINT"),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => {}
        () = interrupt => {}
    }
}

/// Liveness and readiness, shared between the admin server and whatever
/// decides them. Cheap to clone.
///
/// Starts live and not ready. Readiness should be set once the caches have
/// synced and a certificate is loaded, and cleared as soon as shutdown
/// starts. Liveness should only be cleared for a state the process cannot
/// recover from: a failing `/livez` makes the kubelet restart the container.
#[derive(Clone, Debug)]
pub struct Health {
    ready: Arc<AtomicBool>,
    live: Arc<AtomicBool>,
    /// Problems `/readyz` lists under its status without changing it.
    details: Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Live, not ready.
    pub fn new() -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            live: Arc::new(AtomicBool::new(true)),
            details: Arc::default(),
        }
    }

    /// Set (`Some`) or clear (`None`) a detail line of `/readyz`, e.g. a
    /// controller that cannot take its Lease while the webhook serves fine.
    pub fn set_detail(&self, key: &'static str, detail: Option<String>) {
        let mut details = self.details.lock().unwrap_or_else(|e| e.into_inner());
        match detail {
            Some(d) => details.insert(key, d),
            None => details.remove(key),
        };
    }

    /// The detail lines, `key: detail`, sorted by key.
    pub fn details(&self) -> Vec<String> {
        let details = self.details.lock().unwrap_or_else(|e| e.into_inner());
        details.iter().map(|(k, v)| format!("{k}: {v}")).collect()
    }

    /// Sets readiness (`/readyz`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Sets liveness (`/livez`).
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
    }

    /// Whether `/livez` answers 200.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }
}

/// The admin routes: `GET /livez` and `GET /readyz` (200 `ok`, or 503).
///
/// Add more routes (e.g. `/metrics`) with `admin_router(health).merge(other)`.
pub fn admin_router(health: Health) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn livez(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.is_live() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not live")
    }
}

/// `ok` / `not ready`, then one line per detail (which never changes the
/// status: readiness is the webhook's).
async fn readyz(State(health): State<Health>) -> (StatusCode, String) {
    let (status, mut body) = if health.is_ready() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready".to_owned())
    };
    for d in health.details() {
        body.push('\n');
        body.push_str(&d);
    }
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get(health: &Health, path: &str) -> (StatusCode, String) {
        let resp = admin_router(health.clone())
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_lists_details_without_changing_its_status() {
        let health = Health::new();
        health.set_ready(true);
        assert_eq!(get(&health, "/readyz").await, (StatusCode::OK, "ok".into()));
        health.set_detail(
            "controller",
            Some("cannot take Lease a/b: forbidden".into()),
        );
        assert_eq!(
            get(&health, "/readyz").await,
            (
                StatusCode::OK,
                "ok\ncontroller: cannot take Lease a/b: forbidden".into()
            )
        );
        health.set_ready(false);
        assert_eq!(
            get(&health, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_detail("controller", None);
        assert_eq!(
            get(&health, "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "not ready".into())
        );
    }
}
