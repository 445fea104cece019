//! TLS material: loads the PEM certificate chain and key named in the config
//! into a rustls server configuration, shared read-only by every core.

use crate::config::TlsFiles;
use rustls::ServerConfig;
use std::io::BufReader;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let open = |p: &std::path::Path| {
        std::fs::File::open(p)
            .map(BufReader::new)
            .map_err(|e| TlsError::File {
                path: p.display().to_string(),
                reason: e.to_string(),
            })
    };
    let cert_path = files.certificate.display().to_string();
    let key_path = files.private_key.display().to_string();
    let certs = rustls_pemfile::certs(&mut open(&files.certificate)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: cert_path,
            reason: "no certificate in PEM file".into(),
        });
    }
    let key = rustls_pemfile::private_key(&mut open(&files.private_key)?)
        .map_err(|e| TlsError::File {
            path: key_path.clone(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| TlsError::File {
            path: key_path,
            reason: "no private key in PEM file".into(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}
