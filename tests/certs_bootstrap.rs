//! The certificate bootstrap (`openfunction_dapr::ops::certs`) against a fake API
//! server (a `tower-test` mock behind a real `kube::Client`) that keeps one
//! Secret and one MutatingWebhookConfiguration, enforces `resourceVersion`
//! on updates, answers `409` like the real one, and records every request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use openfunction_dapr::ops::certs::{self, BootstrapSettings, Bundle};
use openfunction_dapr::ops::tls::{self, ReloadingResolver};
use serde_json::{Value, json};
use tower_test::mock;

const NS: &str = "openfunction-dapr";
const SECRET_PATH: &str = "/api/v1/namespaces/openfunction-dapr/secrets/openfunction-dapr-tls";
const SECRETS_PATH: &str = "/api/v1/namespaces/openfunction-dapr/secrets";
const CONFIG_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/00-openfunction-dapr";

#[derive(Default)]
struct Fake {
    secret: Option<Value>,
    config: Option<Value>,
    resource_version: u64,
    /// On the next POST of a Secret: another replica's Secret lands first.
    race_on_create: Option<Value>,
    /// On the next PUT of the Secret: another replica's update lands first.
    race_on_update: Option<Value>,
    /// (method, path) of every request.
    log: Vec<(Method, String)>,
    /// (content type, body) of every PATCH.
    patches: Vec<(String, Value)>,
    /// Bodies of every PUT.
    updates: Vec<Value>,
}

impl Fake {
    fn count(&self, method: &Method, path: &str) -> usize {
        self.log
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }

    fn writes(&self) -> usize {
        self.log.iter().filter(|(m, _)| m != Method::GET).count()
    }

    fn store_secret(&mut self, mut secret: Value) -> Value {
        self.resource_version += 1;
        secret["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        secret["metadata"]["namespace"] = json!(NS);
        self.secret = Some(secret.clone());
        secret
    }

    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        self.log.push((method.clone(), path.to_owned()));
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).expect("JSON request body")
        };
        match (method.as_str(), path) {
            ("GET", SECRET_PATH) => match &self.secret {
                Some(s) => (StatusCode::OK, s.clone()),
                None => not_found("secrets"),
            },
            ("POST", SECRETS_PATH) => {
                if let Some(other) = self.race_on_create.take() {
                    self.store_secret(other);
                }
                if self.secret.is_some() {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        "secrets \"openfunction-dapr-tls\" already exists",
                    );
                }
                (StatusCode::CREATED, self.store_secret(body))
            }
            ("PUT", SECRET_PATH) => {
                self.updates.push(body.clone());
                if let Some(other) = self.race_on_update.take() {
                    self.store_secret(other);
                }
                let current = self
                    .secret
                    .as_ref()
                    .map(|s| s["metadata"]["resourceVersion"].clone());
                if current != Some(body["metadata"]["resourceVersion"].clone()) {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                (StatusCode::OK, self.store_secret(body))
            }
            ("GET", CONFIG_PATH) => match &self.config {
                Some(c) => (StatusCode::OK, c.clone()),
                None => not_found("mutatingwebhookconfigurations"),
            },
            ("PATCH", CONFIG_PATH) => {
                self.patches.push((content_type.to_owned(), body.clone()));
                let Some(config) = self.config.as_mut() else {
                    return not_found("mutatingwebhookconfigurations");
                };
                // Strategic merge: the webhooks list merges on `name`.
                for entry in body["webhooks"].as_array().expect("webhooks in the patch") {
                    let hook = config["webhooks"]
                        .as_array_mut()
                        .unwrap()
                        .iter_mut()
                        .find(|w| w["name"] == entry["name"])
                        .expect("patch names an existing webhook");
                    hook["clientConfig"]["caBundle"] = entry["clientConfig"]["caBundle"].clone();
                }
                (StatusCode::OK, config.clone())
            }
            _ => panic!("unexpected request {method} {path}"),
        }
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn not_found(resource: &str) -> (StatusCode, Value) {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{resource} not found"),
    )
}

/// A client talking to `fake`.
fn client(fake: Arc<Mutex<Fake>>) -> kube::Client {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.expect("request body");
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let (code, value) =
                fake.lock()
                    .unwrap()
                    .handle(&parts.method, parts.uri.path(), &content_type, &body);
            let response = Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&value).unwrap()))
                .unwrap();
            respond.send_response(response);
        }
    });
    kube::Client::new(service, "default")
}

fn settings() -> BootstrapSettings {
    let mut s = BootstrapSettings::new(NS, certs::DEFAULT_SERVICE_NAME);
    s.check_interval = Duration::from_millis(50);
    s
}

fn names() -> Vec<String> {
    settings().dns_names
}

fn webhook_config(ca_bundles: [Option<&str>; 3]) -> Value {
    let hooks: Vec<Value> = ["a", "b", "c"]
        .iter()
        .zip(ca_bundles)
        .map(|(n, ca)| {
            let mut client_config = json!({"service": {"name": "openfunction-dapr-webhook", "namespace": NS, "path": "/mutate", "port": 443}});
            if let Some(ca) = ca {
                client_config["caBundle"] = json!(B64.encode(ca));
            }
            json!({"name": format!("{n}.openfunction-dapr.openfunction.io"), "clientConfig": client_config,
                   "sideEffects": "None", "admissionReviewVersions": ["v1"]})
        })
        .collect();
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": certs::DEFAULT_WEBHOOK_CONFIG_NAME, "resourceVersion": "7"}, "webhooks": hooks})
}

fn secret_json(bundle: &Bundle) -> Value {
    serde_json::to_value(certs::new_secret(certs::DEFAULT_SECRET_NAME, bundle)).unwrap()
}

fn stored_bundle(fake: &Fake) -> Bundle {
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(fake.secret.clone().expect("a Secret")).unwrap();
    certs::Stored::from_secret(&secret)
        .bundle()
        .expect("a complete Secret")
}

fn ca_bundles(fake: &Fake) -> Vec<Option<String>> {
    fake.config.as_ref().unwrap()["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w["clientConfig"]["caBundle"]
                .as_str()
                .map(|b| String::from_utf8(B64.decode(b).unwrap()).unwrap())
        })
        .collect()
}

fn new_fake(secret: Option<&Bundle>, config: Value) -> Arc<Mutex<Fake>> {
    let mut fake = Fake {
        config: Some(config),
        resource_version: 41,
        ..Fake::default()
    };
    if let Some(b) = secret {
        fake.store_secret(secret_json(b));
    }
    Arc::new(Mutex::new(fake))
}

#[tokio::test]
async fn a_missing_secret_is_created_and_the_ca_bundle_set() {
    let fake = new_fake(None, webhook_config([None, None, None]));
    let bundle = certs::check_once(&client(fake.clone()), &settings())
        .await
        .unwrap();
    let f = fake.lock().unwrap();
    assert_eq!(f.count(&Method::POST, SECRETS_PATH), 1);
    assert_eq!(f.count(&Method::PUT, SECRET_PATH), 0);
    let secret = f.secret.as_ref().unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["name"], certs::DEFAULT_SECRET_NAME);
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "openfunction-dapr"
    );
    assert_eq!(stored_bundle(&f), bundle);
    // The certificate is for the Service's names and chains to the CA.
    assert_eq!(
        certs::decide(
            &certs::Stored::from_secret(&serde_json::from_value(secret.clone()).unwrap()),
            &names(),
            SystemTime::now(),
            certs::RENEW_BEFORE
        ),
        certs::Decision::Keep
    );
    // One strategic merge patch set every webhook's caBundle.
    assert_eq!(f.patches.len(), 1);
    assert_eq!(f.patches[0].0, "application/strategic-merge-patch+json");
    assert_eq!(ca_bundles(&f), vec![Some(bundle.ca_cert.clone()); 3]);
}

#[tokio::test]
async fn an_existing_secret_is_reused_and_a_right_ca_bundle_left_alone() {
    let existing = Bundle::generate(&names()).unwrap();
    let fake = new_fake(
        Some(&existing),
        webhook_config([Some(&existing.ca_cert); 3]),
    );
    let bundle = certs::check_once(&client(fake.clone()), &settings())
        .await
        .unwrap();
    assert_eq!(bundle, existing);
    let f = fake.lock().unwrap();
    assert_eq!(f.writes(), 0, "no write at all: {:?}", f.log);
    assert_eq!(
        f.log,
        vec![
            (Method::GET, SECRET_PATH.to_owned()),
            (Method::GET, CONFIG_PATH.to_owned())
        ]
    );
}

#[tokio::test]
async fn a_create_race_re_reads_the_winners_secret() {
    let winner = Bundle::generate(&names()).unwrap();
    let fake = new_fake(None, webhook_config([None, None, None]));
    fake.lock().unwrap().race_on_create = Some(secret_json(&winner));
    let bundle = certs::check_once(&client(fake.clone()), &settings())
        .await
        .unwrap();
    assert_eq!(bundle, winner, "the loser serves the winner's certificate");
    let f = fake.lock().unwrap();
    assert_eq!(f.count(&Method::POST, SECRETS_PATH), 1);
    assert_eq!(
        f.count(&Method::GET, SECRET_PATH),
        2,
        "read, lost the race, read again"
    );
    assert_eq!(f.count(&Method::PUT, SECRET_PATH), 0);
    assert_eq!(stored_bundle(&f), winner);
    assert_eq!(ca_bundles(&f), vec![Some(winner.ca_cert.clone()); 3]);
}

#[tokio::test]
async fn a_wrong_or_reset_ca_bundle_is_patched() {
    let existing = Bundle::generate(&names()).unwrap();
    let other = Bundle::generate(&names()).unwrap();
    let fake = new_fake(
        Some(&existing),
        webhook_config([Some(&existing.ca_cert), Some(&other.ca_cert), None]),
    );
    certs::check_once(&client(fake.clone()), &settings())
        .await
        .unwrap();
    let f = fake.lock().unwrap();
    assert_eq!(f.writes(), 1, "only the patch: {:?}", f.log);
    assert_eq!(f.patches.len(), 1);
    assert_eq!(ca_bundles(&f), vec![Some(existing.ca_cert.clone()); 3]);
}

#[tokio::test]
async fn a_missing_webhook_configuration_is_not_an_error() {
    let existing = Bundle::generate(&names()).unwrap();
    let fake = new_fake(Some(&existing), json!(null));
    fake.lock().unwrap().config = None;
    let bundle = certs::check_once(&client(fake.clone()), &settings())
        .await
        .unwrap();
    assert_eq!(bundle, existing);
    assert!(fake.lock().unwrap().patches.is_empty());
}

#[tokio::test]
async fn a_certificate_for_other_names_is_renewed_with_the_same_ca() {
    let old = Bundle::generate(&tls::service_dns_names("old-service", NS)).unwrap();
    let fake = new_fake(Some(&old), webhook_config([Some(&old.ca_cert); 3]));
    let bundle = certs::check_once(&client(fake.clone()), &settings())
        .await
        .unwrap();
    assert_eq!(bundle.ca_cert, old.ca_cert);
    assert_eq!(bundle.ca_key, old.ca_key);
    assert_ne!(bundle.tls_cert, old.tls_cert);
    let f = fake.lock().unwrap();
    assert_eq!(f.count(&Method::PUT, SECRET_PATH), 1);
    // The update was conditioned on the resourceVersion read.
    assert_eq!(f.updates[0]["metadata"]["resourceVersion"], "42");
    assert_eq!(stored_bundle(&f), bundle);
    assert!(f.patches.is_empty(), "same CA: caBundle unchanged");
}

#[tokio::test]
async fn an_update_conflict_re_reads() {
    let old = Bundle::generate(&tls::service_dns_names("old-service", NS)).unwrap();
    let renewed_elsewhere = old.renew_leaf(&names()).unwrap();
    let fake = new_fake(Some(&old), webhook_config([Some(&old.ca_cert); 3]));
    fake.lock().unwrap().race_on_update = Some(secret_json(&renewed_elsewhere));
    let bundle = certs::check_once(&client(fake.clone()), &settings())
        .await
        .unwrap();
    assert_eq!(bundle, renewed_elsewhere);
    let f = fake.lock().unwrap();
    assert_eq!(f.count(&Method::PUT, SECRET_PATH), 1, "one update, lost");
    assert_eq!(f.count(&Method::GET, SECRET_PATH), 2);
    assert_eq!(stored_bundle(&f), renewed_elsewhere);
}

#[tokio::test]
async fn a_secret_without_its_ca_key_gets_a_new_ca_and_both_cas_are_trusted() {
    let old = Bundle::generate(&names()).unwrap();
    let mut secret = secret_json(&old);
    secret["data"]
        .as_object_mut()
        .unwrap()
        .remove(certs::CA_KEY_KEY);
    let fake = new_fake(None, webhook_config([Some(&old.ca_cert); 3]));
    fake.lock().unwrap().store_secret(secret);
    let bundle = certs::check_once(&client(fake.clone()), &settings())
        .await
        .unwrap();
    assert_ne!(bundle.ca_cert, old.ca_cert);
    assert_eq!(
        bundle.previous_ca_cert.as_deref(),
        Some(old.ca_cert.as_str())
    );
    let f = fake.lock().unwrap();
    assert_eq!(f.count(&Method::PUT, SECRET_PATH), 1);
    // Replicas still serving the old certificate stay trusted meanwhile.
    let want = format!("{}{}", bundle.ca_cert, old.ca_cert);
    assert_eq!(ca_bundles(&f), vec![Some(want); 3]);
}

#[tokio::test]
async fn bootstrap_serves_the_secret_and_maintain_follows_it() {
    let fake = new_fake(None, webhook_config([None, None, None]));
    let client = client(fake.clone());
    let settings = settings();
    let resolver: Arc<ReloadingResolver> =
        certs::bootstrap(&client, &settings, Duration::from_secs(5))
            .await
            .unwrap();
    let first = stored_bundle(&fake.lock().unwrap());
    let served = |r: &ReloadingResolver| r.current().cert[0].as_ref().to_vec();
    assert_eq!(served(&resolver), pem_der(&first.tls_cert));
    let task = tokio::spawn(certs::maintain(client, settings, resolver.clone()));

    // Another replica renews the certificate: this one serves it.
    let renewed = first.renew_leaf(&names()).unwrap();
    fake.lock().unwrap().store_secret(secret_json(&renewed));
    // Someone resets the caBundle: it is put back.
    fake.lock().unwrap().config = Some(webhook_config([None, None, None]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let done = served(&resolver) == pem_der(&renewed.tls_cert)
            && ca_bundles(&fake.lock().unwrap()) == vec![Some(first.ca_cert.clone()); 3];
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "maintain did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}
