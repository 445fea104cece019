//! The `[dns]` and `[delivery]` sections: as written, and validated.

use super::{invalid, ConfigError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub servers: Option<Vec<String>>,
    pub timeout_ms: Option<u64>,
    pub attempts: Option<u32>,
    pub cache_entries_max: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    pub smarthost: Option<String>,
    pub mx_port: Option<u16>,
    pub ehlo_name: Option<String>,
    pub source_address: Option<String>,
    pub deny_networks: Option<Vec<String>>,
    pub shaping_file: Option<PathBuf>,
    pub warmup_clock: Option<String>,
    pub tls: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub max_connections_per_destination: Option<u32>,
    pub max_messages_per_connection: Option<u32>,
    pub idle_timeout_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub command_timeout_secs: Option<u64>,
    pub final_reply_timeout_secs: Option<u64>,
    pub retry_initial_secs: Option<u64>,
    pub retry_max_secs: Option<u64>,
    pub expire_secs: Option<u64>,
    pub routes: Option<BTreeMap<String, RawRoute>>,
}

/// A route as written: `"host:port"` or `{ next_hop = "...", tls = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawRoute {
    Hop(String),
    Table(RawRouteTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteTable {
    pub next_hop: Option<String>,
    pub tls: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Dns {
    /// Empty: use /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub attempts: u32,
    pub cache_entries_max: usize,
}

/// STARTTLS policy towards a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    Opportunistic,
    Required,
    Disabled,
}

/// A next hop given by the operator: a host name or IP, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `None`: the domain's MX, with only the TLS policy overridden.
    pub next_hop: Option<NextHop>,
    pub tls: Option<TlsPolicy>,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub smarthost: Option<NextHop>,
    pub mx_port: u16,
    /// Keyed by lower-cased domain.
    pub routes: BTreeMap<String, Route>,
    pub ehlo_name: String,
    pub source_address: Option<IpAddr>,
    /// Addresses never connected to, whatever DNS or a route says.
    pub deny_networks: Vec<ipnet::IpNet>,
    /// Traffic shaping rules (`crate::shaping`); `None`: the limits here.
    pub shaping_file: Option<PathBuf>,
    /// Warm-up days end at UTC midnight, or (true) only on SIGUSR2.
    pub warmup_clock_manual: bool,
    pub tls: TlsPolicy,
    pub tls_ca_file: Option<PathBuf>,
    pub max_connections_per_destination: u32,
    pub max_messages_per_connection: u32,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub final_reply_timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub expire: Duration,
}

impl Delivery {
    /// The route for a recipient domain, if the operator set one.
    pub fn route(&self, domain: &str) -> Option<&Route> {
        self.routes.get(&domain.to_ascii_lowercase())
    }
}

pub(super) fn build_dns(
    mut u: RawDns,
    mut d: RawDns,
    flags: Vec<String>,
) -> Result<Dns, ConfigError> {
    let servers = if flags.is_empty() {
        pick!(u.servers, d.servers)
    } else {
        flags
    };
    let timeout_ms = pick!(u.timeout_ms, d.timeout_ms);
    if !(10..=60_000).contains(&timeout_ms) {
        return Err(invalid(
            "dns.timeout_ms",
            format!("{timeout_ms} is outside 10..=60000"),
        ));
    }
    Ok(Dns {
        servers: parse_dns(&servers)?,
        timeout: Duration::from_millis(timeout_ms),
        attempts: super::check_range("dns.attempts", pick!(u.attempts, d.attempts), 1, 10)?,
        cache_entries_max: pick!(u.cache_entries_max, d.cache_entries_max).max(1),
    })
}

/// Command-line parts of `[delivery]`.
pub(super) struct DeliveryFlags {
    pub smarthost: Option<String>,
    pub routes: Vec<String>,
    pub shaping_file: Option<PathBuf>,
}

pub(super) fn build_delivery(
    mut u: RawDelivery,
    mut d: RawDelivery,
    flags: DeliveryFlags,
    hostname: &str,
) -> Result<Delivery, ConfigError> {
    let smarthost = flags.smarthost.unwrap_or(pick!(u.smarthost, d.smarthost));
    let mut routes = pick!(u.routes, d.routes);
    for r in &flags.routes {
        let (domain, hop) = r
            .split_once('=')
            .ok_or_else(|| invalid("delivery.routes", format!("{r:?} is not DOMAIN=HOST:PORT")))?;
        routes.insert(domain.to_string(), RawRoute::Hop(hop.to_string()));
    }
    let ehlo_name = pick!(u.ehlo_name, d.ehlo_name);
    let source = pick!(u.source_address, d.source_address);
    let ca = pick!(u.tls_ca_file, d.tls_ca_file);
    let secs = |key, v| super::secs(key, v);
    let retry_initial = secs(
        "delivery.retry_initial_secs",
        pick!(u.retry_initial_secs, d.retry_initial_secs),
    )?;
    let retry_max = secs(
        "delivery.retry_max_secs",
        pick!(u.retry_max_secs, d.retry_max_secs),
    )?;
    if retry_max < retry_initial {
        return Err(invalid(
            "delivery.retry_max_secs",
            "must be at least retry_initial_secs",
        ));
    }
    let expire_secs = pick!(u.expire_secs, d.expire_secs);
    if !(1..=90 * 86_400).contains(&expire_secs) {
        return Err(invalid(
            "delivery.expire_secs",
            format!("{expire_secs} is outside 1..=7776000 (90 days)"),
        ));
    }
    Ok(Delivery {
        smarthost: parse_hop("delivery.smarthost", &smarthost)?,
        mx_port: match pick!(u.mx_port, d.mx_port) {
            0 => return Err(invalid("delivery.mx_port", "must not be 0")),
            p => p,
        },
        routes: check_routes(routes)?,
        ehlo_name: if ehlo_name.is_empty() {
            hostname.to_string()
        } else {
            ehlo_name
        },
        source_address: match source.as_str() {
            "" => None,
            s => Some(s.parse().map_err(|_| {
                invalid(
                    "delivery.source_address",
                    format!("{s:?} is not an IP address"),
                )
            })?),
        },
        shaping_file: {
            let f = flags
                .shaping_file
                .unwrap_or(pick!(u.shaping_file, d.shaping_file));
            (!f.as_os_str().is_empty()).then_some(f)
        },
        warmup_clock_manual: match pick!(u.warmup_clock, d.warmup_clock).as_str() {
            "utc" => false,
            "manual" => true,
            other => {
                return Err(invalid(
                    "delivery.warmup_clock",
                    format!("{other:?} is neither \"utc\" nor \"manual\""),
                ))
            }
        },
        deny_networks: super::parse_cidrs(
            "delivery.deny_networks",
            &pick!(u.deny_networks, d.deny_networks),
        )?,
        tls: parse_tls("delivery.tls", &pick!(u.tls, d.tls))?,
        tls_ca_file: (!ca.as_os_str().is_empty()).then_some(ca),
        max_connections_per_destination: super::check_range(
            "delivery.max_connections_per_destination",
            pick!(
                u.max_connections_per_destination,
                d.max_connections_per_destination
            ),
            1,
            10_000,
        )?,
        max_messages_per_connection: super::check_range(
            "delivery.max_messages_per_connection",
            pick!(u.max_messages_per_connection, d.max_messages_per_connection),
            1,
            1_000_000,
        )?,
        idle_timeout: secs(
            "delivery.idle_timeout_secs",
            pick!(u.idle_timeout_secs, d.idle_timeout_secs),
        )?,
        connect_timeout: secs(
            "delivery.connect_timeout_secs",
            pick!(u.connect_timeout_secs, d.connect_timeout_secs),
        )?,
        command_timeout: secs(
            "delivery.command_timeout_secs",
            pick!(u.command_timeout_secs, d.command_timeout_secs),
        )?,
        final_reply_timeout: secs(
            "delivery.final_reply_timeout_secs",
            pick!(u.final_reply_timeout_secs, d.final_reply_timeout_secs),
        )?,
        retry_initial,
        retry_max,
        expire: Duration::from_secs(expire_secs),
    })
}

fn parse_dns(list: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    list.iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| invalid("dns.servers", format!("{s:?} is not ADDR or ADDR:PORT")))
        })
        .collect()
}

fn parse_tls(key: &'static str, s: &str) -> Result<TlsPolicy, ConfigError> {
    match s {
        "opportunistic" => Ok(TlsPolicy::Opportunistic),
        "required" => Ok(TlsPolicy::Required),
        "disabled" => Ok(TlsPolicy::Disabled),
        other => Err(invalid(
            key,
            format!("{other:?} is not \"opportunistic\", \"required\" or \"disabled\""),
        )),
    }
}

/// `HOST:PORT` or `[IPv6]:PORT`; empty means none.
pub fn parse_hop(key: &'static str, hop: &str) -> Result<Option<NextHop>, ConfigError> {
    if hop.is_empty() {
        return Ok(None);
    }
    let bad = || invalid(key, format!("{hop:?} is not HOST:PORT"));
    let (host, port) = hop.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    if host.is_empty() || host.contains([' ', '/', '@']) {
        return Err(bad());
    }
    Ok(Some(NextHop {
        host: host.to_ascii_lowercase(),
        port,
    }))
}

fn check_routes(
    routes: BTreeMap<String, RawRoute>,
) -> Result<BTreeMap<String, Route>, ConfigError> {
    let mut out = BTreeMap::new();
    for (domain, raw) in routes {
        if domain.is_empty() || domain.contains(['@', ' ', ':']) {
            return Err(invalid(
                "delivery.routes",
                format!("{domain:?} is not a domain"),
            ));
        }
        let route = match raw {
            RawRoute::Hop(hop) => Route {
                next_hop: Some(parse_hop("delivery.routes", &hop)?.ok_or_else(|| {
                    invalid("delivery.routes", format!("{domain}: empty next hop"))
                })?),
                tls: None,
            },
            RawRoute::Table(t) => Route {
                next_hop: parse_hop("delivery.routes", t.next_hop.as_deref().unwrap_or(""))?,
                tls: t
                    .tls
                    .as_deref()
                    .map(|s| parse_tls("delivery.routes", s))
                    .transpose()?,
            },
        };
        out.insert(domain.to_ascii_lowercase(), route);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_parse_with_ipv6_and_names() {
        assert_eq!(
            parse_hop("k", "[::1]:25").unwrap(),
            Some(NextHop {
                host: "::1".into(),
                port: 25
            })
        );
        assert_eq!(
            parse_hop("k", "MX.example:2525").unwrap(),
            Some(NextHop {
                host: "mx.example".into(),
                port: 2525
            })
        );
        assert!(parse_hop("k", "mx.example").is_err());
        assert!(parse_hop("k", "mx.example:0").is_err());
    }

    #[test]
    fn route_tables_parse() {
        let raw: BTreeMap<String, RawRoute> =
            toml::from_str("\"a.test\" = \"10.0.0.1:25\"\n\"B.test\" = { tls = \"required\" }\n")
                .unwrap();
        let routes = check_routes(raw).unwrap();
        assert_eq!(
            routes["b.test"],
            Route {
                next_hop: None,
                tls: Some(TlsPolicy::Required)
            }
        );
        assert_eq!(routes["a.test"].next_hop.as_ref().unwrap().port, 25);
    }
}
