//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::mode::{DEFAULT_CLUSTER_DOMAIN, GrpcEndpointForm};

#[derive(Parser, Debug)]
#[command(
    name = "openfunction-dapr",
    version,
    about = "Wire OpenFunction functions to Dapr: admission webhook and proxy controller"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the admission webhook (and, against a cluster, the controller).
    Serve(Box<ServeArgs>),
    /// Offline: print workloads as the webhook admits them, then the
    /// objects the controller would create.
    Inject(InjectArgs),
    /// Print the Function CustomResourceDefinition (for clusters without
    /// OpenFunction).
    Crd,
    /// Generate a CA and a serving certificate for the webhook's Service
    /// (ca.crt, tls.crt, tls.key).
    Certs(CertsArgs),
    /// Check an installation against the current kubeconfig's cluster
    /// (reads only). Exit status 0: no failure; 1: failures; 2: the
    /// cluster cannot be reached.
    Check(CheckArgs),
    /// Run the Dapr proxy data plane beside the shared daprd of a
    /// standalone function (the controller's proxy Deployment runs this).
    Proxy(ProxyArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Address of the app channel daprd calls (default
    /// `0.0.0.0:<FUNC_CONTEXT port, else 8080>`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Forward to this address instead of discovering the function
    /// Service's pods (re-resolved like the Service if it is a name);
    /// repeat it for several fixed pods (local runs, benchmarks).
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Vec<String>,
    /// Plain-HTTP address of /healthz, /livez, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9091", env = "ADMIN_ADDR")]
    pub admin_addr: SocketAddr,
    /// Cluster domain of the function Service's DNS name.
    #[arg(long, default_value = DEFAULT_CLUSTER_DOMAIN, env = "CLUSTER_DOMAIN")]
    pub cluster_domain: String,
    /// How long an event waits for a function pod before it fails.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub event_timeout: Duration,
    /// Events in flight towards functions at most; more wait (backpressure
    /// to daprd).
    #[arg(long, default_value_t = crate::proxy::DEFAULT_MAX_IN_FLIGHT, value_parser = parse_max_in_flight)]
    pub max_in_flight: usize,
    /// After SIGTERM, how long in-flight events may take before exit.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// The function's FUNC_CONTEXT (name, port, inputs).
    #[arg(
        long,
        env = "FUNC_CONTEXT",
        hide_env_values = true,
        value_name = "JSON"
    )]
    pub func_context: String,
    /// `grpc` or `http`: what daprd speaks to the proxy and the proxy to
    /// the function.
    #[arg(long, env = "APP_PROTOCOL", default_value = "grpc")]
    pub app_protocol: String,
    /// Namespace of the function Service (from the downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// This pod's name, for logs.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Worker threads: 1 runs everything on one thread (the cheapest per
    /// event); more spread connections over that many threads.
    #[arg(long, env = "PROXY_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

impl Command {
    /// Worker threads of the async runtime; `None` for one per core.
    pub fn worker_threads(&self) -> Option<usize> {
        match self {
            Command::Proxy(args) => Some(usize::from(args.threads)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Limit the Function part to this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// The MutatingWebhookConfiguration to check.
    #[arg(long, default_value = crate::ops::certs::DEFAULT_WEBHOOK_CONFIG_NAME, value_name = "NAME")]
    pub webhook_config: String,
    /// Namespace openfunction-dapr is installed in.
    #[arg(long, default_value = crate::ops::certs::DEFAULT_NAMESPACE, value_name = "NS")]
    pub install_namespace: String,
    /// Secret holding the webhook's serving certificate (read when its pods
    /// cannot be reached from here).
    #[arg(long, default_value = crate::ops::certs::DEFAULT_SECRET_NAME, value_name = "NAME")]
    pub cert_secret: String,
    /// Namespace of the controller's Lease (default: --install-namespace).
    #[arg(long, value_name = "NS")]
    pub lease_namespace: Option<String>,
    /// Name of the controller's Lease.
    #[arg(long, default_value = crate::ops::leader::DEFAULT_LEASE_NAME, value_name = "NAME")]
    pub lease_name: String,
    /// Cluster domain used in DAPR_HOST.
    #[arg(long, default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// The webhook's --dapr-grpc-endpoint-form, to compare workloads with
    /// what it produces.
    #[arg(long, default_value_t = GrpcEndpointForm::Url)]
    pub dapr_grpc_endpoint_form: GrpcEndpointForm,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

impl CheckArgs {
    pub fn options(&self) -> crate::check::CheckOptions {
        crate::check::CheckOptions {
            namespace: self.namespace.clone(),
            webhook_config: self.webhook_config.clone(),
            cert_secret: self.cert_secret.clone(),
            lease_namespace: self
                .lease_namespace
                .clone()
                .unwrap_or_else(|| self.install_namespace.clone()),
            lease_name: self.lease_name.clone(),
            install_namespace: self.install_namespace.clone(),
            cluster_domain: self.cluster_domain.clone(),
            grpc_endpoint_form: self.dapr_grpc_endpoint_form,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Read Functions and Servings from the YAML files of DIR instead of a
    /// cluster (no controller runs).
    #[arg(long, value_name = "DIR")]
    pub local: Option<PathBuf>,
    /// HTTPS address of the webhook.
    #[arg(long, default_value = "0.0.0.0:9443", env = "WEBHOOK_ADDR")]
    pub addr: SocketAddr,
    /// Plain-HTTP address of /livez, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9090", env = "ADMIN_ADDR")]
    pub admin_addr: SocketAddr,
    /// PEM serving certificate (chain); reloaded when it changes.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Where the CA of a self-signed certificate (made when no --tls-cert
    /// is given) is written.
    #[arg(long, value_name = "FILE")]
    pub ca_out: Option<PathBuf>,
    /// Require client certificates signed by this CA (the API server's).
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Cluster domain used in DAPR_HOST.
    #[arg(long, default_value = DEFAULT_CLUSTER_DOMAIN, env = "CLUSTER_DOMAIN")]
    pub cluster_domain: String,
    /// Form of DAPR_GRPC_ENDPOINT in standalone mode: `url`
    /// (http://HOST:50001) or `host-port` (HOST:50001, for Python SDK 1.11);
    /// a Function's openfunction.io/dapr-grpc-endpoint-form annotation wins.
    #[arg(long, default_value_t = GrpcEndpointForm::Url, env = "DAPR_GRPC_ENDPOINT_FORM")]
    pub dapr_grpc_endpoint_form: GrpcEndpointForm,
    /// Only watch Functions in this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Timeout of the live GET made on a cache miss.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub lookup_timeout: Duration,
    /// After SIGTERM, keep answering this long (readiness already false)
    /// so endpoints drop this pod before it stops accepting.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Longest time in-flight requests may take to drain on shutdown.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub controller: crate::controller::ControllerSettings,
    /// Without --tls-cert: keep a generated CA and serving certificate in
    /// this Secret of --cert-namespace, shared by all replicas (default, in
    /// a cluster: openfunction-dapr-tls; empty: a self-signed local pair).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["tls_cert", "local"])]
    pub cert_secret: Option<String>,
    /// Namespace of --cert-secret and of the webhook's Service (default:
    /// the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS")]
    pub cert_namespace: Option<String>,
    /// The webhook's Service: the DNS names of a generated certificate.
    #[arg(long, default_value = crate::ops::certs::DEFAULT_SERVICE_NAME, value_name = "NAME")]
    pub webhook_service: String,
    /// With a generated certificate: the MutatingWebhookConfiguration whose
    /// caBundle is kept set to its CA (empty: leave caBundle alone).
    #[arg(long, default_value = crate::ops::certs::DEFAULT_WEBHOOK_CONFIG_NAME, value_name = "NAME")]
    pub webhook_config_name: String,
}

#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Name of the webhook's Service.
    #[arg(long, default_value = crate::ops::certs::DEFAULT_SERVICE_NAME)]
    pub service: String,
    /// Namespace of the Service.
    #[arg(long, default_value = crate::ops::certs::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Directory for ca.crt, tls.crt and tls.key (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct InjectArgs {
    /// Multi-document YAML with Functions and workloads; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// Cluster domain used in DAPR_HOST.
    #[arg(long, default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Form of DAPR_GRPC_ENDPOINT in standalone mode (`url` or `host-port`).
    #[arg(long, default_value_t = GrpcEndpointForm::Url)]
    pub dapr_grpc_endpoint_form: GrpcEndpointForm,
    /// Image of the Dapr proxy container.
    #[arg(long, default_value = crate::controller::resources::DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,
}

/// A positive count.
fn parse_max_in_flight(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// `500ms`, `2s`, `1m` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("1y").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        assert!(Cli::try_parse_from(["x", "serve", "--tls-cert", "a"]).is_err());
        assert!(Cli::try_parse_from(["x", "serve", "--tls-cert", "a", "--tls-key", "b"]).is_ok());
        assert!(Cli::try_parse_from(["x", "inject"]).is_err());
    }

    #[test]
    fn certificate_flags() {
        let cli = Cli::try_parse_from(["x", "serve", "--cert-secret", "s"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.cert_secret.as_deref(), Some("s"));
        assert_eq!(
            args.webhook_config_name,
            crate::ops::certs::DEFAULT_WEBHOOK_CONFIG_NAME
        );
        assert_eq!(
            args.webhook_service,
            crate::ops::certs::DEFAULT_SERVICE_NAME
        );
        // A Secret makes no sense with mounted files or without a cluster.
        assert!(
            Cli::try_parse_from([
                "x",
                "serve",
                "--cert-secret",
                "s",
                "--tls-cert",
                "a",
                "--tls-key",
                "b"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["x", "serve", "--cert-secret", "s", "--local", "d"]).is_err());
        assert!(Cli::try_parse_from(["x", "crd"]).is_ok());
        assert!(Cli::try_parse_from(["x", "certs"]).is_err());
        assert!(Cli::try_parse_from(["x", "certs", "--out-dir", "d"]).is_ok());
    }
}
