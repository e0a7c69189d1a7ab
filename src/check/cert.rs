//! Does a webhook's caBundle verify the certificate its server presents?
//! Pure: the caller brings the bundle, the presented chain and the time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};

use crate::ops::tls::{cert_not_after, crypto_provider};

/// Why a presented certificate does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    #[error("the caBundle is empty")]
    EmptyBundle,
    #[error("the caBundle holds no usable certificate ({0})")]
    BadBundle(String),
    #[error("the server presented no certificate")]
    NoCertificate,
    #[error("the caBundle does not verify the serving certificate (signed by another CA)")]
    UnknownIssuer,
    #[error("the serving certificate has expired")]
    Expired,
    #[error("the serving certificate is not yet valid")]
    NotYetValid,
    #[error("the serving certificate is not valid for {0}")]
    WrongName(String),
    #[error("the serving certificate does not verify: {0}")]
    Other(String),
}

/// Verify `chain` (leaf first, DER) for `server_name` against the PEM
/// `ca_bundle` at `now`; on success, the leaf's notAfter.
pub fn verify(
    ca_bundle: &[u8],
    chain: &[Vec<u8>],
    server_name: &str,
    now: SystemTime,
) -> Result<Option<SystemTime>, CertProblem> {
    if ca_bundle.iter().all(u8::is_ascii_whitespace) {
        return Err(CertProblem::EmptyBundle);
    }
    let mut roots = RootCertStore::empty();
    let mut reader = ca_bundle;
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| CertProblem::BadBundle(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| CertProblem::BadBundle(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(CertProblem::BadBundle("no PEM CERTIFICATE block".into()));
    }
    let (leaf, intermediates) = chain.split_first().ok_or(CertProblem::NoCertificate)?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .map_err(|e| CertProblem::BadBundle(e.to_string()))?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| CertProblem::WrongName(server_name.to_owned()))?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    verifier
        .verify_server_cert(
            &CertificateDer::from(leaf.as_slice()),
            &intermediates,
            &name,
            &[],
            UnixTime::since_unix_epoch(since_epoch),
        )
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            | rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
                CertProblem::UnknownIssuer
            }
            rustls::Error::InvalidCertificate(CertificateError::Expired)
            | rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
                CertProblem::Expired
            }
            rustls::Error::InvalidCertificate(CertificateError::NotValidYet)
            | rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext { .. }) => {
                CertProblem::NotYetValid
            }
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
            | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                ..
            }) => CertProblem::WrongName(server_name.to_owned()),
            other => CertProblem::Other(other.to_string()),
        })?;
    Ok(cert_not_after(leaf))
}

/// The DER certificates of a PEM chain (a Secret's `tls.crt`).
pub fn pem_chain(pem: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = pem;
    rustls_pemfile::certs(&mut reader)
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tls::generate_ca_and_cert;

    const NAME: &str = "openfunction-dapr-webhook.openfunction-dapr.svc";

    #[test]
    fn matching_other_ca_and_wrong_name() {
        let ours = generate_ca_and_cert(&[NAME.to_owned()], false).unwrap();
        let other = generate_ca_and_cert(&[NAME.to_owned()], false).unwrap();
        let chain = pem_chain(ours.cert_pem.as_bytes());
        let now = SystemTime::now();
        let not_after = verify(ours.ca_pem.as_bytes(), &chain, NAME, now).unwrap();
        assert!(not_after.is_some_and(|t| t > now));
        assert_eq!(
            verify(other.ca_pem.as_bytes(), &chain, NAME, now),
            Err(CertProblem::UnknownIssuer)
        );
        assert_eq!(
            verify(ours.ca_pem.as_bytes(), &chain, "elsewhere.example.svc", now),
            Err(CertProblem::WrongName("elsewhere.example.svc".into()))
        );
        let much_later = now + Duration::from_secs(20 * 365 * 24 * 3600);
        assert_eq!(
            verify(ours.ca_pem.as_bytes(), &chain, NAME, much_later),
            Err(CertProblem::Expired)
        );
        assert_eq!(
            verify(b"  \n", &chain, NAME, now),
            Err(CertProblem::EmptyBundle)
        );
        assert_eq!(
            verify(ours.ca_pem.as_bytes(), &[], NAME, now),
            Err(CertProblem::NoCertificate)
        );
    }
}
