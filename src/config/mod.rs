//! Configuration in two steps: [`RawConfig`] is the TOML file as written
//! (every key optional, unknown keys refused), [`Config`] is what the engine
//! runs with, validated and with derived values filled in.
//!
//! The defaults live in one place, `default.toml`, which is both what
//! `spate config default` prints and what an absent key falls back to.

/// The user's value if set, else the built-in default (which sets every key).
macro_rules! pick {
    ($user:expr, $default:expr) => {
        $user
            .take()
            .or($default.take())
            .expect("default.toml sets every key")
    };
}

mod admin;
mod cores;
mod delivery;
mod dkim;
mod platform;
mod webhook;

pub use admin::Admin;
pub use cores::CoreSpec;
pub use delivery::{parse_hop, Delivery, Dns, NextHop, RawDelivery, RawDns, Route, TlsPolicy};
pub use dkim::{DkimDomain, RawDkim, DEFAULT_SIGNED_HEADERS};
pub use platform::{Inject, Platform, Unsubscribe};
pub use webhook::{RawWebhook, Webhook};

use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commented default configuration file.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Smallest message size limit that can be configured.
pub const MAX_MESSAGE_BYTES_MIN: u64 = 1024;
/// Room a segment needs beyond the largest body and its envelope: header
/// block, record header and fields, spate's Received header field, and
/// its DKIM-Signature fields.
pub const SEGMENT_OVERHEAD_BYTES: u64 = 4096 + 4096 + crate::dkim::SIGNATURE_FIELDS_MAX as u64;
/// Room one recipient takes in a record at most: a 256-octet path and its length.
pub const RECIPIENT_RECORD_BYTES_MAX: u64 = 258;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub cores: RawCores,
    #[serde(default)]
    pub spool: RawSpool,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub dkim: Vec<RawDkim>,
    #[serde(default)]
    pub admin: admin::RawAdmin,
    #[serde(default)]
    pub inject: platform::RawInject,
    #[serde(default)]
    pub suppression: platform::RawSuppression,
    #[serde(default)]
    pub feedback: platform::RawFeedback,
    #[serde(default)]
    pub bounces: platform::RawBounces,
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Vec<String>>,
    pub hostname: Option<String>,
    pub relay_from: Option<Vec<String>>,
    pub max_message_bytes: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub max_recipients: Option<u32>,
    pub max_recipient_overshoot: Option<u32>,
    pub max_received_headers: Option<u32>,
    pub postmaster: Option<String>,
    pub max_data_bytes_in_flight_per_core: Option<u64>,
    pub max_connections_per_core: Option<u32>,
    pub max_errors: Option<u32>,
    pub command_timeout_secs: Option<u64>,
    pub data_timeout_secs: Option<u64>,
    pub data_total_timeout_secs: Option<u64>,
    pub max_connections_per_ip: Option<u32>,
    pub shutdown_grace_secs: Option<u64>,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCores {
    pub cpus: Option<String>,
    pub spin_before_park_us: Option<u64>,
    pub inbound_latency_us: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    pub dir: Option<PathBuf>,
    pub segment_bytes: Option<u64>,
    pub reclaim_interval_ms: Option<u64>,
    pub compact_below_percent: Option<u8>,
    pub ack_deadline_ms: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub dir: Option<PathBuf>,
}

/// What the command line can override. `None` / empty leaves the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub cores: Option<String>,
    pub spool_dir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub dns: Vec<String>,
    pub smarthost: Option<String>,
    pub routes: Vec<String>,
    pub shaping_file: Option<PathBuf>,
    pub relay_from: Vec<String>,
    pub max_message_bytes: Option<u64>,
    pub hostname: Option<String>,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    /// `--admin` addresses; one empty string: no admin server.
    pub admin: Vec<String>,
    /// `--inject` addresses; one empty string: no injection listener.
    pub inject: Vec<String>,
}

/// The validated configuration the engine runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub hostname: String,
    pub relay_from: Vec<IpNet>,
    pub max_message_bytes: u64,
    /// Largest header section (up to the first empty line) of a message.
    pub max_header_bytes: u64,
    pub max_recipients: u32,
    /// RCPTs past `max_recipients` in one transaction that get 452 without
    /// counting as errors (RFC 5321 4.5.3.1.10: the client sends them in
    /// another transaction); past these, each counts toward `max_errors`.
    pub max_recipient_overshoot: u32,
    /// Received header fields at which a message is refused as a loop.
    pub max_received_headers: u32,
    /// Where mail to `<Postmaster>` (without a domain) goes.
    pub postmaster: String,
    /// Bytes of DATA held in memory by one core's sessions together, past
    /// the first [`crate::listener::DATA_FREE_BYTES`] of each.
    pub max_data_bytes_in_flight_per_core: u64,
    pub max_connections_per_core: u32,
    pub max_errors: u32,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub data_total_timeout: Duration,
    pub max_connections_per_ip: u32,
    pub shutdown_grace: Duration,
    pub tls: Option<TlsFiles>,
    pub cores: CoreSpec,
    pub spin_before_park: Duration,
    /// Sessions and the spool committer run in a latency-sensitive task
    /// queue with this bound, delivery in another; `None`: one queue.
    pub inbound_latency: Option<Duration>,
    pub spool_dir: PathBuf,
    pub segment_bytes: u64,
    /// How often each core reclaims segments; `None`: never.
    pub reclaim_interval: Option<Duration>,
    pub compact_below_percent: u8,
    /// How long a session waits for its message to be durable before it
    /// answers 451 instead of 250.
    pub ack_deadline: Duration,
    pub dns: Dns,
    pub delivery: Delivery,
    pub log_dir: PathBuf,
    /// Domains to DKIM-sign for; empty: nothing is signed.
    pub dkim: Vec<DkimDomain>,
    pub admin: Admin,
    /// HTTP injection, suppression, feedback loops, bounce classes.
    pub platform: Platform,
    /// Where delivery-log events are POSTed ([`crate::webhook`]).
    pub webhooks: Vec<Webhook>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

impl RawConfig {
    pub fn parse(text: &str, path: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RawConfig::parse(&text, &path.display().to_string())
    }

    fn defaults() -> RawConfig {
        RawConfig::parse(DEFAULT_TOML, "built-in default").expect("the built-in default parses")
    }
}

impl Config {
    /// Builds the configuration from an optional file plus command-line
    /// overrides, checking every value.
    pub fn build(file: Option<RawConfig>, o: Overrides) -> Result<Config, ConfigError> {
        let mut u = file.unwrap_or_default();
        let mut d = RawConfig::defaults();
        let mut s = (&mut u.server, &mut d.server);
        let listen = non_empty_or(o.listen, pick!(s.0.listen, s.1.listen));
        let relay_from = non_empty_or(o.relay_from, pick!(s.0.relay_from, s.1.relay_from));
        let hostname = o.hostname.unwrap_or(pick!(s.0.hostname, s.1.hostname));
        let max_message_bytes = o
            .max_message_bytes
            .unwrap_or(pick!(s.0.max_message_bytes, s.1.max_message_bytes));
        let tls_certificate = o
            .tls_certificate
            .unwrap_or(pick!(s.0.tls_certificate, s.1.tls_certificate));
        let tls_private_key = o
            .tls_private_key
            .unwrap_or(pick!(s.0.tls_private_key, s.1.tls_private_key));
        let cpus = o.cores.unwrap_or(pick!(u.cores.cpus, d.cores.cpus));
        let spool_dir = o.spool_dir.unwrap_or(pick!(u.spool.dir, d.spool.dir));
        let log_dir = o.log_dir.unwrap_or(pick!(u.log.dir, d.log.dir));
        let dns = delivery::build_dns(
            std::mem::take(&mut u.dns),
            std::mem::take(&mut d.dns),
            o.dns,
        )?;
        let hostname = resolve_hostname(hostname)?;
        let flags = delivery::DeliveryFlags {
            smarthost: o.smarthost,
            routes: o.routes,
            shaping_file: o.shaping_file,
        };
        let delivery = delivery::build_delivery(
            std::mem::take(&mut u.delivery),
            std::mem::take(&mut d.delivery),
            flags,
            &hostname,
        )?;
        s = (&mut u.server, &mut d.server);
        let postmaster = postmaster_address(pick!(s.0.postmaster, s.1.postmaster), &hostname)?;
        let token_file = u
            .admin
            .token_file
            .as_ref()
            .is_some_and(|p| !p.as_os_str().is_empty());
        let cfg = Config {
            postmaster,
            listen: parse_listen(&listen)?,
            hostname,
            relay_from: parse_cidrs("server.relay_from", &relay_from)?,
            max_message_bytes: check_min(
                "server.max_message_bytes",
                max_message_bytes,
                MAX_MESSAGE_BYTES_MIN,
            )?,
            max_header_bytes: check_min(
                "server.max_header_bytes",
                pick!(s.0.max_header_bytes, s.1.max_header_bytes),
                1024,
            )?,
            max_recipients: check_range(
                "server.max_recipients",
                pick!(s.0.max_recipients, s.1.max_recipients),
                1,
                100_000,
            )?,
            max_recipient_overshoot: check_range(
                "server.max_recipient_overshoot",
                pick!(s.0.max_recipient_overshoot, s.1.max_recipient_overshoot),
                0,
                1_000_000,
            )?,
            max_received_headers: check_range(
                "server.max_received_headers",
                pick!(s.0.max_received_headers, s.1.max_received_headers),
                1,
                10_000,
            )?,
            max_data_bytes_in_flight_per_core: data_budget(
                s.0.max_data_bytes_in_flight_per_core.take(),
                pick!(
                    s.0.max_data_bytes_in_flight_per_core,
                    s.1.max_data_bytes_in_flight_per_core
                ),
                max_message_bytes,
            )?,
            max_connections_per_core: check_range(
                "server.max_connections_per_core",
                pick!(s.0.max_connections_per_core, s.1.max_connections_per_core),
                1,
                1_000_000,
            )?,
            max_connections_per_ip: check_range(
                "server.max_connections_per_ip",
                pick!(s.0.max_connections_per_ip, s.1.max_connections_per_ip),
                1,
                1_000_000,
            )?,
            max_errors: check_range(
                "server.max_errors",
                pick!(s.0.max_errors, s.1.max_errors),
                1,
                10_000,
            )?,
            command_timeout: secs(
                "server.command_timeout_secs",
                pick!(s.0.command_timeout_secs, s.1.command_timeout_secs),
            )?,
            data_timeout: secs(
                "server.data_timeout_secs",
                pick!(s.0.data_timeout_secs, s.1.data_timeout_secs),
            )?,
            data_total_timeout: secs(
                "server.data_total_timeout_secs",
                pick!(s.0.data_total_timeout_secs, s.1.data_total_timeout_secs),
            )?,
            shutdown_grace: secs(
                "server.shutdown_grace_secs",
                pick!(s.0.shutdown_grace_secs, s.1.shutdown_grace_secs),
            )?,
            tls: tls_files(tls_certificate, tls_private_key)?,
            cores: CoreSpec::parse(&cpus).map_err(|reason| invalid("cores.cpus", reason))?,
            spin_before_park: match pick!(u.cores.spin_before_park_us, d.cores.spin_before_park_us)
            {
                us @ 0..=10_000 => Duration::from_micros(us),
                us => {
                    return Err(invalid(
                        "cores.spin_before_park_us",
                        format!("{us} is over 10000"),
                    ))
                }
            },
            inbound_latency: match pick!(u.cores.inbound_latency_us, d.cores.inbound_latency_us) {
                0 => None,
                us @ 50..=100_000 => Some(Duration::from_micros(us)),
                us => {
                    return Err(invalid(
                        "cores.inbound_latency_us",
                        format!("{us} is outside 50..=100000 (or 0 for off)"),
                    ))
                }
            },
            spool_dir,
            segment_bytes: pick!(u.spool.segment_bytes, d.spool.segment_bytes),
            reclaim_interval: match pick!(u.spool.reclaim_interval_ms, d.spool.reclaim_interval_ms)
            {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
            compact_below_percent: match pick!(
                u.spool.compact_below_percent,
                d.spool.compact_below_percent
            ) {
                p @ 0..=100 => p,
                p => {
                    return Err(invalid(
                        "spool.compact_below_percent",
                        format!("{p} is over 100"),
                    ))
                }
            },
            ack_deadline: Duration::from_millis(u64::from(check_range(
                "spool.ack_deadline_ms",
                pick!(u.spool.ack_deadline_ms, d.spool.ack_deadline_ms),
                10,
                600_000,
            )?)),
            dns,
            delivery,
            log_dir,
            dkim: dkim::build_dkim(std::mem::take(&mut u.dkim))?,
            admin: admin::build(
                std::mem::take(&mut u.admin),
                std::mem::take(&mut d.admin),
                o.admin,
            )?,
            platform: platform::build(
                take_platform(&mut u),
                take_platform(&mut d),
                o.inject,
                token_file,
            )?,
            webhooks: webhook::build(std::mem::take(&mut u.webhook))?,
        };
        cfg.check_segment_size()?;
        Ok(cfg)
    }

    fn check_segment_size(&self) -> Result<(), ConfigError> {
        let need = self.max_message_bytes
            + SEGMENT_OVERHEAD_BYTES
            + self.max_recipients as u64 * RECIPIENT_RECORD_BYTES_MAX;
        if !self.segment_bytes.is_multiple_of(4096) {
            return Err(invalid("spool.segment_bytes", "must be a multiple of 4096"));
        }
        if self.segment_bytes < need {
            return Err(invalid(
                "spool.segment_bytes",
                format!(
                    "{} cannot hold a message of server.max_message_bytes ({}); use at least {}",
                    self.segment_bytes,
                    self.max_message_bytes,
                    need.div_ceil(4096) * 4096
                ),
            ));
        }
        if self.segment_bytes > 1 << 32 {
            return Err(invalid("spool.segment_bytes", "must be at most 4 GiB"));
        }
        Ok(())
    }
}

fn take_platform(raw: &mut RawConfig) -> platform::RawPlatform {
    platform::RawPlatform {
        inject: std::mem::take(&mut raw.inject),
        suppression: std::mem::take(&mut raw.suppression),
        feedback: std::mem::take(&mut raw.feedback),
        bounces: std::mem::take(&mut raw.bounces),
    }
}

fn non_empty_or(flags: Vec<String>, file: Vec<String>) -> Vec<String> {
    if flags.is_empty() {
        file
    } else {
        flags
    }
}

fn parse_listen(list: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    if list.is_empty() {
        return Err(invalid("server.listen", "needs at least one address"));
    }
    list.iter()
        .map(|a| {
            a.parse()
                .map_err(|_| invalid("server.listen", format!("{a:?} is not an IP:PORT address")))
        })
        .collect()
}

pub(crate) fn parse_cidrs(key: &'static str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .map(|c| {
            c.parse::<IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| invalid(key, format!("{c:?} is not a CIDR block")))
        })
        .collect()
}

pub(crate) fn tls_files(
    certificate: PathBuf,
    private_key: PathBuf,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (
        certificate.as_os_str().is_empty(),
        private_key.as_os_str().is_empty(),
    ) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(TlsFiles {
            certificate,
            private_key,
        })),
        (true, false) => Err(invalid(
            "server.tls_certificate",
            "tls_private_key is set but the certificate is not",
        )),
        (false, true) => Err(invalid(
            "server.tls_private_key",
            "tls_certificate is set but the key is not",
        )),
    }
}

fn resolve_hostname(name: String) -> Result<String, ConfigError> {
    let name = if name.is_empty() {
        system_hostname()
    } else {
        name
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(name)
    } else {
        Err(invalid(
            "server.hostname",
            format!("{name:?} is not a host name"),
        ))
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// `server.postmaster`: an address with a domain; empty: postmaster at
/// the host name.
fn postmaster_address(set: String, hostname: &str) -> Result<String, ConfigError> {
    if set.is_empty() {
        return Ok(format!("postmaster@{hostname}"));
    }
    let ok = set.is_ascii()
        && set.len() <= 254
        && set
            .rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !set.contains(|c: char| c.is_ascii_whitespace() || c == '<' || c == '>');
    if !ok {
        return Err(invalid(
            "server.postmaster",
            format!("{set:?} is not an address like postmaster@example.com"),
        ));
    }
    Ok(set)
}

/// The DATA budget must hold at least one message of the largest size:
/// one set lower is refused, and the default grows to it.
fn data_budget(set: Option<u64>, default: u64, max_message_bytes: u64) -> Result<u64, ConfigError> {
    let Some(budget) = set else {
        return Ok(default.max(max_message_bytes));
    };
    if budget < max_message_bytes {
        return Err(invalid(
            "server.max_data_bytes_in_flight_per_core",
            format!("{budget} is below server.max_message_bytes ({max_message_bytes}): no message that large could be received"),
        ));
    }
    Ok(budget)
}

fn check_min(key: &'static str, v: u64, min: u64) -> Result<u64, ConfigError> {
    if v < min {
        Err(invalid(key, format!("{v} is below the minimum {min}")))
    } else {
        Ok(v)
    }
}

pub(crate) fn check_range(
    key: &'static str,
    v: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(key, format!("{v} is outside {min}..={max}")))
    }
}

pub(crate) fn secs(key: &'static str, v: u64) -> Result<Duration, ConfigError> {
    if (1..=86_400).contains(&v) {
        Ok(Duration::from_secs(v))
    } else {
        Err(invalid(key, format!("{v} is outside 1..=86400 seconds")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sets_every_key_and_validates() {
        let cfg = Config::build(None, Overrides::default()).unwrap();
        assert_eq!(cfg.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(cfg.spool_dir, PathBuf::from("./spool"));
        assert_eq!(cfg.max_recipients, 1000);
        assert!(cfg.tls.is_none());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = RawConfig::parse("[server]\nlisten_on = []\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_on"), "{err}");
    }

    #[test]
    fn bad_value_names_key_and_reason() {
        let raw = RawConfig::parse("[server]\nmax_recipients = 0\n", "f.toml").unwrap();
        let err = Config::build(Some(raw), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("server.max_recipients:"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let raw = RawConfig::parse(
            "[spool]\ndir = \"/a\"\n[server]\nlisten = [\"127.0.0.1:1\"]\n",
            "f",
        )
        .unwrap();
        let o = Overrides {
            spool_dir: Some("/b".into()),
            listen: vec!["127.0.0.2:2".into()],
            routes: vec!["Example.com=10.0.0.1:25".into()],
            ..Default::default()
        };
        let cfg = Config::build(Some(raw), o).unwrap();
        assert_eq!(cfg.spool_dir, PathBuf::from("/b"));
        assert_eq!(cfg.listen, vec!["127.0.0.2:2".parse().unwrap()]);
        assert_eq!(
            cfg.delivery.routes["example.com"]
                .next_hop
                .as_ref()
                .unwrap()
                .host,
            "10.0.0.1"
        );
    }

    #[test]
    fn segment_must_hold_the_largest_message() {
        let o = Overrides {
            max_message_bytes: Some(1 << 30),
            ..Default::default()
        };
        let err = Config::build(None, o).unwrap_err().to_string();
        assert!(err.starts_with("spool.segment_bytes:"), "{err}");
    }

    #[test]
    fn dns_port_defaults_to_53() {
        let o = Overrides {
            dns: vec!["127.0.0.1".into(), "127.0.0.2:5353".into()],
            ..Default::default()
        };
        let cfg = Config::build(None, o).unwrap();
        assert_eq!(
            cfg.dns.servers,
            vec![
                "127.0.0.1:53".parse().unwrap(),
                "127.0.0.2:5353".parse().unwrap()
            ]
        );
    }
}
