use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use clap::Parser;
use openfunction_dapr::cli::{
    CertsArgs, CheckArgs, Cli, Command, InjectArgs, LogFormat, OutputFormat, ProxyArgs,
};
use openfunction_dapr::controller::resources::ProxySettings;
use openfunction_dapr::inject::{self, Input};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let mut builder = match cli.command.worker_threads() {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => openfunction_dapr::serve::run(*args).await,
            Command::Inject(args) => run_inject(args).await,
            Command::Crd => {
                print!("{}", openfunction_dapr::model::crd::function_crd_yaml());
                Ok(())
            }
            Command::Certs(args) => run_certs(&args),
            Command::Check(args) => return Ok(run_check(&args).await),
            Command::Proxy(args) => run_proxy(args).await,
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inject(args: InjectArgs) -> anyhow::Result<()> {
    let mut inputs = Vec::new();
    for name in &args.files {
        let text = if name == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(name).map_err(|e| anyhow::anyhow!("reading {name}: {e}"))?
        };
        let name = if name == "-" {
            "<stdin>".to_owned()
        } else {
            name.clone()
        };
        inputs.push(Input { name, text });
    }
    let proxy = ProxySettings {
        image: args.proxy_image.clone(),
        cluster_domain: args.cluster_domain.clone(),
        ..ProxySettings::default()
    };
    let out = inject::inject(
        &inputs,
        &args.cluster_domain,
        args.dapr_grpc_endpoint_form,
        &proxy,
    )
    .await?;
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    print!("{}", out.to_yaml()?);
    Ok(())
}

/// `check`: the report on stdout, its verdict as the exit status.
async fn run_check(args: &CheckArgs) -> ExitCode {
    use openfunction_dapr::check::{self, Report};
    let report = match kube::Client::try_default().await {
        Ok(client) => check::run(&client, &args.options()).await,
        Err(e) => Report::unreachable(format!("no usable kubeconfig or in-cluster config: {e}")),
    };
    match args.output {
        OutputFormat::Text => print!("{}", report.to_text()),
        OutputFormat::Json => println!("{}", report.to_json()),
    }
    ExitCode::from(report.exit_code())
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    use openfunction_dapr::proxy::{self, Protocol, ProxyConfig, context, discovery};
    use std::sync::Arc;
    let inputs = context::parse(&args.func_context)?;
    let protocol = Protocol::parse(&args.app_protocol).map_err(anyhow::Error::msg)?;
    let port = inputs.port.unwrap_or(context::DEFAULT_PORT);
    let resolver: Arc<dyn discovery::Resolve> = match (&args.target[..], &args.namespace) {
        ([_, ..], _) => Arc::new(discovery::Many(
            args.target
                .iter()
                .map(|t| discovery::Dns::parse(t))
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?,
        )),
        ([], Some(ns)) => Arc::new(discovery::Dns::function_service(
            &inputs.name,
            ns,
            &args.cluster_domain,
            port,
        )),
        ([], None) => anyhow::bail!("POD_NAMESPACE (or --namespace) or --target is required"),
    };
    let listen = args
        .listen
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], port)));
    // Listen at once: daprd waits for the app port before it starts.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {listen}: {e}"))?;
    let admin = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", args.admin_addr))?;
    tracing::info!(%listen, admin = %args.admin_addr, pod = args.pod_name.as_deref().unwrap_or(""), "proxy listening");
    let config = ProxyConfig {
        inputs,
        protocol,
        resolver,
        event_timeout: args.event_timeout,
        max_in_flight: args.max_in_flight,
        drain_timeout: args.drain_timeout,
    };
    proxy::serve(
        config,
        listener,
        Some(admin),
        openfunction_dapr::ops::server::shutdown_signal(),
    )
    .await
}

fn run_certs(args: &CertsArgs) -> anyhow::Result<()> {
    use openfunction_dapr::ops::certs;
    let generated = certs::write_files(&args.service, &args.namespace, &args.out_dir, args.force)?;
    let dir = args.out_dir.display();
    let not_after = generated
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!(
        "wrote {dir}/{ca}, {dir}/{crt} and {dir}/{key} for {svc}.{ns}.svc (expires at unix {not_after})\n\
         serve them with --tls-cert {dir}/{crt} --tls-key {dir}/{key} (e.g. from a Secret:\n  \
         kubectl -n {ns} create secret tls openfunction-dapr-webhook-cert --cert={dir}/{crt} --key={dir}/{key})\n\
         and put {dir}/{ca}, base64-encoded, in the caBundle of every webhook of the MutatingWebhookConfiguration",
        ca = certs::CA_CERT_KEY,
        crt = certs::TLS_CERT_KEY,
        key = certs::TLS_KEY_KEY,
        svc = args.service,
        ns = args.namespace,
    );
    Ok(())
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}
