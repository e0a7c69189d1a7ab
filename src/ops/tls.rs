//! TLS for the webhook: self-signed certificate generation, a certificate
//! resolver that hot-reloads its pair from disk, and the rustls server config.
//!
//! The webhook's serving certificate usually comes from a Kubernetes Secret
//! mounted as a volume. The kubelet updates such a volume atomically: the
//! files (`tls.crt`, `tls.key`) are symlinks into `..data`, itself a symlink
//! to a timestamped directory, and an update renames a new `..data` over the
//! old one. Inotify watches on the files themselves miss that swap (the
//! watched inode never changes), so [`watch`] polls instead: every interval it
//! re-reads both files through their paths and reloads when the bytes
//! change. A new pair is only installed if both parse and the key matches
//! the certificate; otherwise the last good pair keeps serving.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// Validity of a generated CA certificate.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Validity of a generated serving certificate.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How far back generated certificates are valid from, to absorb clock skew.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// ALPN protocols the webhook offers, in order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Errors of the TLS layer.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No DNS name or IP address was given for a certificate.
    #[error("a certificate needs at least one DNS name or IP address")]
    NoNames,
    /// rcgen failed to build or sign a certificate.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate or key file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// PEM data could not be parsed.
    #[error("parsing PEM {what}: {source}")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// PEM data held no certificate.
    #[error("no certificate found in {0}")]
    NoCertificate(&'static str),
    /// The key was rejected, or it does not belong to the certificate.
    #[error("certificate and key: {0}")]
    KeyPair(#[source] rustls::Error),
    /// A client CA certificate was rejected.
    #[error("client CA: {0}")]
    ClientCa(#[source] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The rustls server configuration was rejected.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// Result of the TLS layer.
pub type Result<T, E = TlsError> = std::result::Result<T, E>;

/// A freshly generated CA and a serving certificate signed by it, all PEM.
#[derive(Clone)]
pub struct GeneratedCerts {
    /// The CA certificate: goes into the webhook configuration's `caBundle`.
    pub ca_pem: String,
    /// The serving certificate (leaf only; the CA is the trust anchor).
    pub cert_pem: String,
    /// The serving certificate's private key (PKCS#8).
    pub key_pem: String,
    /// When the serving certificate expires.
    pub not_after: SystemTime,
}

impl fmt::Debug for GeneratedCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedCerts")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The DNS names under which a Service is reached from the API server:
/// `svc`, `svc.ns`, `svc.ns.svc` and `svc.ns.svc.cluster.local`.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Generates a self-signed CA (10 years) and a serving certificate (1 year)
/// signed by it, with ECDSA P-256 keys.
///
/// Each entry of `names` becomes a SAN: an IP address SAN when it parses as
/// one, a DNS SAN otherwise. `include_localhost` adds `localhost` and
/// `127.0.0.1`, for local runs and tests.
pub fn generate_ca_and_cert(names: &[String], include_localhost: bool) -> Result<GeneratedCerts> {
    let mut sans: Vec<SanType> = Vec::new();
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.as_str().try_into()?),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    if include_localhost {
        for san in [
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ] {
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
    }
    if sans.is_empty() {
        return Err(TlsError::NoNames);
    }

    let now = whole_seconds(SystemTime::now());
    let not_before = now - BACKDATE;

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "openfunction-dapr webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // rcgen takes `time::OffsetDateTime`, which converts from `SystemTime`.
    ca_params.not_before = not_before.into();
    ca_params.not_after = (now + CA_VALIDITY).into();
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_not_after = now + LEAF_VALIDITY;
    let common_name = names
        .first()
        .cloned()
        .unwrap_or_else(|| "localhost".to_string());
    let mut leaf_params = CertificateParams::default();
    leaf_params.distinguished_name = rcgen::DistinguishedName::new();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    leaf_params.subject_alt_names = sans;
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.not_before = not_before.into();
    leaf_params.not_after = leaf_not_after.into();
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    Ok(GeneratedCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
        not_after: leaf_not_after,
    })
}

/// Truncates to whole seconds, as X.509 times carry no fractions.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The crypto provider used everywhere in this crate: ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and private key into a [`CertifiedKey`],
/// rejecting a key that does not belong to the first certificate.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "certificate",
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate("certificate PEM"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
        what: "private key",
        source,
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::KeyPair)?;
    let certified = CertifiedKey::new(chain, signing_key);
    // Strict: a key whose public half cannot be compared is refused too.
    certified.keys_match().map_err(TlsError::KeyPair)?;
    Ok(certified)
}

/// Where a [`ReloadingResolver`] reads its pair from.
#[derive(Clone, Debug)]
struct Source {
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// Bytes of the pair last installed, and of the last pair refused.
struct State {
    applied: (Vec<u8>, Vec<u8>),
    rejected: Option<(Vec<u8>, Vec<u8>)>,
    not_after: Option<SystemTime>,
}

/// A [`ResolvesServerCert`] that serves one certificate and can swap it at
/// run time, keeping the last good pair when a new one is broken.
///
/// Handshakes read the current pair through a read lock and an `Arc` clone;
/// connections already established are not affected by a swap.
pub struct ReloadingResolver {
    current: RwLock<Arc<CertifiedKey>>,
    state: Mutex<State>,
    source: Option<Source>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver")
            .field("source", &self.source)
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

impl ReloadingResolver {
    /// Loads the pair from a PEM certificate (chain) file and a PEM key file.
    /// Fails if they cannot be read or parsed, or do not match.
    pub fn from_files(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Result<Self> {
        let source = Source {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
        };
        let (cert, key) = read_pair_sync(&source)?;
        Self::new(cert, key, Some(source))
    }

    /// Serves an in-memory pair (e.g. from [`generate_ca_and_cert`]).
    /// [`reload`](Self::reload) is a no-op for such a resolver; use
    /// [`update_pem`](Self::update_pem) to replace the pair.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        Self::new(
            cert_pem.as_bytes().to_vec(),
            key_pem.as_bytes().to_vec(),
            None,
        )
    }

    fn new(cert: Vec<u8>, key: Vec<u8>, source: Option<Source>) -> Result<Self> {
        let provider = crypto_provider();
        let certified = certified_key_from_pem(&cert, &key, &provider)?;
        let not_after = leaf_not_after(&certified);
        Ok(Self {
            current: RwLock::new(Arc::new(certified)),
            state: Mutex::new(State {
                applied: (cert, key),
                rejected: None,
                not_after,
            }),
            source,
            provider,
        })
    }

    /// The pair currently served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// When the certificate currently served expires, if it could be read.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .not_after
    }

    /// The certificate and key paths, for a file-backed resolver.
    pub fn paths(&self) -> Option<(&Path, &Path)> {
        self.source
            .as_ref()
            .map(|s| (s.cert_path.as_path(), s.key_path.as_path()))
    }

    /// Re-reads both files and installs the pair if it changed, parses and
    /// matches. Returns `Ok(true)` when a new pair was installed, `Ok(false)`
    /// when the files hold the pair already served (or the resolver is not
    /// file-backed). On error the current pair stays in place.
    pub fn reload(&self) -> Result<bool> {
        let Some(source) = &self.source else {
            return Ok(false);
        };
        let (cert, key) = read_pair_sync(source).inspect_err(|e| {
            tracing::warn!(error = %e, "TLS certificate reload failed; keeping the current pair");
        })?;
        self.apply(cert, key, false)
    }

    /// Replaces the pair with in-memory PEM, under the same rules as
    /// [`reload`](Self::reload).
    pub fn update_pem(&self, cert_pem: &str, key_pem: &str) -> Result<bool> {
        self.apply(
            cert_pem.as_bytes().to_vec(),
            key_pem.as_bytes().to_vec(),
            false,
        )
    }

    /// Installs `cert`/`key` unless they are the pair already served. With
    /// `quiet_if_rejected`, bytes identical to the last refused pair are
    /// skipped silently (the watcher already warned about them).
    fn apply(&self, cert: Vec<u8>, key: Vec<u8>, quiet_if_rejected: bool) -> Result<bool> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.applied.0 == cert && state.applied.1 == key {
            return Ok(false);
        }
        if quiet_if_rejected
            && state
                .rejected
                .as_ref()
                .is_some_and(|(c, k)| *c == cert && *k == key)
        {
            return Ok(false);
        }
        match certified_key_from_pem(&cert, &key, &self.provider) {
            Ok(certified) => {
                let not_after = leaf_not_after(&certified);
                if not_after.is_some_and(|t| t <= SystemTime::now()) {
                    tracing::warn!("new TLS certificate is already expired; installing it anyway");
                }
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
                state.applied = (cert, key);
                state.rejected = None;
                state.not_after = not_after;
                tracing::info!(
                    not_after_unix = not_after.map(unix_secs),
                    "installed new TLS certificate"
                );
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "new TLS certificate/key refused; keeping the current pair");
                state.rejected = Some((cert, key));
                Err(e)
            }
        }
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Seconds since the Unix epoch, for logs.
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read_pair_sync(source: &Source) -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    Ok((read(&source.cert_path)?, read(&source.key_path)?))
}

async fn read_pair(source: &Source) -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: PathBuf| async move {
        tokio::fs::read(&path)
            .await
            .map_err(|source| TlsError::Read { path, source })
    };
    Ok((
        read(source.cert_path.clone()).await?,
        read(source.key_path.clone()).await?,
    ))
}

/// Polls the resolver's files every `interval` and reloads the pair when
/// their content changes. Runs until dropped/aborted; returns at once for a
/// resolver that is not file-backed.
///
/// Polling (rather than inotify) is deliberate: Kubernetes updates a mounted
/// Secret by atomically renaming its `..data` symlink, which file watches on
/// `tls.crt`/`tls.key` do not see. Reading two small files every few seconds
/// is cheap and works on every volume type. A read that straddles an update
/// (new certificate, old key) is refused and retried on the next tick.
pub async fn watch(resolver: Arc<ReloadingResolver>, interval: Duration) {
    let Some(source) = resolver.source.clone() else {
        tracing::debug!("TLS certificate is not file-backed; not watching");
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the pair was just loaded
    let mut read_failing = false;
    loop {
        ticker.tick().await;
        match read_pair(&source).await {
            Ok((cert, key)) => {
                read_failing = false;
                // Errors are logged inside `apply`.
                let _ = resolver.apply(cert, key, true);
            }
            Err(e) => {
                // Log once per outage, not on every tick.
                if !read_failing {
                    tracing::warn!(error = %e, "cannot read TLS certificate files; keeping the current pair");
                    read_failing = true;
                }
            }
        }
    }
}

/// Builds the webhook's rustls server configuration: ring, TLS 1.2 and 1.3
/// only, ALPN `h2` then `http/1.1`, certificates from `resolver`.
///
/// With `client_ca_pem`, clients must present a certificate signed by one of
/// those CAs (e.g. the API server's webhook client certificate).
pub fn server_config(
    resolver: Arc<ReloadingResolver>,
    client_ca_pem: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = crypto_provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|source| TlsError::Pem {
                    what: "client CA",
                    source,
                })?;
                roots.add(cert).map_err(TlsError::ClientCa)?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate("client CA PEM"));
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The `notAfter` of the pair's leaf certificate.
fn leaf_not_after(key: &CertifiedKey) -> Option<SystemTime> {
    key.cert.first().and_then(|c| cert_not_after(c.as_ref()))
}

/// Reads `notAfter` out of a DER X.509 certificate (with `x509-parser`).
pub fn cert_not_after(der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    fn names() -> Vec<String> {
        service_dns_names("webhook", "openfunction")
    }

    fn leaf_der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("leaf parses")
    }

    #[test]
    fn service_names_cover_all_forms() {
        assert_eq!(
            service_dns_names("wh", "ns"),
            ["wh", "wh.ns", "wh.ns.svc", "wh.ns.svc.cluster.local"]
        );
    }

    #[test]
    fn generated_certs_parse_and_chain_to_the_ca() {
        let certs = generate_ca_and_cert(&names(), true).expect("generate");
        let provider = crypto_provider();
        let key = certified_key_from_pem(
            certs.cert_pem.as_bytes(),
            certs.key_pem.as_bytes(),
            &provider,
        )
        .expect("pair parses and matches");
        assert_eq!(key.cert.len(), 1);

        let mut roots = RootCertStore::empty();
        roots
            .add(leaf_der(&certs.ca_pem))
            .expect("CA is a valid trust anchor");
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
        let leaf = leaf_der(&certs.cert_pem);
        for name in names()
            .into_iter()
            .chain(["localhost".to_string(), "127.0.0.1".to_string()])
        {
            let server_name = ServerName::try_from(name.clone()).expect("server name");
            verifier
                .verify_server_cert(&leaf, &[], &server_name, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name} should verify: {e}"));
        }
        let other = ServerName::try_from("other.example.com").expect("server name");
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn not_after_is_a_year_out_and_readable_from_der() {
        let certs = generate_ca_and_cert(&names(), false).expect("generate");
        let now = SystemTime::now();
        let ahead = certs.not_after.duration_since(now).expect("in the future");
        assert!(ahead > LEAF_VALIDITY - Duration::from_secs(60) && ahead <= LEAF_VALIDITY);
        assert_eq!(
            cert_not_after(leaf_der(&certs.cert_pem).as_ref()),
            Some(certs.not_after)
        );
        let ca_after = cert_not_after(leaf_der(&certs.ca_pem).as_ref()).expect("CA not_after");
        assert!(ca_after > certs.not_after);
    }

    #[test]
    fn generation_needs_a_name_and_dedups() {
        assert!(matches!(
            generate_ca_and_cert(&[], false),
            Err(TlsError::NoNames)
        ));
        let certs = generate_ca_and_cert(&["localhost".to_string(), "10.0.0.1".to_string()], true)
            .expect("duplicates are fine");
        assert!(!certs.cert_pem.is_empty());
    }

    #[test]
    fn not_after_of_garbage_is_none() {
        assert!(cert_not_after(b"\x30\x03garbage").is_none());
        assert!(cert_not_after(&[]).is_none());
    }

    fn write_pair(dir: &Path, certs: &GeneratedCerts) -> (PathBuf, PathBuf) {
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, &certs.cert_pem).expect("write cert");
        std::fs::write(&key, &certs.key_pem).expect("write key");
        (cert, key)
    }

    fn served_leaf(resolver: &ReloadingResolver) -> CertificateDer<'static> {
        resolver.current().cert[0].clone()
    }

    #[test]
    fn reload_swaps_on_a_valid_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = generate_ca_and_cert(&names(), false).expect("generate");
        let (cert, key) = write_pair(dir.path(), &first);
        let resolver = ReloadingResolver::from_files(&cert, &key).expect("load");
        assert_eq!(served_leaf(&resolver), leaf_der(&first.cert_pem));
        assert!(!resolver.reload().expect("unchanged reload"));

        let second = generate_ca_and_cert(&names(), false).expect("generate");
        write_pair(dir.path(), &second);
        assert!(resolver.reload().expect("reload"));
        assert_eq!(served_leaf(&resolver), leaf_der(&second.cert_pem));
        assert_eq!(resolver.not_after(), Some(second.not_after));
    }

    #[test]
    fn broken_pairs_keep_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = generate_ca_and_cert(&names(), false).expect("generate");
        let (cert, key) = write_pair(dir.path(), &good);
        let resolver = ReloadingResolver::from_files(&cert, &key).expect("load");

        // Key of another pair.
        let other = generate_ca_and_cert(&names(), false).expect("generate");
        std::fs::write(&cert, &other.cert_pem).expect("write");
        let err = resolver.reload().expect_err("mismatched key is refused");
        assert!(matches!(err, TlsError::KeyPair(_)), "{err}");
        assert_eq!(served_leaf(&resolver), leaf_der(&good.cert_pem));

        // Garbage certificate.
        std::fs::write(&cert, "not a certificate").expect("write");
        std::fs::write(&key, &good.key_pem).expect("write");
        assert!(matches!(resolver.reload(), Err(TlsError::NoCertificate(_))));
        assert_eq!(served_leaf(&resolver), leaf_der(&good.cert_pem));

        // Garbage key.
        std::fs::write(&cert, &good.cert_pem).expect("write");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        assert!(resolver.reload().is_err());
        assert_eq!(served_leaf(&resolver), leaf_der(&good.cert_pem));

        // Missing file.
        std::fs::remove_file(&key).expect("remove");
        assert!(matches!(resolver.reload(), Err(TlsError::Read { .. })));
        assert_eq!(served_leaf(&resolver), leaf_der(&good.cert_pem));

        // Fixing it recovers.
        write_pair(dir.path(), &other);
        assert!(resolver.reload().expect("reload"));
        assert_eq!(served_leaf(&resolver), leaf_der(&other.cert_pem));
    }

    #[test]
    fn from_files_refuses_a_broken_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = generate_ca_and_cert(&names(), false).expect("generate");
        let b = generate_ca_and_cert(&names(), false).expect("generate");
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, &a.cert_pem).expect("write");
        std::fs::write(&key, &b.key_pem).expect("write");
        assert!(ReloadingResolver::from_files(&cert, &key).is_err());
        assert!(ReloadingResolver::from_files(dir.path().join("nope"), &key).is_err());
    }

    #[test]
    fn in_memory_resolver_updates_through_update_pem() {
        let a = generate_ca_and_cert(&names(), false).expect("generate");
        let b = generate_ca_and_cert(&names(), false).expect("generate");
        let resolver = ReloadingResolver::from_pem(&a.cert_pem, &a.key_pem).expect("load");
        assert!(resolver.paths().is_none());
        assert!(!resolver.reload().expect("no-op"));
        assert!(resolver.update_pem(&a.cert_pem, &b.key_pem).is_err());
        assert_eq!(served_leaf(&resolver), leaf_der(&a.cert_pem));
        assert!(
            resolver
                .update_pem(&b.cert_pem, &b.key_pem)
                .expect("update")
        );
        assert_eq!(served_leaf(&resolver), leaf_der(&b.cert_pem));
    }

    #[tokio::test]
    async fn watch_picks_up_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = generate_ca_and_cert(&names(), false).expect("generate");
        let (cert, key) = write_pair(dir.path(), &first);
        let resolver = Arc::new(ReloadingResolver::from_files(&cert, &key).expect("load"));
        let task = tokio::spawn(watch(resolver.clone(), Duration::from_millis(20)));

        let second = generate_ca_and_cert(&names(), false).expect("generate");
        write_pair(dir.path(), &second);
        let want = leaf_der(&second.cert_pem);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while served_leaf(&resolver) != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "watch did not reload"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
    }

    #[test]
    fn server_config_offers_h2_and_http11() {
        let certs = generate_ca_and_cert(&names(), false).expect("generate");
        let resolver =
            Arc::new(ReloadingResolver::from_pem(&certs.cert_pem, &certs.key_pem).expect("load"));
        let config = server_config(resolver.clone(), None).expect("config");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(server_config(resolver.clone(), Some(&certs.ca_pem)).is_ok());
        assert!(server_config(resolver.clone(), Some("garbage")).is_err());
    }
}
