//! The sections that fit spate into a sending platform: `[inject]` (the
//! HTTP injection listener and its limits, one-click unsubscribe links),
//! `[suppression]`, `[feedback]` (the addresses that take complaint
//! reports) and `[bounces]` (the operator's own bounce-class rules).
//! Checked here, files included, so a bad value stops the start, not a
//! request.

use super::{invalid, ConfigError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Smallest and largest request body the injection listener may take.
pub const INJECT_REQUEST_BYTES_RANGE: (u64, u64) = (4096, 1 << 30);
pub const INJECT_RECIPIENTS_MAX: u32 = 100_000;
pub const SUPPRESSION_ENTRIES_MAX: u64 = 100_000_000;
pub const FEEDBACK_ADDRESSES_MAX: usize = 100;
/// Shortest unsubscribe secret, in bytes (an HMAC-SHA256 key).
pub const UNSUBSCRIBE_SECRET_BYTES_MIN: usize = 16;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInject {
    pub listen: Option<Vec<String>>,
    pub max_request_bytes: Option<u64>,
    pub max_recipients: Option<u32>,
    pub unsubscribe_url: Option<String>,
    pub unsubscribe_secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuppression {
    pub entries_max: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeedback {
    pub addresses: Option<Vec<String>>,
    pub accept_from: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBounces {
    pub rules_file: Option<PathBuf>,
}

/// The raw platform sections, as the file and the defaults give them.
#[derive(Debug, Default)]
pub struct RawPlatform {
    pub inject: RawInject,
    pub suppression: RawSuppression,
    pub feedback: RawFeedback,
    pub bounces: RawBounces,
}

#[derive(Debug, Clone)]
pub struct Inject {
    /// Empty: no injection listener.
    pub listen: Vec<SocketAddr>,
    pub max_request_bytes: usize,
    pub max_recipients: usize,
    /// Set: composed messages carry `List-Unsubscribe` (RFC 8058) links.
    pub unsubscribe: Option<Unsubscribe>,
}

#[derive(Clone)]
pub struct Unsubscribe {
    /// What each link starts with; the token follows.
    pub url_prefix: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Unsubscribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsubscribe")
            .field("url_prefix", &self.url_prefix)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Platform {
    pub inject: Inject,
    /// Entries each core's copy of the suppression lists may hold.
    pub suppression_entries_max: usize,
    /// Lowercased addresses whose mail is complaint reports (ARF).
    pub feedback_addresses: Vec<String>,
    /// Clients that may send reports; empty: any client.
    pub feedback_accept_from: Vec<ipnet::IpNet>,
    /// The operator's bounce-class rules, tried before the shipped ones.
    pub bounce_rules_file: Option<PathBuf>,
}

/// `flags`: `--inject` addresses (one empty string turns the listener off).
/// `token_file`: whether `admin.token_file` is set (needed beyond loopback).
pub(super) fn build(
    mut u: RawPlatform,
    mut d: RawPlatform,
    flags: Vec<String>,
    token_file: bool,
) -> Result<Platform, ConfigError> {
    let listen = if flags.is_empty() {
        pick!(u.inject.listen, d.inject.listen)
    } else {
        flags
    };
    let listen = listen
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .map_err(|_| invalid("inject.listen", format!("{a:?} is not an IP:PORT address")))
        })
        .collect::<Result<Vec<SocketAddr>, _>>()?;
    if let Some(wide) = listen.iter().find(|a: &&SocketAddr| !a.ip().is_loopback()) {
        if !token_file {
            return Err(invalid(
                "inject.listen",
                format!(
                    "{wide} is beyond loopback: set admin.token_file (injection needs a token)"
                ),
            ));
        }
    }
    let (lo, hi) = INJECT_REQUEST_BYTES_RANGE;
    let max_request_bytes = pick!(u.inject.max_request_bytes, d.inject.max_request_bytes);
    if !(lo..=hi).contains(&max_request_bytes) {
        return Err(invalid(
            "inject.max_request_bytes",
            format!("{max_request_bytes} is outside {lo}..={hi}"),
        ));
    }
    let max_recipients = pick!(u.inject.max_recipients, d.inject.max_recipients);
    if !(1..=INJECT_RECIPIENTS_MAX).contains(&max_recipients) {
        return Err(invalid(
            "inject.max_recipients",
            format!("{max_recipients} is outside 1..={INJECT_RECIPIENTS_MAX}"),
        ));
    }
    let entries_max = pick!(u.suppression.entries_max, d.suppression.entries_max);
    if !(1..=SUPPRESSION_ENTRIES_MAX).contains(&entries_max) {
        return Err(invalid(
            "suppression.entries_max",
            format!("{entries_max} is outside 1..={SUPPRESSION_ENTRIES_MAX}"),
        ));
    }
    Ok(Platform {
        inject: Inject {
            listen,
            max_request_bytes: max_request_bytes as usize,
            max_recipients: max_recipients as usize,
            unsubscribe: unsubscribe(
                u.inject.unsubscribe_url.take().unwrap_or_default(),
                u.inject.unsubscribe_secret_file.take(),
            )?,
        },
        suppression_entries_max: entries_max as usize,
        feedback_addresses: feedback_addresses(pick!(u.feedback.addresses, d.feedback.addresses))?,
        feedback_accept_from: super::parse_cidrs(
            "feedback.accept_from",
            &pick!(u.feedback.accept_from, d.feedback.accept_from),
        )?,
        bounce_rules_file: u.bounces.rules_file.filter(|p| !p.as_os_str().is_empty()),
    })
}

fn unsubscribe(
    url: String,
    secret_file: Option<PathBuf>,
) -> Result<Option<Unsubscribe>, ConfigError> {
    let secret_file = secret_file.filter(|p| !p.as_os_str().is_empty());
    let key = "inject.unsubscribe_url";
    match (url.is_empty(), secret_file) {
        (true, None) => Ok(None),
        (true, Some(_)) => Err(invalid(
            key,
            "unsubscribe_secret_file is set but the URL is not",
        )),
        (false, None) => Err(invalid(
            key,
            "needs inject.unsubscribe_secret_file (the key that signs each link)",
        )),
        (false, Some(path)) => {
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || url.contains(['<', '>', ' '])
            {
                return Err(invalid(key, format!("{url:?} is not an http(s) URL")));
            }
            Ok(Some(Unsubscribe {
                url_prefix: url,
                secret: read_secret(&path)?,
            }))
        }
    }
}

fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let key = "inject.unsubscribe_secret_file";
    let meta =
        std::fs::metadata(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(invalid(
            key,
            format!("{} is readable by every user: chmod o-r it", path.display()),
        ));
    }
    let text = std::fs::read(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    let secret = text.trim_ascii().to_vec();
    if secret.len() < UNSUBSCRIBE_SECRET_BYTES_MIN {
        return Err(invalid(
            key,
            format!(
                "{} holds {} bytes; use at least {UNSUBSCRIBE_SECRET_BYTES_MIN}",
                path.display(),
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

fn feedback_addresses(list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if list.len() > FEEDBACK_ADDRESSES_MAX {
        return Err(invalid(
            "feedback.addresses",
            format!("at most {FEEDBACK_ADDRESSES_MAX}"),
        ));
    }
    list.into_iter()
        .map(|a| {
            let ok = a
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
                && !a.contains(['<', '>', ' ']);
            if ok {
                Ok(a.to_ascii_lowercase())
            } else {
                Err(invalid(
                    "feedback.addresses",
                    format!("{a:?} is not an address"),
                ))
            }
        })
        .collect()
}
