//! The webhook's certificate when nothing else provides one: a CA and a
//! serving certificate generated at start, kept in a Secret of our namespace
//! so every replica serves the same pair, and the CA kept in the `caBundle`
//! of our `MutatingWebhookConfiguration`.
//!
//! Where `serve` gets its certificate, first match wins:
//!
//! 1. `--tls-cert`/`--tls-key` files (cert-manager, or your own PKI): served
//!    and reloaded when they change; nothing is written to the cluster and
//!    the `caBundle` is somebody else's job (cert-manager's CA injector);
//! 2. the Secret bootstrap, when running in a cluster (or with an explicit
//!    `--cert-secret`): this module;
//! 3. a self-signed pair for `localhost`, for local runs.
//!
//! The bootstrap, on every replica:
//!
//! - reads the Secret (`--cert-secret`, default [`DEFAULT_SECRET_NAME`]; keys
//!   `ca.crt`, `ca.key`, `tls.crt`, `tls.key`); creates it with a new CA and
//!   serving certificate when it is missing. Two replicas starting together
//!   both try; the loser gets `409 AlreadyExists` and re-reads the winner's;
//! - renews the serving certificate with the same CA when it has less than
//!   [`RENEW_BEFORE`] left, or does not cover the Service's DNS names, and
//!   regenerates everything when the CA is missing, broken or about to
//!   expire (the previous CA stays in the bundle while it is valid, so
//!   replicas still serving the old pair are trusted). Updates carry the
//!   `resourceVersion` read: concurrent writers conflict (`409`) and re-read;
//! - patches the `caBundle` of every webhook of its
//!   `MutatingWebhookConfiguration` (`--webhook-config-name`) when it differs;
//! - every [`CHECK_INTERVAL`] does all of it again: the Secret is re-read
//!   (a renewal by another replica is picked up), the served pair is
//!   swapped in place when it changed, and a `caBundle` someone reset is put
//!   back.
//!
//! The decisions are pure ([`decide`], [`ca_bundle_patch`]); the IO around
//! them is thin ([`ensure_secret`], [`sync_ca_bundle`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::ops::tls::{self, CA_VALIDITY, LEAF_VALIDITY, ReloadingResolver, TlsError};

/// The namespace the manifests install into.
pub const DEFAULT_NAMESPACE: &str = "openfunction-dapr";
/// Default name of the Secret that holds the generated CA and certificate.
pub const DEFAULT_SECRET_NAME: &str = "openfunction-dapr-tls";
/// Default name of our `MutatingWebhookConfiguration`. Mutating webhook
/// configurations are called in the order of their names; this one must
/// come before `dapr-sidecar-injector` (and any other injector), and digits
/// sort before letters.
pub const DEFAULT_WEBHOOK_CONFIG_NAME: &str = "00-openfunction-dapr";
/// Default name of the webhook's Service (the certificate's DNS names).
pub const DEFAULT_SERVICE_NAME: &str = "openfunction-dapr-webhook";
/// Secret key of the CA certificate (PEM).
pub const CA_CERT_KEY: &str = "ca.crt";
/// Secret key of the CA private key (PEM).
pub const CA_KEY_KEY: &str = "ca.key";
/// Secret key of the serving certificate (PEM).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Secret key of the serving certificate's private key (PEM).
pub const TLS_KEY_KEY: &str = "tls.key";
/// Secret key of the CA replaced by the last regeneration, kept in the
/// `caBundle` until it expires.
pub const PREVIOUS_CA_CERT_KEY: &str = "ca-previous.crt";
/// A serving certificate with less than this left is renewed (a CA with
/// less than this left is replaced).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How often the Secret and the `caBundle` are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Field manager of the `caBundle` patches.
pub const FIELD_MANAGER: &str = "openfunction-dapr-certs";
/// Create/update attempts of one [`ensure_secret`] (each conflict re-reads).
const MAX_ATTEMPTS: usize = 5;
/// Clock skew absorbed by generated certificates.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
const CA_COMMON_NAME: &str = "openfunction-dapr webhook CA";

/// Errors of the certificate bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {0}: still conflicting after {MAX_ATTEMPTS} attempts")]
    Contention(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The CA and serving certificate kept in the Secret, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub tls_cert: String,
    pub tls_key: String,
    /// The CA this one replaced, while it is still valid.
    pub previous_ca_cert: Option<String>,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("has_previous_ca", &self.previous_ca_cert.is_some())
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// A new CA and a serving certificate for `names` signed by it.
    pub fn generate(names: &[String]) -> Result<Self, CertError> {
        let (ca_cert, ca_key) = generate_ca()?;
        let (tls_cert, tls_key) = sign_leaf(&ca_cert, &ca_key, names)?;
        Ok(Self {
            ca_cert,
            ca_key,
            tls_cert,
            tls_key,
            previous_ca_cert: None,
        })
    }

    /// The same CA, a new serving certificate for `names`.
    pub fn renew_leaf(&self, names: &[String]) -> Result<Self, CertError> {
        let (tls_cert, tls_key) = sign_leaf(&self.ca_cert, &self.ca_key, names)?;
        Ok(Self {
            tls_cert,
            tls_key,
            ..self.clone()
        })
    }

    /// What the webhook configuration's `caBundle` must hold: the CA, then
    /// the previous CA while it has not expired.
    pub fn ca_bundle(&self, now: SystemTime) -> String {
        let mut out = self.ca_cert.clone();
        if let Some(prev) = &self.previous_ca_cert
            && first_not_after(prev).is_some_and(|t| t > now)
        {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(prev);
        }
        out
    }

    /// The Secret `data` of this bundle.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
        };
        put(CA_CERT_KEY, &self.ca_cert);
        put(CA_KEY_KEY, &self.ca_key);
        put(TLS_CERT_KEY, &self.tls_cert);
        put(TLS_KEY_KEY, &self.tls_key);
        if let Some(prev) = &self.previous_ca_cert {
            put(PREVIOUS_CA_CERT_KEY, prev);
        }
        data
    }
}

/// What a Secret holds, each key as text when present and UTF-8.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub previous_ca_cert: Option<String>,
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stored")
            .field("ca_cert", &self.ca_cert.is_some())
            .field("ca_key", &self.ca_key.is_some())
            .field("tls_cert", &self.tls_cert.is_some())
            .field("tls_key", &self.tls_key.is_some())
            .finish()
    }
}

impl Stored {
    /// Reads the keys of a Secret's `data`.
    pub fn from_secret(secret: &Secret) -> Self {
        let get = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|s| !s.trim().is_empty())
        };
        Self {
            ca_cert: get(CA_CERT_KEY),
            ca_key: get(CA_KEY_KEY),
            tls_cert: get(TLS_CERT_KEY),
            tls_key: get(TLS_KEY_KEY),
            previous_ca_cert: get(PREVIOUS_CA_CERT_KEY),
        }
    }

    /// The bundle, when every key is present.
    pub fn bundle(&self) -> Option<Bundle> {
        Some(Bundle {
            ca_cert: self.ca_cert.clone()?,
            ca_key: self.ca_key.clone()?,
            tls_cert: self.tls_cert.clone()?,
            tls_key: self.tls_key.clone()?,
            previous_ca_cert: self.previous_ca_cert.clone(),
        })
    }
}

/// What to do with the Secret's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Valid for [`RENEW_BEFORE`] at least: serve it, write nothing.
    Keep,
    /// The CA is good, the serving certificate is not (the reason says why):
    /// sign a new one with the same CA.
    RenewLeaf(String),
    /// The CA is missing, broken or expiring: new CA and certificate.
    Regenerate(String),
}

/// Decides what the stored pair needs, to serve `names` until at least
/// `now + renew_before`. Pure.
pub fn decide(
    stored: &Stored,
    names: &[String],
    now: SystemTime,
    renew_before: Duration,
) -> Decision {
    let horizon = now + renew_before;
    let (Some(ca_cert), Some(ca_key)) = (&stored.ca_cert, &stored.ca_key) else {
        return Decision::Regenerate("no CA certificate and key".to_owned());
    };
    if let Some(problem) = ca_problem(ca_cert, ca_key, horizon) {
        return Decision::Regenerate(problem);
    }
    let (Some(cert), Some(key)) = (&stored.tls_cert, &stored.tls_key) else {
        return Decision::RenewLeaf("no serving certificate and key".to_owned());
    };
    match leaf_problem(ca_cert, cert, key, names, horizon) {
        None => Decision::Keep,
        Some(problem) => Decision::RenewLeaf(problem),
    }
}

/// Why the CA cannot sign certificates valid until `horizon`, if it cannot.
pub fn ca_problem(ca_cert: &str, ca_key: &str, horizon: SystemTime) -> Option<String> {
    let Some(not_after) = first_not_after(ca_cert) else {
        return Some("the CA certificate cannot be read".to_owned());
    };
    if not_after <= horizon {
        return Some(format!(
            "the CA expires at {} (unix), within the renewal window",
            unix(not_after)
        ));
    }
    let key = match KeyPair::from_pem(ca_key) {
        Ok(k) => k,
        Err(e) => return Some(format!("the CA key cannot be read: {e}")),
    };
    if let Err(e) = Issuer::from_ca_cert_pem(ca_cert, key) {
        return Some(format!("the CA certificate cannot be used: {e}"));
    }
    None
}

/// Why `cert`/`key` would not serve every one of `names` under the CA
/// `ca_cert` until `horizon` (wrong key, wrong CA, a missing name, expiry),
/// if they would not.
pub fn leaf_problem(
    ca_cert: &str,
    cert: &str,
    key: &str,
    names: &[String],
    horizon: SystemTime,
) -> Option<String> {
    let provider = tls::crypto_provider();
    let certified = match tls::certified_key_from_pem(cert.as_bytes(), key.as_bytes(), &provider) {
        Ok(c) => c,
        Err(e) => return Some(format!("serving certificate: {e}")),
    };
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_cert.as_bytes()) {
        match ca.map(|ca| roots.add(ca)) {
            Ok(Ok(())) => {}
            _ => return Some("the CA certificate cannot be read".to_owned()),
        }
    }
    let verifier =
        match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build() {
            Ok(v) => v,
            Err(e) => return Some(format!("the CA certificate cannot be used: {e}")),
        };
    let at = UnixTime::since_unix_epoch(horizon.duration_since(UNIX_EPOCH).unwrap_or_default());
    let Some((leaf, intermediates)) = certified.cert.split_first() else {
        return Some("no serving certificate".to_owned());
    };
    for name in names {
        let Ok(server_name) = ServerName::try_from(name.as_str()) else {
            return Some(format!("{name:?} is not a DNS name"));
        };
        if let Err(e) = verifier.verify_server_cert(leaf, intermediates, &server_name, &[], at) {
            return Some(format!(
                "the serving certificate would not be valid for {name} at {} (unix): {e}",
                unix(horizon)
            ));
        }
    }
    None
}

/// Carries out a decision that is not [`Decision::Keep`] on `stored`.
pub fn produce(
    stored: &Stored,
    decision: &Decision,
    names: &[String],
    now: SystemTime,
) -> Result<Bundle, CertError> {
    if let (Decision::RenewLeaf(_), Some(ca_cert), Some(ca_key)) =
        (decision, &stored.ca_cert, &stored.ca_key)
    {
        let (tls_cert, tls_key) = sign_leaf(ca_cert, ca_key, names)?;
        let renewed = Bundle {
            ca_cert: ca_cert.clone(),
            ca_key: ca_key.clone(),
            tls_cert,
            tls_key,
            previous_ca_cert: stored.previous_ca_cert.clone(),
        };
        // A CA key that does not belong to the CA signs certificates that do
        // not verify: start over then.
        match leaf_problem(
            &renewed.ca_cert,
            &renewed.tls_cert,
            &renewed.tls_key,
            names,
            now,
        ) {
            None => return Ok(renewed),
            Some(problem) => {
                warn!(%problem, "a certificate signed by the stored CA does not verify; replacing the CA")
            }
        }
    }
    let mut fresh = Bundle::generate(names)?;
    // Keep the replaced CA in the bundle while it is valid, so replicas still
    // serving a certificate it signed are trusted until they reload.
    fresh.previous_ca_cert = stored
        .ca_cert
        .clone()
        .filter(|ca| first_not_after(ca).is_some_and(|t| t > now));
    Ok(fresh)
}

/// A new CA certificate and key (PEM).
pub fn generate_ca() -> Result<(String, String), CertError> {
    let now = whole_seconds(SystemTime::now());
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `names` (the first is the common name), valid
/// [`LEAF_VALIDITY`], signed by the CA; returns the certificate and its key.
pub fn sign_leaf(
    ca_cert: &str,
    ca_key: &str,
    names: &[String],
) -> Result<(String, String), CertError> {
    let Some(common_name) = names.first() else {
        return Err(TlsError::NoNames.into());
    };
    let issuer = Issuer::from_ca_cert_pem(ca_cert, KeyPair::from_pem(ca_key)?)?;
    let now = whole_seconds(SystemTime::now());
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name.as_str());
    let mut sans = Vec::new();
    for name in names {
        let san = match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.as_str().try_into()?),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + LEAF_VALIDITY).into();
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The Secret we create: type `kubernetes.io/tls` (so `tls.crt`/`tls.key`
/// are where every tool looks), labelled as ours.
pub fn new_secret(name: &str, bundle: &Bundle) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(bundle.to_data()),
        ..Secret::default()
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "openfunction-dapr".to_owned(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            "webhook-certificate".to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "openfunction-dapr".to_owned(),
        ),
    ])
}

/// The strategic merge patch that sets the `caBundle` of every webhook of
/// `observed` to `ca_bundle`, or `None` when they all hold it already. The
/// webhooks list merges on `name`, so the patch touches nothing else.
pub fn ca_bundle_patch(observed: &MutatingWebhookConfiguration, ca_bundle: &str) -> Option<Value> {
    let webhooks = observed.webhooks.as_deref().unwrap_or_default();
    let stale = webhooks.iter().any(|w| {
        w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_bundle.as_bytes())
    });
    if !stale {
        return None;
    }
    let encoded = base64_encode(ca_bundle.as_bytes());
    let entries: Vec<Value> = webhooks
        .iter()
        .map(|w| json!({"name": w.name, "clientConfig": {"caBundle": encoded}}))
        .collect();
    Some(json!({"webhooks": entries}))
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads the Secret `name` and makes sure it holds a bundle valid for
/// [`RENEW_BEFORE`] (creating, renewing or regenerating it as [`decide`]
/// says), then returns that bundle. A `409` (another replica created or
/// updated it first) re-reads; updates are conditioned on the
/// `resourceVersion` read.
pub async fn ensure_secret(
    secrets: &Api<Secret>,
    name: &str,
    names: &[String],
    renew_before: Duration,
) -> Result<Bundle, CertError> {
    for _ in 0..MAX_ATTEMPTS {
        let now = SystemTime::now();
        let write = match secrets.get_opt(name).await? {
            None => {
                let bundle = Bundle::generate(names)?;
                info!(
                    secret = name,
                    "creating the webhook certificate Secret with a new CA"
                );
                secrets
                    .create(&PostParams::default(), &new_secret(name, &bundle))
                    .await
                    .map(|_| bundle)
            }
            Some(secret) => {
                let stored = Stored::from_secret(&secret);
                let decision = match (decide(&stored, names, now, renew_before), stored.bundle()) {
                    (Decision::Keep, Some(bundle)) => return Ok(bundle),
                    (Decision::Keep, None) => Decision::RenewLeaf("incomplete".to_owned()),
                    (decision, _) => decision,
                };
                let reason = match &decision {
                    Decision::RenewLeaf(r) | Decision::Regenerate(r) => r.as_str(),
                    Decision::Keep => "",
                };
                let bundle = produce(&stored, &decision, names, now)?;
                info!(secret = name, %reason, new_ca = bundle.ca_cert != stored.ca_cert.clone().unwrap_or_default(),
                    "updating the webhook certificate Secret");
                let mut updated = secret;
                updated.metadata.managed_fields = None;
                updated
                    .metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .extend(labels());
                updated.data = Some(bundle.to_data());
                updated.string_data = None;
                // `metadata.resourceVersion` is the one read: a concurrent
                // writer makes this fail with 409.
                secrets
                    .replace(name, &PostParams::default(), &updated)
                    .await
                    .map(|_| bundle)
            }
        };
        match write {
            Ok(bundle) => return Ok(bundle),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                info!(secret = name, reason = %status.reason, "another replica wrote the Secret first; reading it again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CertError::Contention(name.to_owned()))
}

/// Sets the `caBundle` of every webhook of the configuration `name` when it
/// differs. Returns whether a patch was sent; a missing configuration is
/// not an error (`Ok(false)`, logged).
pub async fn sync_ca_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    ca_bundle: &str,
) -> Result<bool, CertError> {
    let Some(observed) = api.get_opt(name).await? else {
        warn!(
            webhook_configuration = name,
            "MutatingWebhookConfiguration not found; cannot set its caBundle"
        );
        return Ok(false);
    };
    let Some(patch) = ca_bundle_patch(&observed, ca_bundle) else {
        return Ok(false);
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Strategic(&patch)).await?;
    info!(webhook_configuration = name, "caBundle set");
    Ok(true)
}

/// Settings of the Secret bootstrap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapSettings {
    /// Namespace of the Secret (ours).
    pub namespace: String,
    pub secret_name: String,
    /// Our `MutatingWebhookConfiguration`; `None`: leave `caBundle` alone.
    pub webhook_config_name: Option<String>,
    /// DNS names of the serving certificate.
    pub dns_names: Vec<String>,
    pub renew_before: Duration,
    pub check_interval: Duration,
}

impl BootstrapSettings {
    /// Defaults for the Service `service` in `namespace`.
    pub fn new(namespace: &str, service: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            secret_name: DEFAULT_SECRET_NAME.to_owned(),
            webhook_config_name: Some(DEFAULT_WEBHOOK_CONFIG_NAME.to_owned()),
            dns_names: tls::service_dns_names(service, namespace),
            renew_before: RENEW_BEFORE,
            check_interval: CHECK_INTERVAL,
        }
    }
}

/// Which Secret to bootstrap from, if any: an explicit `--cert-secret`
/// always; else [`DEFAULT_SECRET_NAME`] when running in a cluster without
/// `--local`; else none (a self-signed local pair). An empty name disables
/// the bootstrap. Pure; `--tls-cert` is checked before.
pub fn bootstrap_secret(explicit: Option<&str>, local: bool, in_cluster: bool) -> Option<String> {
    match explicit {
        Some(name) => Some(name.trim().to_owned()).filter(|n| !n.is_empty()),
        None if in_cluster && !local => Some(DEFAULT_SECRET_NAME.to_owned()),
        None => None,
    }
}

/// True inside a pod (the in-cluster configuration's variables are set).
pub fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some()
}

/// One round: ensure the Secret, then the `caBundle`. Returns the bundle.
pub async fn check_once(
    client: &kube::Client,
    settings: &BootstrapSettings,
) -> Result<Bundle, CertError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let bundle = ensure_secret(
        &secrets,
        &settings.secret_name,
        &settings.dns_names,
        settings.renew_before,
    )
    .await?;
    if let Some(config) = &settings.webhook_config_name {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        if let Err(e) = sync_ca_bundle(&api, config, &bundle.ca_bundle(SystemTime::now())).await {
            warn!(error = %e, webhook_configuration = %config, "cannot set the caBundle; retrying later");
        }
    }
    Ok(bundle)
}

/// Bootstraps the certificate: retries [`check_once`] (with back-off, for
/// at most `deadline`) until the Secret holds a valid bundle, and returns a
/// resolver serving it. Run [`maintain`] next.
pub async fn bootstrap(
    client: &kube::Client,
    settings: &BootstrapSettings,
    deadline: Duration,
) -> Result<Arc<ReloadingResolver>, CertError> {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        match check_once(client, settings).await {
            Ok(bundle) => {
                let resolver = ReloadingResolver::from_pem(&bundle.tls_cert, &bundle.tls_key)?;
                info!(
                    secret = %settings.secret_name,
                    namespace = %settings.namespace,
                    "serving the certificate of the Secret; checked every {:?}",
                    settings.check_interval
                );
                return Ok(Arc::new(resolver));
            }
            Err(e) if started.elapsed() + delay < deadline => {
                warn!(error = %e, retry_in = ?delay, "certificate bootstrap failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every `check_interval`: [`check_once`], and serve the Secret's pair when
/// it changed (a renewal here or by another replica). Runs forever.
pub async fn maintain(
    client: kube::Client,
    settings: BootstrapSettings,
    resolver: Arc<ReloadingResolver>,
) {
    let mut ticker = tokio::time::interval(settings.check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // immediate; bootstrap just ran
    loop {
        ticker.tick().await;
        match check_once(&client, &settings).await {
            // Logged by the resolver when it changes or is refused.
            Ok(bundle) => {
                let _ = resolver.update_pem(&bundle.tls_cert, &bundle.tls_key);
            }
            Err(e) => warn!(error = %e, "certificate check failed; serving the current pair"),
        }
    }
}

/// Where `serve`'s certificate lives and whom it names.
#[derive(Debug, Clone, Copy)]
pub struct CertTarget<'a> {
    /// Namespace of the Secret; the client's default namespace when `None`.
    pub namespace: Option<&'a str>,
    /// The webhook Service the certificate is issued for.
    pub service: &'a str,
    /// The MutatingWebhookConfiguration whose caBundle is kept in step.
    pub webhook_config_name: &'a str,
}

/// `serve`'s Secret bootstrap: connects to the cluster, bootstraps the
/// Secret `secret_name` (see the module docs), starts [`maintain`] and
/// returns the resolver serving the Secret's pair.
pub async fn start(
    client: kube::Client,
    target: &CertTarget<'_>,
    secret_name: String,
) -> anyhow::Result<Arc<ReloadingResolver>> {
    use anyhow::Context;
    let namespace = target
        .namespace
        .map(str::trim)
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| client.default_namespace())
        .to_owned();
    let mut settings = BootstrapSettings::new(&namespace, target.service);
    settings.secret_name = secret_name;
    settings.webhook_config_name =
        Some(target.webhook_config_name.trim().to_owned()).filter(|n| !n.is_empty());
    // Retry until the API server answers: readiness stays false meanwhile,
    // and the process does not crash-loop while the control plane is away.
    let resolver = bootstrap(&client, &settings, Duration::MAX)
        .await
        .with_context(|| {
            format!(
                "bootstrapping the webhook certificate in Secret {}/{}",
                settings.namespace, settings.secret_name
            )
        })?;
    tokio::spawn(maintain(client, settings, resolver.clone()));
    Ok(resolver)
}

/// `openfunction-dapr certs`: writes `ca.crt`, `tls.crt` and `tls.key` for
/// the Service `service` in `namespace` to `out_dir` (the key mode 0600).
/// Refuses to overwrite existing files unless `force`.
pub fn write_files(
    service: &str,
    namespace: &str,
    out_dir: &Path,
    force: bool,
) -> Result<tls::GeneratedCerts, CertError> {
    let names = tls::service_dns_names(service, namespace);
    let generated = tls::generate_ca_and_cert(&names, false)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Io { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let files = [
        (CA_CERT_KEY, &generated.ca_pem, 0o644),
        (TLS_CERT_KEY, &generated.cert_pem, 0o644),
        (TLS_KEY_KEY, &generated.key_pem, 0o600),
    ];
    if !force {
        for (name, _, _) in &files {
            let path = out_dir.join(name);
            if path.exists() {
                return Err(CertError::Invalid(format!(
                    "{} exists; use --force to overwrite",
                    path.display()
                )));
            }
        }
    }
    for (name, pem, mode) in files {
        let path = out_dir.join(name);
        write_file(&path, pem, mode).map_err(io(&path))?;
    }
    Ok(generated)
}

fn write_file(path: &Path, content: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let mut file = options.open(path)?;
        // `mode` only applies to new files.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(content.as_bytes())
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        options.open(path)?.write_all(content.as_bytes())
    }
}

fn first_not_after(pem: &str) -> Option<SystemTime> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    tls::cert_not_after(der.as_ref())
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix(t))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        tls::service_dns_names("wh", "ns")
    }

    fn stored(b: &Bundle) -> Stored {
        Stored::from_secret(&new_secret("s", b))
    }

    #[test]
    fn a_fresh_bundle_is_kept() {
        let b = Bundle::generate(&names()).unwrap();
        let s = stored(&b);
        assert_eq!(s.bundle(), Some(b));
        assert_eq!(
            decide(&s, &names(), SystemTime::now(), RENEW_BEFORE),
            Decision::Keep
        );
    }

    #[test]
    fn an_empty_secret_is_regenerated() {
        assert!(matches!(
            decide(
                &Stored::default(),
                &names(),
                SystemTime::now(),
                RENEW_BEFORE
            ),
            Decision::Regenerate(_)
        ));
    }

    #[test]
    fn a_leaf_near_expiry_or_for_other_names_is_renewed_with_the_same_ca() {
        let b = Bundle::generate(&names()).unwrap();
        let s = stored(&b);
        // 340 days from now the leaf (1 year) has less than 30 days left.
        let later = SystemTime::now() + Duration::from_secs(340 * 24 * 3600);
        let d = decide(&s, &names(), later, RENEW_BEFORE);
        assert!(matches!(d, Decision::RenewLeaf(_)), "{d:?}");
        let other = tls::service_dns_names("other", "ns");
        let d = decide(&s, &other, SystemTime::now(), RENEW_BEFORE);
        assert!(
            matches!(&d, Decision::RenewLeaf(r) if r.contains("other")),
            "{d:?}"
        );

        let renewed = produce(&s, &d, &other, SystemTime::now()).unwrap();
        assert_eq!(renewed.ca_cert, b.ca_cert);
        assert_eq!(renewed.ca_key, b.ca_key);
        assert_ne!(renewed.tls_cert, b.tls_cert);
        assert_eq!(
            decide(&stored(&renewed), &other, SystemTime::now(), RENEW_BEFORE),
            Decision::Keep
        );
    }

    #[test]
    fn a_missing_leaf_is_renewed() {
        let b = Bundle::generate(&names()).unwrap();
        let mut s = stored(&b);
        s.tls_key = None;
        assert!(matches!(
            decide(&s, &names(), SystemTime::now(), RENEW_BEFORE),
            Decision::RenewLeaf(_)
        ));
        // A leaf of another CA is not served either.
        let other = Bundle::generate(&names()).unwrap();
        let mut s = stored(&b);
        s.tls_cert = Some(other.tls_cert.clone());
        s.tls_key = Some(other.tls_key.clone());
        assert!(matches!(
            decide(&s, &names(), SystemTime::now(), RENEW_BEFORE),
            Decision::RenewLeaf(_)
        ));
    }

    #[test]
    fn a_broken_or_expiring_ca_is_replaced_and_kept_in_the_bundle() {
        let b = Bundle::generate(&names()).unwrap();
        let mut s = stored(&b);
        s.ca_key = Some("garbage".to_owned());
        let d = decide(&s, &names(), SystemTime::now(), RENEW_BEFORE);
        assert!(matches!(d, Decision::Regenerate(_)), "{d:?}");
        let fresh = produce(&s, &d, &names(), SystemTime::now()).unwrap();
        assert_ne!(fresh.ca_cert, b.ca_cert);
        assert_eq!(fresh.previous_ca_cert.as_deref(), Some(b.ca_cert.as_str()));
        let bundle = fresh.ca_bundle(SystemTime::now());
        assert!(bundle.starts_with(&fresh.ca_cert) && bundle.ends_with(&b.ca_cert));
        // Once the old CA has expired it leaves the bundle.
        let far = SystemTime::now() + CA_VALIDITY + Duration::from_secs(86_400);
        assert_eq!(fresh.ca_bundle(far), fresh.ca_cert);

        let in_ten_years = SystemTime::now() + CA_VALIDITY - Duration::from_secs(86_400);
        assert!(matches!(
            decide(&stored(&b), &names(), in_ten_years, RENEW_BEFORE),
            Decision::Regenerate(r) if r.contains("CA expires")
        ));
    }

    #[test]
    fn a_ca_key_of_another_ca_leads_to_a_new_ca() {
        let a = Bundle::generate(&names()).unwrap();
        let b = Bundle::generate(&names()).unwrap();
        let mut s = stored(&a);
        s.ca_key = Some(b.ca_key.clone());
        s.tls_cert = None;
        let d = decide(&s, &names(), SystemTime::now(), RENEW_BEFORE);
        assert!(matches!(d, Decision::RenewLeaf(_)), "{d:?}");
        let out = produce(&s, &d, &names(), SystemTime::now()).unwrap();
        assert_ne!(out.ca_cert, a.ca_cert);
        assert_eq!(
            decide(&stored(&out), &names(), SystemTime::now(), RENEW_BEFORE),
            Decision::Keep
        );
    }

    #[test]
    fn ca_bundle_patch_names_every_webhook_only_when_one_differs() {
        let config = |bundles: [Option<&str>; 2]| -> MutatingWebhookConfiguration {
            serde_json::from_value(json!({
                "metadata": {"name": "c"},
                "webhooks": bundles.iter().enumerate().map(|(i, b)| {
                    let mut w = json!({"name": format!("w{i}.example.com"), "clientConfig": {},
                        "sideEffects": "None", "admissionReviewVersions": ["v1"]});
                    if let Some(b) = b {
                        w["clientConfig"]["caBundle"] = json!(base64_encode(b.as_bytes()));
                    }
                    w
                }).collect::<Vec<_>>(),
            }))
            .unwrap()
        };
        assert_eq!(
            ca_bundle_patch(&config([Some("CA"), Some("CA")]), "CA"),
            None
        );
        let want = Some(json!({"webhooks": [
            {"name": "w0.example.com", "clientConfig": {"caBundle": base64_encode(b"CA")}},
            {"name": "w1.example.com", "clientConfig": {"caBundle": base64_encode(b"CA")}},
        ]}));
        assert_eq!(ca_bundle_patch(&config([Some("CA"), None]), "CA"), want);
        assert_eq!(
            ca_bundle_patch(&config([Some("old"), Some("CA")]), "CA"),
            want
        );
        let empty: MutatingWebhookConfiguration =
            serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
        assert_eq!(ca_bundle_patch(&empty, "CA"), None);
    }

    #[test]
    fn bootstrap_secret_precedence() {
        assert_eq!(
            bootstrap_secret(Some("x"), false, false).as_deref(),
            Some("x")
        );
        assert_eq!(bootstrap_secret(Some(""), false, true), None);
        assert_eq!(
            bootstrap_secret(None, false, true).as_deref(),
            Some(DEFAULT_SECRET_NAME)
        );
        assert_eq!(bootstrap_secret(None, true, true), None);
        assert_eq!(bootstrap_secret(None, false, false), None);
    }

    #[test]
    fn webhook_config_name_sorts_before_the_dapr_injector() {
        assert!(DEFAULT_WEBHOOK_CONFIG_NAME < "dapr-sidecar-injector");
    }
}
