//! Certificates, keys and the TLS configurations of both sides. Both trust only the CA they
//! are given (never the system's roots); the collector requires a client certificate that
//! chains to its client CA, and the host a certificate names is the subject's common name:
//! the host id, 32 hex digits, as the agent's `state_dir/host-id` holds it.

use std::{path::Path, sync::Arc};

use rustls::{crypto::CryptoProvider, server::WebPkiClientVerifier, RootCertStore};
pub use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use sensor_log::record::HostId;

use crate::error::{Error, Result};
use crate::ALPN;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Pem {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file (a chain: the leaf first); at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, e))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| pem_error(path, e))?;
    }
    Ok(Arc::new(roots))
}

/// The collector's side: its certificate and key, and the CA host certificates must chain to.
pub fn server_config(cert: &Path, key: &Path, client_ca: &Path) -> Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider())
        .build()
        .map_err(|e| pem_error(client_ca, e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(cert)?, private_key(key)?)
        .map_err(|e| pem_error(key, e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The agent's side: the host's certificate and key, and the CA collectors' certificates must
/// chain to.
pub fn client_config(cert: &Path, key: &Path, ca: &Path) -> Result<Arc<ClientConfig>> {
    client_config_of(certificates(cert)?, key, ca)
}

/// [`client_config`], and the host its certificate names (read once: the host checked is
/// the host presented).
pub fn host_client_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<(Arc<ClientConfig>, HostId)> {
    let certs = certificates(cert)?;
    let host = host_of(&certs[0])?;
    Ok((client_config_of(certs, key, ca)?, host))
}

fn client_config_of(
    certs: Vec<CertificateDer<'static>>,
    key: &Path,
    ca: &Path,
) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs, private_key(key)?)
        .map_err(|e| pem_error(key, e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The host a certificate names: its subject's common name, 32 hex digits.
pub fn host_of(cert: &CertificateDer<'_>) -> Result<HostId> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| Error::Identity(format!("does not parse: {e}")))?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| Error::Identity("the subject has no common name".into()))?;
    let name = name
        .as_str()
        .map_err(|e| Error::Identity(format!("the common name is not text: {e}")))?;
    sensor_log::hex::decode_array::<16>(name, "host id")
        .map_err(|e| Error::Identity(format!("the common name is not a host id: {e}")))
}
