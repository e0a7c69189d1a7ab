//! TLS of the webhook port: TLS 1.2 and 1.3 only, with rustls' default
//! cipher suites (AEAD with forward secrecy); optional client-certificate
//! verification so that only the API server can call the webhook.
//!
//! rustls implements no protocol version below TLS 1.2 (there is no code
//! for SSL 3.0, TLS 1.0 or 1.1 to enable), and `tls::server_config` enables
//! exactly TLS 1.3 and TLS 1.2. The tests show it on the wire: a rustls
//! client limited to TLS 1.2 (and one limited to 1.3) is served; ClientHellos
//! crafted here for SSL 3.0, TLS 1.0 and TLS 1.1, and a TLS 1.2 one offering
//! only legacy cipher suites (CBC, RSA key exchange, 3DES, RC4), get a fatal
//! alert and no ServerHello; the same hello as TLS 1.2 with modern suites
//! gets a ServerHello, which shows the crafted hellos are otherwise valid.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::serve_bin::Serve;
use common::webhook::{
    WebhookServer, client_identity, example_review, examples_store, init_crypto, patch_of,
    raw_request,
};
use openfunction_dapr::ops::server::ServeOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<(&str, &str)>,
) -> rustls::ClientConfig {
    init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// One review over a connection made with `config`: the negotiated
/// version, or the error (of the handshake or the request).
async fn review_with(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<rustls::ProtocolVersion, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let version = stream.get_ref().1.protocol_version().unwrap();
    let body = serde_json::to_vec(&example_review("pod-cron-kafka-pod.json")).unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // TLS 1.3 reports a refused client certificate on first use
    let (status, text) = tokio::time::timeout(
        Duration::from_secs(10),
        raw_request(&mut stream, &head, &body),
    )
    .await
    .map_err(|_| "timeout".to_owned())?
    .map_err(|e| format!("request: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(!patch_of(&answer).0.is_empty());
    Ok(version)
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let got = review_with(server.addr, client_config(&server.ca_pem, &[version], None))
            .await
            .unwrap();
        assert_eq!(got, want);
    }
    server.stop().await;
}

fn push_extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend(kind.to_be_bytes());
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
}

/// A ClientHello record: `version` as the legacy version (and no
/// supported_versions extension), `suites` offered, SNI `localhost`, the
/// groups, point formats and signature schemes an ECDSA P-256 server needs.
fn client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(version.to_be_bytes());
    body.extend([0x42u8; 32]); // random
    body.push(0); // no session id
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null only
    let mut ext = Vec::new();
    let name = b"localhost";
    let mut sni = Vec::new();
    sni.extend(((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name);
    push_extension(&mut ext, 0x0000, &sni);
    push_extension(&mut ext, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // x25519, P-256
    push_extension(&mut ext, 0x000b, &[1, 0]); // uncompressed points
    push_extension(
        &mut ext,
        0x000d,
        &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    );
    push_extension(&mut ext, 0x0017, &[]); // extended master secret
    push_extension(&mut ext, 0xff01, &[0]); // renegotiation info
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut handshake = vec![1]; // client_hello
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// What the server answers to `hello`: the first record's content type and
/// first two bytes of its payload (None: it closed without a word).
async fn first_record(addr: SocketAddr, hello: &[u8]) -> Option<(u8, [u8; 2])> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut header = [0u8; 7];
    match tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut header)).await {
        Ok(Ok(_)) => Some((header[0], [header[5], header[6]])),
        Ok(Err(_)) => None,
        Err(_) => panic!("no answer to a ClientHello within 5 s"),
    }
}

const MODERN: [u16; 3] = [0xc02b, 0xc02c, 0xcca9]; // ECDHE-ECDSA AES-GCM, ChaCha20
const LEGACY: [u16; 6] = [0xc009, 0xc00a, 0x002f, 0x0035, 0x000a, 0x0005]; // CBC, RSA kx, 3DES, RC4
const HANDSHAKE: u8 = 0x16;
const ALERT: u8 = 0x15;
const FATAL: u8 = 2;
const HANDSHAKE_FAILURE: u8 = 40;
const PROTOCOL_VERSION: u8 = 70;

#[tokio::test]
async fn versions_below_tls_1_2_and_legacy_suites_are_refused() {
    let server = WebhookServer::start(examples_store(), ServeOptions::default()).await;
    let all: Vec<u16> = MODERN.iter().chain(&LEGACY).copied().collect();

    // control: the crafted hello as TLS 1.2 gets a ServerHello
    let answer = first_record(server.addr, &client_hello(0x0303, &all)).await;
    assert_eq!(answer, Some((HANDSHAKE, [2, 0])), "a ServerHello");

    for (name, version) in [
        ("SSL 3.0", 0x0300),
        ("TLS 1.0", 0x0301),
        ("TLS 1.1", 0x0302),
    ] {
        let answer = first_record(server.addr, &client_hello(version, &all)).await;
        assert_eq!(
            answer,
            Some((ALERT, [FATAL, PROTOCOL_VERSION])),
            "{name}: refused with protocol_version"
        );
    }
    let answer = first_record(server.addr, &client_hello(0x0303, &LEGACY)).await;
    assert_eq!(
        answer,
        Some((ALERT, [FATAL, HANDSHAKE_FAILURE])),
        "TLS 1.2 with legacy suites only"
    );

    // and the server still serves
    let version = review_with(
        server.addr,
        client_config(&server.ca_pem, &[&rustls::version::TLS13], None),
    )
    .await
    .unwrap();
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    server.stop().await;
}

#[tokio::test]
async fn with_client_ca_only_clients_with_a_certificate_of_that_ca_are_served() {
    let (client_ca, cert, key) = client_identity();
    let (_, other_cert, other_key) = client_identity();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.pem");
    std::fs::write(&ca_file, &client_ca).unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut serve = Serve::start(
        &[
            "--local",
            examples,
            "--client-ca",
            ca_file.to_str().unwrap(),
        ],
        None,
    );
    serve.wait_ready(Duration::from_secs(20)).await;
    let ca = serve.ca_pem();
    for versions in [
        &[&rustls::version::TLS12][..],
        &[&rustls::version::TLS13][..],
    ] {
        // without a certificate, or with one of another CA: refused
        assert!(
            review_with(serve.webhook, client_config(&ca, versions, None))
                .await
                .is_err()
        );
        assert!(
            review_with(
                serve.webhook,
                client_config(&ca, versions, Some((&other_cert, &other_key)))
            )
            .await
            .is_err()
        );
        // with the API server's certificate: served
        review_with(
            serve.webhook,
            client_config(&ca, versions, Some((&cert, &key))),
        )
        .await
        .unwrap_or_else(|e| panic!("mutual TLS: {e}: {}", serve.log()));
    }
    assert!(serve.running());
}
