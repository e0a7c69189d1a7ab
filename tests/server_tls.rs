//! The webhook's HTTPS server and the admin server, driven over loopback:
//! ALPN (HTTP/1.1 and HTTP/2), trust, certificate rotation the way the kubelet
//! updates a Secret volume, graceful shutdown, timeouts, hostile input and the
//! connection limit.
#![cfg(unix)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::routing::{get, post};
use openfunction_dapr::ops::server::{Health, ServeOptions, admin_router, serve_plain, serve_tls};
use openfunction_dapr::ops::tls::{
    GeneratedCerts, ReloadingResolver, generate_ca_and_cert, server_config, service_dns_names,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use common::secret_volume::SecretVolume;
use common::webhook::{self, client_identity, read_response};

/// The name the tests reach the server by (resolved to the loopback address).
const HOST: &str = "webhook.openfunction.svc";

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

fn new_certs() -> GeneratedCerts {
    generate_ca_and_cert(&service_dns_names("webhook", "openfunction"), true).expect("generate")
}

fn pem_cert(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM")
}

/// Shared by the test handlers: `/slow` signals here when it has started.
#[derive(Clone, Default)]
struct AppState {
    started: Arc<Notify>,
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/echo", post(|body: String| async move { body }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        )
        .route(
            "/slow",
            get(|State(state): State<AppState>| async move {
                state.started.notify_one();
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done"
            }),
        )
        .route(
            "/very-slow",
            get(|State(state): State<AppState>| async move {
                state.started.notify_one();
                tokio::time::sleep(Duration::from_secs(30)).await;
                "done"
            }),
        )
        .with_state(state)
}

struct TestServer {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
}

impl TestServer {
    async fn start(resolver: Arc<ReloadingResolver>, opts: ServeOptions) -> Self {
        Self::start_with(server_config(resolver, None).expect("server config"), opts).await
    }

    async fn start_with(tls: Arc<rustls::ServerConfig>, opts: ServeOptions) -> Self {
        init();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = AppState::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve_tls(listener, tls, app(state.clone()), opts, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            state,
            stop: Some(stop),
            handle,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.addr.port())
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits (bounded) for `serve_tls` to return.
    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.shutdown();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("server stops")
            .expect("server task");
        started.elapsed()
    }
}

fn resolver(certs: &GeneratedCerts) -> Arc<ReloadingResolver> {
    Arc::new(ReloadingResolver::from_pem(&certs.cert_pem, &certs.key_pem).expect("resolver"))
}

/// A reqwest client trusting only `ca_pem`, resolving [`HOST`] to `addr`.
fn client(ca_pem: &str, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    init();
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"))
        .resolve(HOST, addr)
        .timeout(Duration::from_secs(10));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("client")
}

/// A raw TLS connection to [`HOST`] trusting `ca_pems`, offering `alpn`.
async fn tls_connect(
    addr: SocketAddr,
    ca_pems: &[&str],
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    connect_with(addr, webhook::client_config(ca_pems, alpn)).await
}

async fn connect_with(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    webhook::connect_as(addr, HOST, config).await
}

/// The leaf certificate a fresh TLS connection is served.
async fn served_leaf(addr: SocketAddr, ca_pems: &[&str]) -> CertificateDer<'static> {
    let stream = tls_connect(addr, ca_pems, &[b"http/1.1"])
        .await
        .expect("TLS connect");
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates")[0]
        .clone()
}

/// One HTTP/1.1 GET on an open connection; returns status and body.
async fn http1_get<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    read_response(stream).await
}

/// Waits (bounded) for the peer to close: EOF or a reset, not data.
async fn expect_closed<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            // A TLS alert or an error response may come first; keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn serves_http1_and_http2_negotiated_by_alpn() {
    let certs = new_certs();
    let server = TestServer::start(resolver(&certs), ServeOptions::default()).await;

    let h1 = client(&certs.ca_pem, server.addr, true);
    let response = h1
        .post(server.url("/echo"))
        .body("hello")
        .send()
        .await
        .expect("h1 request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.text().await.expect("body"), "hello");

    let h2 = client(&certs.ca_pem, server.addr, false);
    for i in 0..3 {
        let response = h2
            .post(server.url("/echo"))
            .body(format!("hello {i}"))
            .send()
            .await
            .expect("h2 request");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.text().await.expect("body"), format!("hello {i}"));
    }

    let peer = h2.get(server.url("/peer")).send().await.expect("peer");
    assert_eq!(peer.text().await.expect("body"), "127.0.0.1");

    // The IP SAN works too.
    let by_ip = h1
        .get(format!("https://127.0.0.1:{}/peer", server.addr.port()))
        .send()
        .await
        .expect("by IP");
    assert_eq!(by_ip.status(), 200);

    server.stop().await;
}

#[tokio::test]
async fn raw_tls_without_alpn_gets_http1() {
    let certs = new_certs();
    let server = TestServer::start(resolver(&certs), ServeOptions::default()).await;
    let mut stream = tls_connect(server.addr, &[&certs.ca_pem], &[])
        .await
        .expect("connect");
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    for _ in 0..2 {
        let (status, body) = http1_get(&mut stream, "/peer")
            .await
            .expect("keep-alive GET");
        assert_eq!((status, body.as_str()), (200, "127.0.0.1"));
    }
    server.stop().await;
}

#[tokio::test]
async fn clients_that_do_not_trust_the_ca_fail() {
    let certs = new_certs();
    let server = TestServer::start(resolver(&certs), ServeOptions::default()).await;
    let stranger = new_certs();
    let err = client(&stranger.ca_pem, server.addr, false)
        .get(server.url("/peer"))
        .send()
        .await
        .expect_err("untrusted server certificate");
    assert!(err.is_connect(), "{err:?}");
    assert!(
        tls_connect(server.addr, &[&stranger.ca_pem], &[])
            .await
            .is_err()
    );

    // The server is unaffected.
    let ok = client(&certs.ca_pem, server.addr, false)
        .get(server.url("/peer"))
        .send()
        .await
        .expect("trusted client");
    assert_eq!(ok.status(), 200);
    server.stop().await;
}

fn leaf_is(leaf: &CertificateDer<'_>, certs: &GeneratedCerts) -> bool {
    *leaf == pem_cert(&certs.cert_pem)
}

#[tokio::test]
async fn rotates_certificates_from_a_secret_volume() {
    let first = new_certs();
    let second = new_certs();
    let third = new_certs();
    let all_cas = [
        first.ca_pem.as_str(),
        second.ca_pem.as_str(),
        third.ca_pem.as_str(),
    ];
    let mut volume = SecretVolume::new(&first.cert_pem, &first.key_pem);
    let resolver = Arc::new(
        ReloadingResolver::from_files(volume.cert_path(), volume.key_path()).expect("load"),
    );
    let server = TestServer::start(resolver.clone(), ServeOptions::default()).await;
    assert!(leaf_is(&served_leaf(server.addr, &all_cas).await, &first));

    // A connection opened before the rotation...
    let mut established = tls_connect(server.addr, &[&first.ca_pem], &[b"http/1.1"])
        .await
        .expect("connect");
    assert_eq!(
        http1_get(&mut established, "/peer").await.expect("GET").0,
        200
    );

    volume.update(&second.cert_pem, &second.key_pem);
    assert!(resolver.reload().expect("reload"));
    assert!(!resolver.reload().expect("nothing new"));
    assert!(leaf_is(&served_leaf(server.addr, &all_cas).await, &second));
    assert_eq!(resolver.not_after(), Some(second.not_after));
    // ...keeps working after it.
    assert_eq!(
        http1_get(&mut established, "/peer").await.expect("GET").0,
        200
    );

    // A key that does not match the certificate: refused, old pair kept.
    volume.update(&third.cert_pem, &second.key_pem);
    assert!(resolver.reload().is_err());
    assert!(leaf_is(&served_leaf(server.addr, &all_cas).await, &second));

    // Garbage: refused, old pair kept.
    volume.update("garbage", "more garbage");
    assert!(resolver.reload().is_err());
    assert!(leaf_is(&served_leaf(server.addr, &all_cas).await, &second));

    // The watcher picks up the next good pair by itself.
    let watcher = tokio::spawn(openfunction_dapr::ops::tls::watch(
        resolver.clone(),
        Duration::from_millis(50),
    ));
    volume.update(&third.cert_pem, &third.key_pem);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leaf_is(&served_leaf(server.addr, &all_cas).await, &third) {
        assert!(
            Instant::now() < deadline,
            "watch did not install the new pair"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // A client trusting only the newest CA now connects.
    let response = client(&third.ca_pem, server.addr, false)
        .get(server.url("/peer"))
        .send()
        .await
        .expect("request with the new certificate");
    assert_eq!(response.status(), 200);

    watcher.abort();
    server.stop().await;
}

/// Starts `/slow` on `client`, waits until its handler runs, shuts the server
/// down and checks the request still completes.
async fn in_flight_request_survives_shutdown(http1_only: bool) {
    let certs = new_certs();
    let server = TestServer::start(resolver(&certs), ServeOptions::default()).await;
    let client = client(&certs.ca_pem, server.addr, http1_only);
    let started = server.state.started.clone();
    let request = tokio::spawn({
        let url = server.url("/slow");
        async move {
            let response = client.get(url).send().await?;
            let version = response.version();
            let status = response.status();
            Ok::<_, reqwest::Error>((status, version, response.text().await?))
        }
    });
    tokio::time::timeout(Duration::from_secs(5), started.notified())
        .await
        .expect("handler started");
    let addr = server.addr;
    let took = server.stop().await;

    let (status, version, body) = request.await.expect("task").expect("in-flight request");
    assert_eq!(status, 200);
    assert_eq!(body, "done");
    let want = if http1_only {
        reqwest::Version::HTTP_11
    } else {
        reqwest::Version::HTTP_2
    };
    assert_eq!(version, want);
    assert!(
        took >= Duration::from_millis(300),
        "returned before the request finished: {took:?}"
    );

    // After shutdown new connections are refused.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_http1_requests() {
    in_flight_request_survives_shutdown(true).await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_http2_requests() {
    in_flight_request_survives_shutdown(false).await;
}

#[tokio::test]
async fn shutdown_closes_idle_keepalive_connections_promptly() {
    let certs = new_certs();
    let opts = ServeOptions {
        drain_timeout: Duration::from_secs(30),
        ..ServeOptions::default()
    };
    let server = TestServer::start(resolver(&certs), opts).await;
    let mut idle_h1 = tls_connect(server.addr, &[&certs.ca_pem], &[b"http/1.1"])
        .await
        .expect("connect");
    assert_eq!(http1_get(&mut idle_h1, "/peer").await.expect("GET").0, 200);
    let h2 = client(&certs.ca_pem, server.addr, false);
    let response = h2.get(server.url("/peer")).send().await.expect("h2");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    let took = server.stop().await;
    assert!(
        took < Duration::from_secs(5),
        "idle connections held shutdown for {took:?}"
    );
    expect_closed(&mut idle_h1, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn drain_timeout_bounds_shutdown() {
    let certs = new_certs();
    let opts = ServeOptions {
        drain_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let server = TestServer::start(resolver(&certs), opts).await;
    let client = client(&certs.ca_pem, server.addr, false);
    let request = tokio::spawn(client.get(server.url("/very-slow")).send());
    tokio::time::timeout(Duration::from_secs(5), server.state.started.notified())
        .await
        .expect("handler started");
    let took = server.stop().await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert!(
        request.await.expect("task").is_err(),
        "the cut request fails"
    );
}

#[tokio::test]
async fn stalled_request_headers_are_cut_off() {
    let certs = new_certs();
    let opts = ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let server = TestServer::start(resolver(&certs), opts).await;
    for alpn in [&[][..], &[&b"http/1.1"[..]][..]] {
        let mut stream = tls_connect(server.addr, &[&certs.ca_pem], alpn)
            .await
            .expect("connect");
        stream.write_all(b"G").await.expect("one byte");
        stream.flush().await.expect("flush");
        let started = Instant::now();
        expect_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
    server.stop().await;
}

#[tokio::test]
async fn stalled_tls_handshakes_are_cut_off() {
    let certs = new_certs();
    let opts = ServeOptions {
        handshake_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let server = TestServer::start(resolver(&certs), opts).await;
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    expect_closed(&mut silent, Duration::from_secs(5)).await;
    // Meanwhile and afterwards, real clients are served.
    let ok = client(&certs.ca_pem, server.addr, false)
        .get(server.url("/peer"))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn plaintext_and_garbage_do_not_hurt_the_tls_port() {
    let certs = new_certs();
    let server = TestServer::start(resolver(&certs), ServeOptions::default()).await;

    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    plain
        .write_all(b"GET /peer HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    expect_closed(&mut plain, Duration::from_secs(5)).await;

    let mut noise = TcpStream::connect(server.addr).await.expect("connect");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // The server may hang up mid-write; that is fine.
    let _ = noise.write_all(&garbage).await;
    expect_closed(&mut noise, Duration::from_secs(5)).await;

    // A TLS record header announcing a huge record, then nothing.
    let mut bogus = TcpStream::connect(server.addr).await.expect("connect");
    bogus
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff])
        .await
        .expect("write");
    expect_closed(&mut bogus, Duration::from_secs(15)).await;

    let ok = client(&certs.ca_pem, server.addr, false)
        .post(server.url("/echo"))
        .body("still here")
        .send()
        .await
        .expect("request after garbage");
    assert_eq!(ok.text().await.expect("body"), "still here");
    server.stop().await;
}

#[tokio::test]
async fn connection_limit_queues_extra_clients() {
    let certs = new_certs();
    let opts = ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    };
    let server = TestServer::start(resolver(&certs), opts).await;
    let first = tls_connect(server.addr, &[&certs.ca_pem], &[b"http/1.1"])
        .await
        .expect("first connection");

    let addr = server.addr;
    let ca = certs.ca_pem.clone();
    let mut second = tokio::spawn(async move {
        let mut stream = tls_connect(addr, &[&ca], &[b"http/1.1"]).await?;
        http1_get(&mut stream, "/peer").await
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut second)
            .await
            .is_err(),
        "second connection served while the first holds the only slot"
    );
    drop(first);
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("second connection served once the slot is free")
        .expect("task")
        .expect("GET");
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let certs = new_certs();
    let (client_ca, client_cert, client_key) = client_identity();
    let tls = server_config(resolver(&certs), Some(&client_ca)).expect("config");
    let server = TestServer::start_with(tls, ServeOptions::default()).await;

    let config = |identity: Option<(&str, &str)>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_cert(&certs.ca_pem)).expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![pem_cert(cert)],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
                )
                .expect("client auth"),
        }
    };

    // Without a certificate: refused (TLS 1.3 reports it on first use).
    let refused = async {
        let mut stream = connect_with(server.addr, config(None)).await?;
        http1_get(&mut stream, "/peer").await
    };
    assert!(refused.await.is_err());

    // A certificate from another CA: refused.
    let (_, other_cert, other_key) = client_identity();
    let refused = async {
        let mut stream = connect_with(server.addr, config(Some((&other_cert, &other_key)))).await?;
        http1_get(&mut stream, "/peer").await
    };
    assert!(refused.await.is_err());

    let mut stream = connect_with(server.addr, config(Some((&client_cert, &client_key))))
        .await
        .expect("mutual TLS");
    assert_eq!(http1_get(&mut stream, "/peer").await.expect("GET").0, 200);
    server.stop().await;
}

#[tokio::test]
async fn admin_server_reports_health_and_drains() {
    init();
    let health = Health::new();
    let extra = Router::new().route("/metrics", get(|| async { "# metrics\n" }));
    let app = admin_router(health.clone()).merge(extra);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(serve_plain(listener, app, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("http://{addr}{path}")).send();
        async move {
            let response = request.await.expect("request");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        }
    };

    assert_eq!(get("/livez").await, (200, "ok".to_string()));
    assert_eq!(get("/readyz").await.0, 503);
    health.set_ready(true);
    assert_eq!(get("/readyz").await, (200, "ok".to_string()));
    assert_eq!(get("/metrics").await, (200, "# metrics\n".to_string()));
    assert_eq!(get("/nope").await.0, 404);
    health.set_ready(false);
    assert_eq!(get("/readyz").await.0, 503);
    health.set_live(false);
    assert_eq!(get("/livez").await.0, 503);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("admin server stops")
        .expect("task");
    assert!(TcpStream::connect(addr).await.is_err());
}
