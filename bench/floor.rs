//! The floor of the load benchmark: the least an HTTPS admission webhook
//! can do. Same TLS configuration as the product (rustls, ring, ALPN h2 and
//! http/1.1, TCP_NODELAY), hyper, reads the body, parses it with
//! serde_json, answers a fixed small AdmissionReview. Nothing else.
//!
//! `cargo run --release --example floor -- ADDR CA_OUT`

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use openfunction_dapr::ops::tls::{self, ReloadingResolver};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const ANSWER: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let status = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => {
            std::hint::black_box(v);
            200
        }
        Err(_) => 400,
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(ANSWER.as_bytes())))
        .unwrap_or_default())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9444".into());
    let ca_out = args.next().unwrap_or_else(|| "/tmp/floor-ca.pem".into());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = tls::generate_ca_and_cert(&["localhost".to_string()], true)?;
    std::fs::write(&ca_out, &certs.ca_pem)?;
    let resolver = Arc::new(ReloadingResolver::from_pem(
        &certs.cert_pem,
        &certs.key_pem,
    )?);
    let acceptor = TlsAcceptor::from(tls::server_config(resolver, None)?);
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("floor listening on {addr}");
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let builder = Builder::new(TokioExecutor::new());
            let io = TokioIo::new(stream);
            let service = service_fn(handle);
            let _ = if h2 {
                builder.http2_only().serve_connection(io, service).await
            } else {
                builder.http1_only().serve_connection(io, service).await
            };
        });
    }
}
