//! The serving certificate rotated under load, the Secret-volume way (the
//! kubelet writes a new timestamped directory and renames `..data` over the
//! old symlink), while clients keep reviewing: zero failed requests, new
//! connections get the new certificate as soon as it is installed, and a
//! broken new pair (a key of another certificate, garbage) is refused while
//! the last good one keeps serving.
#![cfg(unix)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::secret_volume::SecretVolume;
use common::webhook::{
    WebhookServer, example_review, examples_store, https_client, localhost_certs, patch_of,
    post_json, raw_request, tls_connect,
};
use openfunction_dapr::ops::server::ServeOptions;
use openfunction_dapr::ops::tls::{self, GeneratedCerts, ReloadingResolver};
use openfunction_dapr::webhook::Webhook;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tokio::sync::Mutex;

fn leaf(certs: &GeneratedCerts) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(certs.cert_pem.as_bytes()).expect("leaf")
}

/// One review on a fresh TLS connection: (when it started, the leaf it
/// was served), or what went wrong.
async fn fresh_review(
    addr: std::net::SocketAddr,
    cas: &[&str],
    body: &[u8],
) -> Result<(Instant, CertificateDer<'static>), String> {
    let started = Instant::now();
    let mut stream = tls_connect(addr, cas, &[b"http/1.1"])
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no certificate")?[0]
        .clone();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, text) = raw_request(&mut stream, &head, body)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("{status}: {e}"))?;
    if status != 200 || answer["response"]["allowed"] != true || patch_of(&answer).0.is_empty() {
        return Err(format!("{status}: {answer}"));
    }
    Ok((started, leaf))
}

/// The leaf a fresh connection is served.
async fn served(addr: std::net::SocketAddr, cas: &[&str]) -> CertificateDer<'static> {
    let stream = tls_connect(addr, cas, &[b"http/1.1"])
        .await
        .expect("connect");
    stream.get_ref().1.peer_certificates().expect("certs")[0].clone()
}

/// Waits until a fresh connection is served `want`; the moment it was.
async fn installed(
    addr: std::net::SocketAddr,
    cas: &[&str],
    want: CertificateDer<'static>,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if served(addr, cas).await == want {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "the new pair was not installed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_fails_no_request() {
    let (a, b, c) = (localhost_certs(), localhost_certs(), localhost_certs());
    let cas: Vec<String> = [&a, &b, &c].iter().map(|x| x.ca_pem.clone()).collect();
    let mut volume = SecretVolume::new(&a.cert_pem, &a.key_pem);
    let resolver = Arc::new(
        ReloadingResolver::from_files(volume.cert_path(), volume.key_path()).expect("load"),
    );
    let config = tls::server_config(resolver.clone(), None).expect("config");
    let webhook = Arc::new(Webhook::new(examples_store(), "cluster.local"));
    let server =
        WebhookServer::start_with(webhook, config, a.ca_pem.clone(), ServeOptions::default()).await;
    let watcher = tokio::spawn(tls::watch(resolver.clone(), Duration::from_millis(50)));
    let body = serde_json::to_vec(&example_review("pod-cron-kafka-pod.json")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let fresh = Arc::new(Mutex::new(Vec::<(Instant, CertificateDer<'static>)>::new()));
    let mut load = Vec::new();
    // clients opening a new connection per review
    for _ in 0..6 {
        let (stop, failures, fresh, cas, body) = (
            stop.clone(),
            failures.clone(),
            fresh.clone(),
            cas.clone(),
            body.clone(),
        );
        let addr = server.addr;
        load.push(tokio::spawn(async move {
            let cas: Vec<&str> = cas.iter().map(String::as_str).collect();
            while !stop.load(Ordering::Relaxed) {
                match fresh_review(addr, &cas, &body).await {
                    Ok(seen) => fresh.lock().await.push(seen),
                    Err(e) => failures.lock().await.push(e),
                }
            }
        }));
    }
    // clients keeping their connections (HTTP/1.1 keep-alive and HTTP/2)
    let kept = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for http2 in [false, true, false, true] {
        let (stop, failures, kept, body) =
            (stop.clone(), failures.clone(), kept.clone(), body.clone());
        let cas = cas.clone();
        let (addr, url) = (server.addr, server.url());
        load.push(tokio::spawn(async move {
            let cas: Vec<&str> = cas.iter().map(String::as_str).collect();
            let client = https_client(&cas, addr, http2);
            while !stop.load(Ordering::Relaxed) {
                let (status, answer) = post_json(&client, &url, body.clone()).await;
                if status == 200 && answer["response"]["allowed"] == true {
                    kept.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.lock().await.push(format!("{status}: {answer}"));
                }
            }
        }));
    }

    let all_cas: Vec<&str> = cas.iter().map(String::as_str).collect();
    let addr = server.addr;
    tokio::time::sleep(Duration::from_millis(400)).await;
    volume.update(&b.cert_pem, &b.key_pem);
    let b_seen = installed(addr, &all_cas, leaf(&b)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    // broken pairs: refused, B keeps serving
    volume.update(&c.cert_pem, &b.key_pem);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        served(addr, &all_cas).await,
        leaf(&b),
        "a mismatched pair was installed"
    );
    volume.update("-----BEGIN CERTIFICATE-----\ngarbage\n", "not a key");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        served(addr, &all_cas).await,
        leaf(&b),
        "garbage was installed"
    );
    assert_eq!(resolver.not_after(), Some(b.not_after));

    volume.update(&c.cert_pem, &c.key_pem);
    let c_seen = installed(addr, &all_cas, leaf(&c)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("load stops")
            .expect("load task");
    }
    watcher.abort();

    let failures = failures.lock().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let fresh = fresh.lock().await;
    let kept = kept.load(Ordering::Relaxed);
    eprintln!(
        "{} reviews on fresh connections, {kept} on kept connections, 0 failed",
        fresh.len()
    );
    assert!(
        fresh.len() >= 30 && kept >= 30,
        "too little load: {} fresh, {kept} kept",
        fresh.len()
    );
    // every connection opened after a pair was seen installed got that pair
    // (or the next one), never an older one
    for (started, got) in fresh.iter() {
        if *started > c_seen {
            assert_eq!(*got, leaf(&c), "an old certificate after C was installed");
        } else if *started > b_seen {
            assert!(
                *got == leaf(&b) || *got == leaf(&c),
                "A served after B was installed"
            );
        }
    }
    for seen in [leaf(&a), leaf(&b), leaf(&c)] {
        assert!(
            fresh.iter().any(|(_, got)| *got == seen),
            "a certificate was never served"
        );
    }
    server.stop().await;
}
