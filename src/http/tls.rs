//! HTTPS for `server.tls`: the PEM certificate chain and private key, read at start into a
//! rustls 0.23 server configuration (the ring provider, HTTP/1.1). Each problem names the
//! setting and the file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// The rustls configuration for `tls`.
pub fn server_config(tls: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
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
    let pair = |e: rustls::Error| TlsError::Pair {
        cert: cert_path.clone(),
        key: key_path.clone(),
        message: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(pair)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(pair)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
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
