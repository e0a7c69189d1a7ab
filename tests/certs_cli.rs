//! `openfunction-dapr certs` and `openfunction-dapr crd`, run as the binary.

use std::process::Command;
use std::sync::Arc;

use openfunction_dapr::ops::tls;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

const BIN: &str = env!("CARGO_BIN_EXE_openfunction-dapr");

#[test]
fn certs_writes_a_ca_and_a_serving_certificate_for_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args(["certs", "--service", "wh", "--namespace", "ns", "--out-dir"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let (ca, cert, key) = (read("ca.crt"), read("tls.crt"), read("tls.key"));

    // The pair matches, and chains to the CA for every name of the Service.
    let provider = tls::crypto_provider();
    tls::certified_key_from_pem(cert.as_bytes(), key.as_bytes(), &provider).expect("pair");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let leaf = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    for name in tls::service_dns_names("wh", "ns") {
        let server_name = ServerName::try_from(name.clone()).unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &server_name, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }

    // No silent overwrite; --force overwrites.
    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(read("tls.crt"), cert);
    let forced = run(&["--force"]);
    assert!(forced.status.success());
    assert_ne!(read("tls.crt"), cert);
}

#[test]
fn crd_prints_the_checked_in_crd() {
    let out = Command::new(BIN).arg("crd").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        openfunction_dapr::model::crd::function_crd_yaml()
    );
}
