//! Reads what `check` needs from the cluster: gets and lists only.
//! Functions and Servings are read as the webhook store and the controller
//! read them: in the version API discovery chooses, never another.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ServiceReference,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, Resource};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::CheckOptions;
use super::cert::pem_chain;
use super::evaluate::{FUNCTION_CRD, SERVING_CRD, Served, Snapshot};
use crate::model::function::{FUNCTION_LABEL, Function, PROXY_LABEL, SERVING_LABEL, Serving};
use crate::model::v1beta2::{self, ApiVersion, GROUP, read_function};
use crate::ops::certs::TLS_CERT_KEY;
use crate::ops::discovery::version_to_read;
use crate::ops::tls::crypto_provider;

/// How long to try a webhook pod directly before reading its Secret.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A failed read, with what was being read.
#[derive(Debug, thiserror::Error)]
#[error("reading {what}: {source}")]
pub struct GatherError {
    what: String,
    #[source]
    source: kube::Error,
}

fn ctx(what: impl Into<String>) -> impl FnOnce(kube::Error) -> GatherError {
    let what = what.into();
    move |source| GatherError { what, source }
}

async fn get_opt<K>(api: Api<K>, name: &str, what: &str) -> Result<Option<K>, GatherError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(ctx(what))
}

/// A list that is empty when the API is not there (a CRD not installed).
async fn list_or_empty<K>(api: Api<K>, lp: &ListParams, what: &str) -> Result<Vec<K>, GatherError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(lp).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(ctx(what)(e)),
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// `Err` only when the API server cannot be reached at all (exit status 2);
/// a read that fails later is reported as a finding by the caller.
pub async fn server_version(client: &Client) -> Result<String, kube::Error> {
    client.apiserver_version().await.map(|v| v.git_version)
}

/// Everything `check` reads.
pub async fn snapshot(
    client: &Client,
    opts: &CheckOptions,
    server_version: String,
) -> Result<Snapshot, GatherError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let function_crd = get_opt(crds.clone(), FUNCTION_CRD, "the Function CRD").await?;
    let serving_crd = get_opt(crds, SERVING_CRD, "the Serving CRD").await?;
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let all_configs = configs
        .list(&ListParams::default())
        .await
        .map_err(ctx("MutatingWebhookConfigurations"))?
        .items;
    let mutating_configs = all_configs
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let webhook_config = all_configs
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(opts.webhook_config.as_str()));
    let mut served = BTreeMap::new();
    for entry in webhook_config
        .iter()
        .flat_map(|c| c.webhooks.iter().flatten())
    {
        served.insert(entry.name.clone(), served_cert(client, entry, opts).await);
    }
    let lease_ref = (opts.lease_namespace.clone(), opts.lease_name.clone());
    let lease = get_opt(
        Api::<Lease>::namespaced(client.clone(), &lease_ref.0),
        &lease_ref.1,
        "the controller Lease",
    )
    .await?;
    let deployments: Api<Deployment> = Api::all(client.clone());
    let dapr_operators = deployments
        .list(&ListParams::default().labels("app=dapr-operator"))
        .await
        .map_err(ctx("the Dapr operator Deployment"))?
        .items;
    let openfunction_controllers = deployments
        .list(
            &ListParams::default().labels("app.kubernetes.io/name=openfunction-controller-manager"),
        )
        .await
        .map_err(ctx("OpenFunction's controller Deployment"))?
        .items;
    let ns = opts.namespace.as_deref();
    // The versions the webhook store and the controller read (API discovery).
    let function_version = version_to_read(client, "functions")
        .await
        .map_err(ctx("API discovery of core.openfunction.io functions"))?;
    let serving_version = version_to_read(client, "servings")
        .await
        .map_err(ctx("API discovery of core.openfunction.io servings"))?;
    let functions = match function_version {
        Some(v) => list_functions(client, ns, v).await?,
        None => Vec::new(),
    };
    let servings = match serving_version {
        Some(v) => list_servings(client, ns, v).await?,
        None => Vec::new(),
    };
    let mut labelled_deployments = Vec::new();
    let mut pods = Vec::new();
    for label in [FUNCTION_LABEL, SERVING_LABEL, PROXY_LABEL] {
        let lp = ListParams::default().labels(label);
        for d in list_or_empty::<Deployment>(scoped(client, ns), &lp, "Deployments").await? {
            labelled_deployments.push(serde_json::to_value(d).unwrap_or_default());
        }
        if label != PROXY_LABEL {
            for p in list_or_empty::<Pod>(scoped(client, ns), &lp, "Pods").await? {
                pods.push(serde_json::to_value(p).unwrap_or_default());
            }
        }
    }
    dedup_by_uid(&mut labelled_deployments);
    dedup_by_uid(&mut pods);
    Ok(Snapshot {
        now: SystemTime::now(),
        server_version,
        function_crd,
        serving_crd,
        function_version,
        serving_version,
        webhook_config_name: opts.webhook_config.clone(),
        webhook_config,
        shipped_config: super::shipped_config(),
        mutating_configs,
        served,
        lease_ref,
        lease,
        dapr_operators,
        openfunction_controllers,
        functions,
        servings,
        deployments: labelled_deployments,
        pods,
        cluster_domain: opts.cluster_domain.clone(),
        grpc_endpoint_form: opts.grpc_endpoint_form,
        namespace: opts.namespace.clone(),
        install_namespace: opts.install_namespace.clone(),
    })
}

/// Functions as the product reads them: listed in `version`, never another
/// one (no conversion), each read by [`read_function`] (a v1beta2 Function
/// keeps its v1beta2 spec, for the contexts the webhook writes).
async fn list_functions(
    client: &Client,
    namespace: Option<&str>,
    version: ApiVersion,
) -> Result<Vec<Function>, GatherError> {
    let gvk = GroupVersionKind::gvk(GROUP, version.as_str(), "Function");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "functions");
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let what = format!("Functions ({})", version.api_version());
    let items = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => return Err(ctx(what)(e)),
    };
    items
        .into_iter()
        .map(|item| {
            let mut doc = serde_json::to_value(item)?;
            // Items of a list need not carry their type; they are in `version`.
            doc["apiVersion"] = Value::from(version.api_version());
            doc["kind"] = Value::from("Function");
            read_function(doc)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| ctx(what)(kube::Error::SerdeError(e)))
}

/// Servings in `version`, metadata only (all the product reads of them).
async fn list_servings(
    client: &Client,
    namespace: Option<&str>,
    version: ApiVersion,
) -> Result<Vec<Serving>, GatherError> {
    let what = format!("Servings ({})", version.api_version());
    let lp = ListParams::default();
    let metas: Vec<ObjectMeta> = match version {
        ApiVersion::V1beta1 => list_meta::<Serving>(scoped(client, namespace), &lp, &what).await?,
        ApiVersion::V1beta2 => {
            list_meta::<v1beta2::Serving>(scoped(client, namespace), &lp, &what).await?
        }
    };
    Ok(metas
        .into_iter()
        .map(|metadata| Serving {
            metadata,
            spec: Default::default(),
        })
        .collect())
}

/// [`list_or_empty`], metadata only.
async fn list_meta<K>(
    api: Api<K>,
    lp: &ListParams,
    what: &str,
) -> Result<Vec<ObjectMeta>, GatherError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list_metadata(lp).await {
        Ok(list) => Ok(list.items.into_iter().map(|m| m.metadata).collect()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(ctx(what)(e)),
    }
}

fn dedup_by_uid(objects: &mut Vec<Value>) {
    let mut seen = std::collections::BTreeSet::new();
    objects.retain(|o| seen.insert(o["metadata"]["uid"].as_str().unwrap_or_default().to_owned()));
}

/// The certificate an entry's server presents: by connecting (a `url`, or
/// a Service endpoint when this machine reaches it), else from the Secret.
async fn served_cert(client: &Client, entry: &MutatingWebhook, opts: &CheckOptions) -> Served {
    let cc = &entry.client_config;
    if let Some(url) = &cc.url {
        return match url_target(url) {
            Some((host, port)) => Served {
                source: format!("served at {host}:{port}"),
                chain: fetch_chain(&host, port, &host).await,
                server_name: host,
            },
            None => Served {
                source: url.clone(),
                server_name: url.clone(),
                chain: Err(format!("cannot parse the url {url}")),
            },
        };
    }
    let Some(ServiceReference {
        name, namespace, ..
    }) = &cc.service
    else {
        return Served {
            source: "clientConfig".into(),
            server_name: String::new(),
            chain: Err("the clientConfig names neither a url nor a Service".into()),
        };
    };
    let server_name = format!("{name}.{namespace}.svc");
    if let Some((addr, port)) = endpoint(client, namespace, name).await
        && let Ok(chain) = fetch_chain(&addr, port, &server_name).await
    {
        return Served {
            source: format!("served by {addr}:{port}"),
            server_name,
            chain: Ok(chain),
        };
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let chain = match secrets.get_opt(&opts.cert_secret).await {
        Ok(Some(secret)) => secret
            .data
            .and_then(|d| d.get(TLS_CERT_KEY).map(|b| pem_chain(&b.0)))
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                format!(
                    "Secret {namespace}/{} has no {TLS_CERT_KEY}",
                    opts.cert_secret
                )
            }),
        Ok(None) => Err(format!("Secret {namespace}/{} not found", opts.cert_secret)),
        Err(e) => Err(format!(
            "reading Secret {namespace}/{}: {e}",
            opts.cert_secret
        )),
    };
    Served {
        source: format!("Secret {namespace}/{}", opts.cert_secret),
        server_name,
        chain,
    }
}

fn url_target(url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), uri.port_u16().unwrap_or(443)))
}

/// One ready endpoint of the webhook Service.
async fn endpoint(client: &Client, namespace: &str, service: &str) -> Option<(String, u16)> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let list = slices.list(&lp).await.ok()?;
    list.items.into_iter().find_map(|slice| {
        let port = slice.ports.as_ref()?.first()?.port?;
        let addr = slice
            .endpoints
            .iter()
            .find(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))?
            .addresses
            .first()?
            .clone();
        Some((addr, u16::try_from(port).ok()?))
    })
}

/// Accepts any certificate: the chain is verified afterwards, against the
/// caBundle, by [`super::cert::verify`].
#[derive(Debug)]
struct Record(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Record {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connect over TLS (SNI `server_name`) and return the presented chain.
pub async fn fetch_chain(host: &str, port: u16, server_name: &str) -> Result<Vec<Vec<u8>>, String> {
    let provider = crypto_provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Record(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let connect = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
        let (_, conn) = tls.get_ref();
        Ok(conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.as_ref().to_vec())
            .collect())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| Err(format!("connecting to {host}:{port}: timed out")))
}
