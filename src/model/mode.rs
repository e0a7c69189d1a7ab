//! Pure resolution of a Function's Dapr mode and derived settings
//! (SPEC sections 3 and 4).

use std::collections::BTreeMap;
use std::fmt;

use crate::model::function::FunctionSpec;

pub const ENABLE_DAPR: &str = "openfunction.io/enable-dapr";
pub const SERVICE_MODE: &str = "openfunction.io/dapr-service-mode";
pub const APP_ID: &str = "dapr.io/app-id";
pub const APP_PROTOCOL: &str = "dapr.io/app-protocol";
pub const APP_PORT: &str = "dapr.io/app-port";
pub const DAPR_ENABLED: &str = "dapr.io/enabled";
/// Function annotation choosing the form of `DAPR_GRPC_ENDPOINT`
/// (overrides the operator's setting).
pub const GRPC_ENDPOINT_FORM: &str = "openfunction.io/dapr-grpc-endpoint-form";

/// daprd's gRPC API port (the `<app id>-dapr` Service is headless: pod ports).
pub const DAPR_GRPC_PORT: u16 = 50001;
/// daprd's HTTP API port.
pub const DAPR_HTTP_PORT: u16 = 3500;

/// Default cluster domain used to build `DAPR_HOST`.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Default app port when `spec.port` is absent.
pub const DEFAULT_APP_PORT: i32 = 8080;
/// Protocols daprd accepts for `dapr.io/app-protocol`.
pub const DAPR_PROTOCOLS: [&str; 5] = ["grpc", "http", "grpcs", "https", "h2c"];

/// How a function reaches Dapr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Disabled,
    Sidecar,
    Standalone,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Disabled => "disabled",
            Mode::Sidecar => "sidecar",
            Mode::Standalone => "standalone",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How `DAPR_GRPC_ENDPOINT` is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GrpcEndpointForm {
    /// `http://<host>:50001`: what the Go, Java, .NET and JavaScript SDKs
    /// and Python SDK 1.12 and later read.
    #[default]
    Url,
    /// `<host>:50001`: Python SDK 1.11 hands the value to gRPC as a target
    /// name and cannot use the URL form.
    HostPort,
}

impl GrpcEndpointForm {
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcEndpointForm::Url => "url",
            GrpcEndpointForm::HostPort => "host-port",
        }
    }

    /// `url` / `host-port`, trimmed, case ignored.
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("url") {
            Some(GrpcEndpointForm::Url)
        } else if v.eq_ignore_ascii_case("host-port") {
            Some(GrpcEndpointForm::HostPort)
        } else {
            None
        }
    }
}

impl fmt::Display for GrpcEndpointForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for GrpcEndpointForm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        GrpcEndpointForm::parse(s)
            .ok_or_else(|| format!("{s:?} is neither \"url\" nor \"host-port\""))
    }
}

/// Everything the webhook and the controller derive from one Function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub mode: Mode,
    pub app_id: String,
    pub app_protocol: String,
    pub app_port: i32,
    /// `<app id>-dapr.<namespace>.svc.<cluster domain>`
    pub dapr_host: String,
    /// The Function's [`GRPC_ENDPOINT_FORM`] annotation, when valid.
    pub grpc_endpoint_form: Option<GrpcEndpointForm>,
    /// Human-readable problems with the Function's annotations.
    pub warnings: Vec<String>,
}

/// Resolve the mode and settings of Function `name` in `namespace`.
pub fn resolve(name: &str, namespace: &str, spec: &FunctionSpec, cluster_domain: &str) -> Resolved {
    let empty = BTreeMap::new();
    let annotations = spec.serving_annotations().unwrap_or(&empty);
    let mut warnings = Vec::new();

    let has_io = spec.dapr_by_default();
    let enabled = match annotations.get(ENABLE_DAPR).map(|v| v.trim()) {
        None => has_io,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            warnings.push(format!(
                "annotation {ENABLE_DAPR}: {v:?} is neither \"true\" nor \"false\"; \
                 treated as absent (dapr {} because the function {} {})",
                if has_io { "enabled" } else { "disabled" },
                if has_io { "has" } else { "has no" },
                spec.dapr_sources(),
            ));
            has_io
        }
    };

    let mode = if !enabled {
        Mode::Disabled
    } else {
        match annotations.get(SERVICE_MODE).map(|v| v.trim()) {
            None => Mode::Standalone,
            Some(v) if v.eq_ignore_ascii_case("standalone") => Mode::Standalone,
            Some(v) if v.eq_ignore_ascii_case("sidecar") => Mode::Sidecar,
            Some(v) => {
                warnings.push(format!(
                    "annotation {SERVICE_MODE}: {v:?} is neither \"standalone\" nor \"sidecar\"; \
                     treated as \"standalone\""
                ));
                Mode::Standalone
            }
        }
    };

    let app_id = match annotations.get(APP_ID) {
        Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => format!("{name}-{namespace}"),
    };
    let dapr_service = format!("{app_id}-dapr");
    if !is_dns1123_label(&dapr_service) {
        warnings.push(format!(
            "app id {app_id:?}: the Dapr service name {dapr_service:?} is not a valid DNS-1123 label \
             (lowercase alphanumerics and '-', at most 63 characters); set {APP_ID} to a shorter id"
        ));
    }

    let app_protocol = match annotations.get(APP_PROTOCOL) {
        Some(p) if !p.trim().is_empty() => p.trim().to_owned(),
        _ => "grpc".to_owned(),
    };
    if !DAPR_PROTOCOLS.contains(&app_protocol.as_str()) {
        warnings.push(format!(
            "annotation {APP_PROTOCOL}: {app_protocol:?} is not one of {}",
            DAPR_PROTOCOLS.join(", ")
        ));
    }

    let grpc_endpoint_form = match annotations.get(GRPC_ENDPOINT_FORM) {
        None => None,
        Some(v) => {
            let form = GrpcEndpointForm::parse(v);
            if form.is_none() && mode == Mode::Standalone {
                warnings.push(format!(
                    "annotation {GRPC_ENDPOINT_FORM}: {v:?} is neither \"url\" nor \"host-port\"; \
                     the operator's default is used"
                ));
            }
            form
        }
    };

    let app_port = spec.port.unwrap_or(DEFAULT_APP_PORT);
    let dapr_host = dapr_host(&app_id, namespace, cluster_domain);

    Resolved {
        mode,
        app_id,
        app_protocol,
        app_port,
        dapr_host,
        grpc_endpoint_form,
        warnings,
    }
}

impl Resolved {
    /// `DAPR_GRPC_ENDPOINT`: the Function's form, else `default`.
    pub fn grpc_endpoint(&self, default: GrpcEndpointForm) -> String {
        match self.grpc_endpoint_form.unwrap_or(default) {
            GrpcEndpointForm::Url => format!("http://{}:{DAPR_GRPC_PORT}", self.dapr_host),
            GrpcEndpointForm::HostPort => format!("{}:{DAPR_GRPC_PORT}", self.dapr_host),
        }
    }

    /// `DAPR_HTTP_ENDPOINT` (always a URL: every SDK reads it as one).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}:{DAPR_HTTP_PORT}", self.dapr_host)
    }
}

/// The address of the Service Dapr creates for an app id.
pub fn dapr_host(app_id: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("{app_id}-dapr.{namespace}.svc.{cluster_domain}")
}

/// True when `value` looks like a Dapr proxy address in `namespace`
/// (`<anything>-dapr.<namespace>.svc[.<domain>]`, or the short forms).
pub fn is_proxy_address(value: &str, namespace: &str) -> bool {
    let v = value.trim();
    let Some(idx) = v.find("-dapr.") else {
        return false;
    };
    if idx == 0 {
        return false;
    }
    let rest = &v[idx + "-dapr.".len()..];
    let Some(after_ns) = rest.strip_prefix(namespace) else {
        return false;
    };
    after_ns.is_empty() || after_ns == ".svc" || after_ns.starts_with(".svc.")
}

/// True when `value` is an SDK endpoint of a Dapr proxy in `namespace`:
/// an optional scheme (`http`, `https`, `grpc`, `grpcs`, `dns:`), a
/// [proxy address](is_proxy_address), an optional port and trailing `/`.
pub fn is_proxy_endpoint(value: &str, namespace: &str) -> bool {
    let v = value.trim();
    let rest = [
        "http://", "https://", "grpc://", "grpcs://", "dns:///", "dns:",
    ]
    .iter()
    .find_map(|scheme| {
        v.get(..scheme.len())
            .filter(|p| p.eq_ignore_ascii_case(scheme))
            .map(|_| &v[scheme.len()..])
    })
    .unwrap_or(v);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return false,
        None => rest,
    };
    is_proxy_address(host, namespace)
}

/// RFC 1123 label: at most 63 lowercase alphanumerics or '-', starting and
/// ending with an alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::function::{DaprIo, ServingSpec};
    use rstest::rstest;

    fn spec(
        annotations: &[(&str, &str)],
        inputs: Option<usize>,
        outputs: Option<usize>,
    ) -> FunctionSpec {
        let io = |n: usize| {
            (0..n)
                .map(|i| DaprIo {
                    name: format!("io{i}"),
                    component: "c".into(),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        };
        FunctionSpec {
            image: "img".into(),
            serving: Some(ServingSpec {
                runtime: Some("knative".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                inputs: inputs.map(io),
                outputs: outputs.map(io),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    // enable-dapr (None = absent), service mode (None = absent), inputs, outputs,
    // expected mode, expected number of warnings
    #[rstest]
    // absent enable-dapr: enabled iff inputs or outputs non-empty
    #[case(None, None, None, None, Mode::Disabled, 0)]
    #[case(None, None, Some(0), Some(0), Mode::Disabled, 0)]
    #[case(None, None, Some(1), None, Mode::Standalone, 0)]
    #[case(None, None, None, Some(2), Mode::Standalone, 0)]
    #[case(None, None, Some(0), Some(1), Mode::Standalone, 0)]
    #[case(None, Some("sidecar"), Some(1), None, Mode::Sidecar, 0)]
    // explicit true / false, trimmed, case ignored
    #[case(Some("true"), None, None, None, Mode::Standalone, 0)]
    #[case(Some("TRUE"), None, None, None, Mode::Standalone, 0)]
    #[case(Some(" True "), Some("sidecar"), None, None, Mode::Sidecar, 0)]
    #[case(Some("false"), None, Some(1), Some(1), Mode::Disabled, 0)]
    #[case(Some("FALSE"), None, Some(1), None, Mode::Disabled, 0)]
    #[case(Some("\tFalse\n"), Some("sidecar"), Some(1), None, Mode::Disabled, 0)]
    // invalid enable-dapr: warning, treated as absent
    #[case(Some(""), None, None, None, Mode::Disabled, 1)]
    #[case(Some("  "), None, Some(1), None, Mode::Standalone, 1)]
    #[case(Some("yes"), None, None, None, Mode::Disabled, 1)]
    #[case(Some("1"), None, Some(1), None, Mode::Standalone, 1)]
    #[case(Some("enabled"), Some("sidecar"), None, Some(1), Mode::Sidecar, 1)]
    // service mode values
    #[case(Some("true"), Some("standalone"), None, None, Mode::Standalone, 0)]
    #[case(Some("true"), Some("Standalone"), None, None, Mode::Standalone, 0)]
    #[case(Some("true"), Some(" SIDECAR "), None, None, Mode::Sidecar, 0)]
    #[case(Some("true"), Some("sidecar"), None, None, Mode::Sidecar, 0)]
    #[case(Some("true"), Some(""), None, None, Mode::Standalone, 1)]
    #[case(Some("true"), Some("proxy"), None, None, Mode::Standalone, 1)]
    // invalid mode ignored without warning when dapr is disabled
    #[case(Some("false"), Some("proxy"), None, None, Mode::Disabled, 0)]
    #[case(None, Some("proxy"), None, None, Mode::Disabled, 0)]
    // both invalid: two warnings
    #[case(Some("maybe"), Some("proxy"), Some(1), None, Mode::Standalone, 2)]
    fn decision_rules(
        #[case] enable: Option<&str>,
        #[case] service_mode: Option<&str>,
        #[case] inputs: Option<usize>,
        #[case] outputs: Option<usize>,
        #[case] expected: Mode,
        #[case] warnings: usize,
    ) {
        let mut ann = Vec::new();
        if let Some(e) = enable {
            ann.push((ENABLE_DAPR, e));
        }
        if let Some(m) = service_mode {
            ann.push((SERVICE_MODE, m));
        }
        let r = resolve(
            "f",
            "ns",
            &spec(&ann, inputs, outputs),
            DEFAULT_CLUSTER_DOMAIN,
        );
        assert_eq!(r.mode, expected, "{enable:?} {service_mode:?}");
        assert_eq!(r.warnings.len(), warnings, "{:?}", r.warnings);
    }

    #[test]
    fn no_serving_section_is_disabled() {
        let r = resolve("f", "ns", &FunctionSpec::default(), "cluster.local");
        assert_eq!(r.mode, Mode::Disabled);
        assert_eq!(r.app_id, "f-ns");
        assert_eq!(r.app_protocol, "grpc");
        assert_eq!(r.app_port, 8080);
        assert_eq!(r.dapr_host, "f-ns-dapr.ns.svc.cluster.local");
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn derived_settings_defaults() {
        let mut s = spec(&[], Some(1), None);
        s.port = Some(9090);
        let r = resolve("sink", "prod", &s, "example.org");
        assert_eq!(r.app_id, "sink-prod");
        assert_eq!(r.app_port, 9090);
        assert_eq!(r.dapr_host, "sink-prod-dapr.prod.svc.example.org");
    }

    #[test]
    fn overridden_app_id_and_protocol() {
        let s = spec(&[(APP_ID, "my-app"), (APP_PROTOCOL, "http")], Some(1), None);
        let r = resolve("sink", "prod", &s, "cluster.local");
        assert_eq!(r.app_id, "my-app");
        assert_eq!(r.app_protocol, "http");
        // the app id, not <fn>-<ns> (the v0.8.0 bug)
        assert_eq!(r.dapr_host, "my-app-dapr.prod.svc.cluster.local");
        assert!(r.warnings.is_empty());
    }

    #[rstest]
    #[case("grpc", 0)]
    #[case("http", 0)]
    #[case("grpcs", 0)]
    #[case("https", 0)]
    #[case("h2c", 0)]
    #[case("HTTP", 1)]
    #[case("tcp", 1)]
    fn app_protocol_validation(#[case] proto: &str, #[case] warnings: usize) {
        let r = resolve(
            "f",
            "ns",
            &spec(&[(APP_PROTOCOL, proto)], None, None),
            "cluster.local",
        );
        assert_eq!(r.warnings.len(), warnings, "{:?}", r.warnings);
    }

    #[test]
    fn app_id_too_long_warns() {
        // 58 + "-dapr" = 63: fits
        let ok = "a".repeat(58);
        let r = resolve(
            "f",
            "ns",
            &spec(&[(APP_ID, &ok)], None, None),
            "cluster.local",
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let long = "a".repeat(59);
        let r = resolve(
            "f",
            "ns",
            &spec(&[(APP_ID, &long)], None, None),
            "cluster.local",
        );
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("DNS-1123"));
        // derived from a long function name and namespace
        let name = "f".repeat(40);
        let r = resolve(
            &name,
            &"n".repeat(20),
            &spec(&[], None, None),
            "cluster.local",
        );
        assert_eq!(r.warnings.len(), 1);
        // uppercase is not a DNS label either
        let r = resolve(
            "f",
            "ns",
            &spec(&[(APP_ID, "MyApp")], None, None),
            "cluster.local",
        );
        assert_eq!(r.warnings.len(), 1);
    }

    #[test]
    fn empty_app_id_annotation_falls_back() {
        let r = resolve(
            "f",
            "ns",
            &spec(&[(APP_ID, " ")], None, None),
            "cluster.local",
        );
        assert_eq!(r.app_id, "f-ns");
    }

    #[rstest]
    #[case("f-ns-dapr.ns.svc.cluster.local", true)]
    #[case("other-dapr.ns.svc.example.org", true)]
    #[case("f-ns-dapr.ns.svc", true)]
    #[case("f-ns-dapr.ns", true)]
    #[case("f-ns-dapr.other.svc.cluster.local", false)]
    #[case("localhost", false)]
    #[case("-dapr.ns.svc", false)]
    #[case("my-dapr.nsx.svc", false)]
    #[case("10.0.0.1", false)]
    fn proxy_address(#[case] v: &str, #[case] expected: bool) {
        assert_eq!(is_proxy_address(v, "ns"), expected);
    }

    #[rstest]
    #[case("http://f-ns-dapr.ns.svc.cluster.local:50001", true)]
    #[case("f-ns-dapr.ns.svc.cluster.local:50001", true)]
    #[case("https://f-ns-dapr.ns.svc.cluster.local:3500/", true)]
    #[case("HTTP://f-ns-dapr.ns.svc:3500", true)]
    #[case("grpc://f-ns-dapr.ns:50001", true)]
    #[case("dns:f-ns-dapr.ns.svc.cluster.local:50001", true)]
    #[case("f-ns-dapr.ns.svc.cluster.local", true)]
    #[case("http://f-ns-dapr.other.svc.cluster.local:50001", false)]
    #[case("http://localhost:50001", false)]
    #[case("localhost:3500", false)]
    #[case("http://f-ns-dapr.ns.svc.cluster.local:50001/v1.0", false)]
    #[case("http://f-ns-dapr.ns.svc.cluster.local:port", false)]
    #[case("unix:///tmp/dapr.sock", false)]
    fn proxy_endpoint(#[case] v: &str, #[case] expected: bool) {
        assert_eq!(is_proxy_endpoint(v, "ns"), expected, "{v}");
    }

    #[rstest]
    #[case(
        None,
        GrpcEndpointForm::Url,
        "http://f-ns-dapr.ns.svc.cluster.local:50001",
        0
    )]
    #[case(
        None,
        GrpcEndpointForm::HostPort,
        "f-ns-dapr.ns.svc.cluster.local:50001",
        0
    )]
    #[case(
        Some(" Host-Port "),
        GrpcEndpointForm::Url,
        "f-ns-dapr.ns.svc.cluster.local:50001",
        0
    )]
    #[case(
        Some("url"),
        GrpcEndpointForm::HostPort,
        "http://f-ns-dapr.ns.svc.cluster.local:50001",
        0
    )]
    #[case(
        Some("grpc"),
        GrpcEndpointForm::HostPort,
        "f-ns-dapr.ns.svc.cluster.local:50001",
        1
    )]
    fn grpc_endpoint_form(
        #[case] annotation: Option<&str>,
        #[case] default: GrpcEndpointForm,
        #[case] expected: &str,
        #[case] warnings: usize,
    ) {
        let mut ann = vec![];
        if let Some(a) = annotation {
            ann.push((GRPC_ENDPOINT_FORM, a));
        }
        let r = resolve("f", "ns", &spec(&ann, Some(1), None), "cluster.local");
        assert_eq!(r.grpc_endpoint(default), expected);
        assert_eq!(
            r.http_endpoint(),
            "http://f-ns-dapr.ns.svc.cluster.local:3500"
        );
        assert_eq!(r.warnings.len(), warnings, "{:?}", r.warnings);
        // Not a standalone Function: an invalid value is not worth a warning.
        let mut ann = ann.clone();
        ann.push((ENABLE_DAPR, "false"));
        let r = resolve("f", "ns", &spec(&ann, Some(1), None), "cluster.local");
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }
}
