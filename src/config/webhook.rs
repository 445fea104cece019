//! The `[[webhook]]` tables: where delivery-log events are POSTed, which
//! kinds, in what batches, how long to wait and how far to back off.
//! Names, URL parts and paths only: the secret file is read (and its mode
//! checked) by [`crate::webhook`] at start, like the admin token file, so
//! that `spate ctl`, which reads the same config, need not read secrets.

use super::{invalid, ConfigError};
use crate::delivery_log::Kind;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

pub const WEBHOOKS_MAX: usize = 16;
pub const NAME_CHARS_MAX: usize = 64;
pub const BATCH_MAX_DEFAULT: u32 = 100;
pub const BATCH_MAX_LIMIT: u32 = 10_000;
pub const INTERVAL_MS_DEFAULT: u64 = 1000;
pub const TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const BACKOFF_MAX_MS_DEFAULT: u64 = 300_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub name: String,
    pub url: String,
    pub events: Option<Vec<String>>,
    pub batch_max: Option<u32>,
    pub interval_ms: Option<u64>,
    pub secret_file: Option<PathBuf>,
    pub timeout_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    /// Extra trusted roots (PEM) for an https:// URL, beside webpki's.
    pub ca_file: Option<PathBuf>,
}

/// One webhook, checked.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `[a-z0-9_-]`: used in the cursor's path and in metrics labels.
    pub name: String,
    pub url: String,
    pub https: bool,
    /// A DNS name, or an IP address (without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, at least "/".
    pub path: String,
    /// The record kinds sent; never empty.
    pub kinds: Vec<Kind>,
    pub batch_max: usize,
    pub interval: Duration,
    pub secret_file: PathBuf,
    pub timeout: Duration,
    pub backoff_max: Duration,
    pub ca_file: Option<PathBuf>,
}

impl Webhook {
    /// The Host header's value.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default_port = if self.https { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The record kinds an `events` name stands for.
pub fn kinds_of(event: &str) -> Option<&'static [Kind]> {
    Some(match event {
        "received" => &[Kind::Reception],
        "delivered" => &[Kind::Delivery],
        "deferred" => &[Kind::TransientFailure],
        "bounced" => &[Kind::Bounce, Kind::DoubleBounce],
        "expired" => &[Kind::Expiration],
        "shaping" => &[Kind::Backoff, Kind::Warmup, Kind::Admin],
        "complaints" => &[Kind::Complaint],
        "suppressions" => &[Kind::Suppression],
        _ => return None,
    })
}

pub fn build(raw: Vec<RawWebhook>) -> Result<Vec<Webhook>, ConfigError> {
    if raw.len() > WEBHOOKS_MAX {
        return Err(invalid(
            "webhook",
            format!("{} tables; at most {WEBHOOKS_MAX}", raw.len()),
        ));
    }
    let mut out: Vec<Webhook> = Vec::with_capacity(raw.len());
    for r in raw {
        let w = build_one(r)?;
        if out.iter().any(|o| o.name == w.name) {
            return Err(invalid(
                "webhook.name",
                format!("{:?} is used twice", w.name),
            ));
        }
        out.push(w);
    }
    Ok(out)
}

fn build_one(r: RawWebhook) -> Result<Webhook, ConfigError> {
    let name_ok = !r.name.is_empty()
        && r.name.len() <= NAME_CHARS_MAX
        && r.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(invalid(
            "webhook.name",
            format!(
                "{:?} is not 1 to {NAME_CHARS_MAX} of a-z, 0-9, '_' and '-'",
                r.name
            ),
        ));
    }
    let (https, host, port, path) = parse_url(&r.url)
        .map_err(|why| invalid("webhook.url", format!("{} ({}): {why}", r.url, r.name)))?;
    let kinds = match &r.events {
        None => Kind::ALL.to_vec(),
        Some(list) => kinds(list, &r.name)?,
    };
    let batch_max = r.batch_max.unwrap_or(BATCH_MAX_DEFAULT);
    if !(1..=BATCH_MAX_LIMIT).contains(&batch_max) {
        return Err(invalid(
            "webhook.batch_max",
            format!("{batch_max} is outside 1..={BATCH_MAX_LIMIT}"),
        ));
    }
    let ms = |key: &'static str, v: Option<u64>, default: u64, min: u64, max: u64| {
        let v = v.unwrap_or(default);
        if (min..=max).contains(&v) {
            Ok(Duration::from_millis(v))
        } else {
            Err(invalid(key, format!("{v} is outside {min}..={max} ms")))
        }
    };
    let interval = ms(
        "webhook.interval_ms",
        r.interval_ms,
        INTERVAL_MS_DEFAULT,
        10,
        600_000,
    )?;
    let timeout = ms(
        "webhook.timeout_ms",
        r.timeout_ms,
        TIMEOUT_MS_DEFAULT,
        100,
        600_000,
    )?;
    let backoff_max = ms(
        "webhook.backoff_max_ms",
        r.backoff_max_ms,
        BACKOFF_MAX_MS_DEFAULT,
        500,
        86_400_000,
    )?;
    let secret_file = r
        .secret_file
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| invalid("webhook.secret_file", format!("{} needs one", r.name)))?;
    let ca_file = r.ca_file.filter(|p| !p.as_os_str().is_empty());
    if ca_file.is_some() && !https {
        return Err(invalid(
            "webhook.ca_file",
            format!("{}: only an https:// URL uses it", r.name),
        ));
    }
    Ok(Webhook {
        name: r.name,
        url: r.url,
        https,
        host,
        port,
        path,
        kinds,
        batch_max: batch_max as usize,
        interval,
        secret_file,
        timeout,
        backoff_max,
        ca_file,
    })
}

fn kinds(list: &[String], name: &str) -> Result<Vec<Kind>, ConfigError> {
    if list.is_empty() {
        return Err(invalid(
            "webhook.events",
            format!("{name}: an empty list sends nothing; leave the key out for all"),
        ));
    }
    let mut kinds = Vec::new();
    for e in list {
        let k = kinds_of(e).ok_or_else(|| {
            invalid(
                "webhook.events",
                format!("{e:?} ({name}) is not one of received, delivered, deferred, bounced, expired, shaping, complaints, suppressions"),
            )
        })?;
        kinds.extend(k.iter().filter(|k| !kinds.contains(*k)).collect::<Vec<_>>());
    }
    Ok(kinds)
}

/// (https, host, port, path and query).
fn parse_url(url: &str) -> Result<(bool, String, u16, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("must start with http:// or https://".into()),
    };
    let authority = uri.authority().ok_or("no host")?;
    if authority.as_str().contains('@') {
        return Err("user info is not supported; the signature authenticates".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let is_name = !host.is_empty()
        && host.len() <= crate::dns::NAME_BYTES_MAX
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !is_ip && !is_name {
        return Err(format!("{host:?} is neither a host name nor an IP address"));
    }
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    if port == 0 {
        return Err("port 0".into());
    }
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let path = if path.is_empty() { "/".into() } else { path };
    Ok((https, host.to_ascii_lowercase(), port, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawWebhook {
        RawWebhook {
            name: "ops".into(),
            url: url.into(),
            secret_file: Some("/etc/spate/hook.secret".into()),
            ..Default::default()
        }
    }

    fn refused(r: RawWebhook) -> String {
        build(vec![r]).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_url_parts() {
        let w = &build(vec![raw("https://hooks.example.com/in?x=1")]).unwrap()[0];
        assert!(w.https);
        assert_eq!((w.host.as_str(), w.port), ("hooks.example.com", 443));
        assert_eq!(w.path, "/in?x=1");
        assert_eq!(w.kinds, Kind::ALL.to_vec());
        assert_eq!(w.batch_max, 100);
        assert_eq!(w.interval, Duration::from_millis(1000));
        assert_eq!(w.timeout, Duration::from_millis(10_000));
        assert_eq!(w.backoff_max, Duration::from_millis(300_000));
        assert_eq!(w.authority(), "hooks.example.com");
        let w = &build(vec![raw("http://[::1]:8080")]).unwrap()[0];
        assert_eq!(
            (w.host.as_str(), w.port, w.path.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(w.authority(), "[::1]:8080");
    }

    #[test]
    fn events_map_to_kinds() {
        let mut r = raw("http://127.0.0.1:9/");
        r.events = Some(vec!["bounced".into(), "shaping".into(), "bounced".into()]);
        let w = &build(vec![r]).unwrap()[0];
        assert_eq!(
            w.kinds,
            vec![
                Kind::Bounce,
                Kind::DoubleBounce,
                Kind::Backoff,
                Kind::Warmup,
                Kind::Admin
            ]
        );
    }

    #[test]
    fn each_refusal_names_its_key() {
        let cases: Vec<(RawWebhook, &str)> = vec![
            (
                RawWebhook {
                    name: "Ops".into(),
                    ..raw("http://a/")
                },
                "webhook.name:",
            ),
            (
                RawWebhook {
                    name: "".into(),
                    ..raw("http://a/")
                },
                "webhook.name:",
            ),
            (
                RawWebhook {
                    name: "a/b".into(),
                    ..raw("http://a/")
                },
                "webhook.name:",
            ),
            (raw("ftp://a/"), "webhook.url:"),
            (raw("a.example/x"), "webhook.url:"),
            (raw("http://u:p@a/"), "webhook.url:"),
            (raw("http://a_b!/"), "webhook.url:"),
            (raw("http://a:0/"), "webhook.url:"),
            (
                RawWebhook {
                    events: Some(vec![]),
                    ..raw("http://a/")
                },
                "webhook.events:",
            ),
            (
                RawWebhook {
                    events: Some(vec!["sent".into()]),
                    ..raw("http://a/")
                },
                "webhook.events:",
            ),
            (
                RawWebhook {
                    batch_max: Some(0),
                    ..raw("http://a/")
                },
                "webhook.batch_max:",
            ),
            (
                RawWebhook {
                    batch_max: Some(10_001),
                    ..raw("http://a/")
                },
                "webhook.batch_max:",
            ),
            (
                RawWebhook {
                    interval_ms: Some(0),
                    ..raw("http://a/")
                },
                "webhook.interval_ms:",
            ),
            (
                RawWebhook {
                    timeout_ms: Some(5),
                    ..raw("http://a/")
                },
                "webhook.timeout_ms:",
            ),
            (
                RawWebhook {
                    backoff_max_ms: Some(1),
                    ..raw("http://a/")
                },
                "webhook.backoff_max_ms:",
            ),
            (
                RawWebhook {
                    secret_file: None,
                    ..raw("http://a/")
                },
                "webhook.secret_file:",
            ),
            (
                RawWebhook {
                    secret_file: Some("".into()),
                    ..raw("http://a/")
                },
                "webhook.secret_file:",
            ),
            (
                RawWebhook {
                    ca_file: Some("/ca.pem".into()),
                    ..raw("http://a/")
                },
                "webhook.ca_file:",
            ),
        ];
        for (r, key) in cases {
            let err = refused(r);
            assert!(err.starts_with(key), "{key} {err}");
        }
        let err = build(vec![raw("http://a/"), raw("http://b/")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("webhook.name:") && err.contains("twice"),
            "{err}"
        );
        let many = (0..=WEBHOOKS_MAX)
            .map(|i| RawWebhook {
                name: format!("h{i}"),
                ..raw("http://a/")
            })
            .collect();
        assert!(build(many).unwrap_err().to_string().starts_with("webhook:"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = crate::config::RawConfig::parse(
            "[[webhook]]\nname = \"a\"\nurl = \"http://a/\"\nsecret = \"x\"\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("secret"), "{err}");
    }
}
