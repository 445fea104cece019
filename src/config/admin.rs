//! The `[admin]` section: where the admin server (HTTP API, metrics,
//! dashboard) listens, the file of its bearer tokens, and its TLS files.
//! Checked here so a server that would listen beyond loopback without a
//! token file never starts.

use super::{invalid, tls_files, ConfigError, TlsFiles};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Vec<String>>,
    pub token_file: Option<PathBuf>,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    pub idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    /// Empty: no admin server.
    pub listen: Vec<SocketAddr>,
    /// Lines of `NAME:TOKEN`; `None`: spate makes one at start
    /// ([`crate::admin::token`]).
    pub token_file: Option<PathBuf>,
    pub tls: Option<TlsFiles>,
    /// A connection (admin or injection) that moves no byte for this long
    /// is closed.
    pub idle_timeout: std::time::Duration,
}

/// `flags`: `--admin` addresses (one empty string turns the server off).
pub(super) fn build(
    mut raw: RawAdmin,
    mut default: RawAdmin,
    flags: Vec<String>,
) -> Result<Admin, ConfigError> {
    let listen = if flags.is_empty() {
        raw.listen.or(default.listen).unwrap_or_default()
    } else {
        flags
    };
    let listen: Vec<SocketAddr> = listen
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .map_err(|_| invalid("admin.listen", format!("{a:?} is not an IP:PORT address")))
        })
        .collect::<Result<_, _>>()?;
    let token_file = raw.token_file.filter(|p| !p.as_os_str().is_empty());
    if let Some(wide) = listen.iter().find(|a| !a.ip().is_loopback()) {
        if token_file.is_none() {
            return Err(invalid(
                "admin.listen",
                format!("{wide} is beyond loopback: set admin.token_file (every request there needs a token)"),
            ));
        }
    }
    let tls = tls_files(
        raw.tls_certificate.unwrap_or_default(),
        raw.tls_private_key.unwrap_or_default(),
    )
    .map_err(|e| match e {
        ConfigError::Invalid { reason, .. } => invalid("admin.tls_certificate", reason),
        other => other,
    })?;
    let idle = pick!(raw.idle_timeout_secs, default.idle_timeout_secs);
    if !(1..=3600).contains(&idle) {
        return Err(invalid(
            "admin.idle_timeout_secs",
            format!("{idle} is outside 1..=3600"),
        ));
    }
    Ok(Admin {
        listen,
        token_file,
        tls,
        idle_timeout: std::time::Duration::from_secs(idle),
    })
}
