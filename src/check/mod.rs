//! `openfunction-dapr check`: the operator's view of an installation.
//! Reads (get and list only), never writes. [`gather`] takes a
//! [`Snapshot`](evaluate::Snapshot) of the cluster, [`evaluate`] turns it
//! into findings (pure, reusing the webhook's own look-up and patch code),
//! [`report`] renders them.

pub mod cert;
pub mod evaluate;
pub mod gather;
pub mod report;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;

pub use report::{Finding, Report, Section, Status};

/// The MutatingWebhookConfiguration as `manifests/base` ships it.
pub const SHIPPED_WEBHOOK_YAML: &str = include_str!("../../manifests/base/webhook.yaml");

/// [`SHIPPED_WEBHOOK_YAML`], parsed.
pub fn shipped_config() -> Option<MutatingWebhookConfiguration> {
    serde_saphyr::from_str(SHIPPED_WEBHOOK_YAML).ok()
}

/// What to look at.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Limit the Function part to this namespace.
    pub namespace: Option<String>,
    pub webhook_config: String,
    pub cert_secret: String,
    pub lease_namespace: String,
    pub lease_name: String,
    /// Where openfunction-dapr is installed (named in fixes).
    pub install_namespace: String,
    pub cluster_domain: String,
    /// The webhook's `--dapr-grpc-endpoint-form`, to compute its output.
    pub grpc_endpoint_form: crate::model::mode::GrpcEndpointForm,
}

/// Gather and evaluate. A cluster that cannot be reached gives a report
/// with exit status 2; a read that fails midway, a ✗ finding.
pub async fn run(client: &kube::Client, opts: &CheckOptions) -> Report {
    let version = match gather::server_version(client).await {
        Ok(v) => v,
        Err(e) => return Report::unreachable(e.to_string()),
    };
    match gather::snapshot(client, opts, version).await {
        Ok(snapshot) => Report {
            unreachable: None,
            findings: evaluate::evaluate(&snapshot).await,
        },
        Err(e) => Report {
            unreachable: None,
            findings: vec![Finding::fail(
                Section::Api,
                "api.read",
                e.to_string(),
                "grant the ClusterRole openfunction-dapr-check (docs/check.md) or run as a cluster reader",
            )],
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_configuration_parses() {
        let c = super::shipped_config().expect("manifests/base/webhook.yaml parses");
        assert!(c.webhooks.is_some_and(|w| !w.is_empty()));
    }
}
