//! HTTPS for `server.tls`: the PEM certificate chain and private key, read at start into a
//! rustls 0.23 server configuration (the ring provider, HTTP/1.1) and again on every reload,
//! which replaces the pair for the connections that follow. Each problem names the setting and
//! the file.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// Why the certificate or key cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.{field}: cannot read {path}: {source}")]
    Read {
        field: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("server.tls.cert: {path} holds no PEM certificate ('-----BEGIN CERTIFICATE-----'): {message}")]
    Cert { path: String, message: String },
    #[error("server.tls.key: {path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {message}")]
    Key { path: String, message: String },
    #[error("server.tls: the key {key} does not serve the certificate {cert}: {message}")]
    Pair {
        cert: String,
        key: String,
        message: String,
    },
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.display().to_string(),
        source,
    })
}

/// The certificate a running server presents, replaced by `CertSlot::store`.
pub struct CertSlot(ArcSwap<CertifiedKey>);

impl CertSlot {
    pub fn store(&self, key: CertifiedKey) {
        self.0.store(Arc::new(key));
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl fmt::Debug for CertSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertSlot")
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificate chain and key of `tls` and checks that they belong together.
pub fn certified_key(tls: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    let (cert_path, key_path) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let cert_pem = read("cert", &tls.cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert_path.clone(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert_path,
            message: "none found".into(),
        });
    }
    let key_pem = read("key", &tls.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: key_path.clone(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Pair {
        cert: cert_path,
        key: key_path,
        message: e.to_string(),
    })
}

/// The rustls configuration for `tls`, and the slot through which a reload replaces its pair.
pub fn server_config(tls: &TlsConfig) -> Result<(rustls::ServerConfig, Arc<CertSlot>), TlsError> {
    let slot = Arc::new(CertSlot(ArcSwap::from_pointee(certified_key(tls)?)));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair {
            cert: tls.cert.display().to_string(),
            key: tls.key.display().to_string(),
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(slot.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn missing_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = write(dir.path(), "cert.pem", &pair.cert.pem());
        let key = write(dir.path(), "key.pem", &pair.signing_key.serialize_pem());
        let garbage = write(dir.path(), "garbage.pem", "not PEM at all\n");
        let config = |cert: &Path, key: &Path| {
            server_config(&TlsConfig {
                cert: cert.into(),
                key: key.into(),
            })
        };
        assert!(config(&cert, &key).is_ok());
        let err = config(&dir.path().join("none.pem"), &key)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("server.tls.cert: cannot read") && err.contains("none.pem"),
            "{err}"
        );
        let err = config(&garbage, &key).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = config(&cert, &garbage).unwrap_err().to_string();
        assert!(
            err.contains("server.tls.key") && err.contains("garbage.pem"),
            "{err}"
        );
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other_key = write(dir.path(), "other.pem", &other.signing_key.serialize_pem());
        let err = config(&cert, &other_key).unwrap_err().to_string();
        assert!(err.contains("does not serve the certificate"), "{err}");
    }
}
