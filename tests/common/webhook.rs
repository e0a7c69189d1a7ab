//! The webhook as the API server reaches it: `webhook::router` behind the
//! real HTTPS server (`server::serve_tls`) on 127.0.0.1, with a CA made
//! here; HTTPS clients trusting it, and raw TLS / HTTP/1.1 for requests no
//! well-behaved client would send.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use openfunction_dapr::ops::server::{self, ServeOptions};
use openfunction_dapr::ops::tls::{self, GeneratedCerts, ReloadingResolver};
use openfunction_dapr::webhook::store::FunctionStore;
use openfunction_dapr::webhook::{self, Webhook};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A CA and a serving certificate for `localhost` and 127.0.0.1.
pub fn localhost_certs() -> GeneratedCerts {
    tls::generate_ca_and_cert(&["localhost".to_string()], true).expect("generate certificates")
}

/// The Functions of `examples/` (one per mode, namespace `default`).
pub fn examples_store() -> FunctionStore {
    FunctionStore::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
        .expect("examples/")
}

/// An AdmissionReview of `examples/reviews/`.
pub fn example_review(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/reviews")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(path).expect("example review"))
        .expect("example JSON")
}

pub struct WebhookServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookServer {
    /// The webhook on `store`, with a fresh localhost certificate.
    pub async fn start(store: FunctionStore, opts: ServeOptions) -> Self {
        init_crypto();
        let certs = localhost_certs();
        let resolver = Arc::new(
            ReloadingResolver::from_pem(&certs.cert_pem, &certs.key_pem).expect("resolver"),
        );
        let config = tls::server_config(resolver, None).expect("server config");
        let webhook = Arc::new(Webhook::new(store, "cluster.local"));
        Self::start_with(webhook, config, certs.ca_pem, opts).await
    }

    pub async fn start_with(
        webhook: Arc<Webhook>,
        config: Arc<rustls::ServerConfig>,
        ca_pem: String,
        opts: ServeOptions,
    ) -> Self {
        init_crypto();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve_tls(
            listener,
            config,
            webhook::router(webhook),
            opts,
            async {
                let _ = stopped.await;
            },
        ));
        WebhookServer {
            addr,
            ca_pem,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!(
            "https://localhost:{}{}",
            self.addr.port(),
            webhook::MUTATE_PATH
        )
    }

    /// An HTTPS client trusting only this server's CA.
    pub fn client(&self, http2: bool) -> reqwest::Client {
        https_client(&[&self.ca_pem], self.addr, http2)
    }

    /// POSTs an AdmissionReview; (HTTP status, JSON answer or the text).
    pub async fn post(&self, client: &reqwest::Client, body: Vec<u8>) -> (u16, Value) {
        post_json(client, &self.url(), body).await
    }

    /// Signals shutdown and waits (bounded) for the server to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the server stops")
            .expect("server task");
    }
}

/// An HTTPS client trusting `ca_pems`, resolving `localhost` to `addr`.
pub fn https_client(ca_pems: &[&str], addr: SocketAddr, http2: bool) -> reqwest::Client {
    init_crypto();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(20));
    for pem in ca_pems {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA"));
    }
    if !http2 {
        b = b.http1_only();
    }
    b.build().expect("client")
}

/// POSTs `body` as JSON; (HTTP status, JSON answer or the text).
pub async fn post_json(client: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// The JSON Patch of an answer (empty without one), checked to be base64
/// of a JSON Patch with `patchType: JSONPatch`.
pub fn patch_of(answer: &Value) -> json_patch::Patch {
    let response = &answer["response"];
    match response.get("patch") {
        None => {
            assert!(response.get("patchType").is_none(), "{answer}");
            json_patch::Patch(Vec::new())
        }
        Some(p) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p.as_str().expect("the patch is a base64 string"))
                .expect("base64");
            serde_json::from_slice(&bytes).expect("a JSON Patch")
        }
    }
}

/// A raw TLS connection to `addr` as `localhost`, trusting `ca_pems`,
/// offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pems: &[&str],
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    connect_as(addr, "localhost", client_config(ca_pems, alpn)).await
}

/// A client configuration trusting only `ca_pems`, offering `alpn`.
pub fn client_config(ca_pems: &[&str], alpn: &[&[u8]]) -> rustls::ClientConfig {
    init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        roots
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).expect("CA PEM"))
            .expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A TLS connection to `addr` with `config`, checking the certificate for `name`.
pub async fn connect_as(
    addr: SocketAddr,
    name: &str,
    config: rustls::ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Reads one HTTP/1.1 response (Content-Length bodies): (status, body).
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[header_end..header_end + length]).to_string();
    Ok((status, body))
}

/// Sends `head` + `body` on a fresh connection and reads the answer.
pub async fn raw_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    head: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    read_response(stream).await
}

/// Waits (bounded) for the peer to close: EOF or a reset, not data.
pub async fn expect_closed<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            // an error response or a TLS alert may come first
            Ok(Ok(_)) => continue,
        }
    }
}

/// A client CA and a client certificate (clientAuth) signed by it.
pub fn client_identity() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "client CA");
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("client cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A bare TLS server on 127.0.0.1 presenting `cert_pem` (it completes
/// handshakes and nothing more); returns its port.
pub async fn tls_presenting(cert_pem: &str, key_pem: &str) -> u16 {
    let resolver = std::sync::Arc::new(
        openfunction_dapr::ops::tls::ReloadingResolver::from_pem(cert_pem, key_pem).unwrap(),
    );
    let config = openfunction_dapr::ops::tls::server_config(resolver, None).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    port
}
