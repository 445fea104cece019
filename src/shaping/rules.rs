//! The shaping rules in force: what the configuration says for every
//! destination, then the shaping file's `[default]`, then its
//! `[destination."DOMAIN"]` rule, each key taken from the most specific
//! place that sets it.
//!
//! Immutable once built: a reload builds new rules and publishes them
//! whole (see [`super::Published`]).

use super::backoff::ResponseRule;
use super::egress::{Member, Pool, SourceDef};
use super::provider::SharedLimits;
use super::rate::Rate;
use crate::config::Config;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// When a deferred recipient is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// After `initial`, doubling, never more than `max` apart (the
    /// configuration's `retry_initial_secs` and `retry_max_secs`).
    Doubling { initial: Duration, max: Duration },
    /// These intervals in turn, then the last one again until expiry.
    Schedule(Arc<[Duration]>),
}

impl Retry {
    /// The wait after `attempts` failed attempts (1 for the first).
    pub fn delay(&self, attempts: u32) -> Duration {
        match self {
            Retry::Doubling { initial, max } => {
                crate::delivery::outcome::retry_delay(attempts, *initial, *max)
            }
            Retry::Schedule(steps) => {
                let i = (attempts.max(1) as usize - 1).min(steps.len() - 1);
                steps[i]
            }
        }
    }
}

/// What one destination domain may get, all keys resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections to the destination at once.
    pub connections: u32,
    pub message_rate: Option<Rate>,
    pub connection_rate: Option<Rate>,
    pub messages_per_connection: u32,
    /// `None`: every recipient of a queue entry in one transaction.
    pub recipients_per_transaction: Option<u32>,
    pub retry: Retry,
    pub expire: Duration,
    /// Reply rules, tried in order: the destination's, its provider's,
    /// then the default's.
    pub on_response: Arc<[ResponseRule]>,
    /// 4xx replies lower the connections and rate in use, deliveries
    /// raise them back (`super::backoff::Adaptive`).
    pub adaptive: bool,
    /// The sources connections go out from; `None`: `delivery.source_address`.
    pub pool: Option<Arc<Pool>>,
}

/// The keys one rule sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    pub connections: Option<u32>,
    pub message_rate: Option<Rate>,
    pub connection_rate: Option<Rate>,
    pub messages_per_connection: Option<u32>,
    pub recipients_per_transaction: Option<u32>,
    pub retry: Option<Retry>,
    pub expire: Option<Duration>,
    pub on_response: Option<Arc<[ResponseRule]>>,
    pub adaptive: Option<bool>,
    pub pool: Option<String>,
    /// Providers only: what each source may send the provider, all cores
    /// together.
    pub per_source: Option<Totals>,
}

/// The file's rules; [`Rules::resolve`] joins them with a configuration.
#[derive(Debug, Default)]
pub struct Rules {
    default: Partial,
    destinations: BTreeMap<String, Partial>,
    /// By name: the MX host suffixes, and the keys the rule sets.
    providers: BTreeMap<String, (Vec<String>, Partial)>,
    sources: BTreeMap<String, SourceDef>,
    /// By name: each member source and its weight.
    pools: BTreeMap<String, Vec<(String, u32)>>,
    tenants: BTreeMap<String, TenantDef>,
}

/// A `[tenant.NAME]` as the file defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDef {
    /// The pool the tenant's mail goes out from, over the destination's.
    pub pool: Option<String>,
    /// The tenant's messages over all destinations and cores.
    pub message_rate: Option<Rate>,
    /// Connections carrying the tenant's mail at once, all destinations
    /// and cores together.
    pub connections: Option<u32>,
}

/// A tenant rule, resolved.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    pub pool: Option<Arc<Pool>>,
    pub message_rate: Option<Rate>,
    pub connections: Option<u32>,
    /// Its rate's and connections' state, shared by every core.
    pub shared: Arc<SharedLimits>,
}

impl Rules {
    pub fn new(
        default: Partial,
        destinations: BTreeMap<String, Partial>,
        providers: BTreeMap<String, (Vec<String>, Partial)>,
    ) -> Rules {
        Rules {
            default,
            destinations,
            providers,
            sources: BTreeMap::new(),
            pools: BTreeMap::new(),
            tenants: BTreeMap::new(),
        }
    }

    /// The rules with these tenants.
    pub fn with_tenants(mut self, tenants: BTreeMap<String, TenantDef>) -> Rules {
        self.tenants = tenants;
        self
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantDef> {
        self.tenants.get(name)
    }

    /// The rules with these sources and pools.
    pub fn with_egress(
        mut self,
        sources: BTreeMap<String, SourceDef>,
        pools: BTreeMap<String, Vec<(String, u32)>>,
    ) -> Rules {
        self.sources = sources;
        self.pools = pools;
        self
    }

    /// Every source's address, to check at start and reload that this
    /// host has it.
    pub fn source_addresses(&self) -> impl Iterator<Item = (&str, std::net::IpAddr)> {
        self.sources
            .iter()
            .map(|(n, s)| (n.as_str(), s.def_address()))
    }

    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    pub fn destination_count(&self) -> usize {
        self.destinations.len()
    }

    pub fn has_destination(&self, domain: &str) -> bool {
        self.destinations.contains_key(domain)
    }

    /// Every destination's limits under `cfg`, computed once; `shared`
    /// gives each provider its cross-core state (kept across reloads).
    pub fn resolve(
        &self,
        cfg: &Config,
        shared: &mut dyn FnMut(&str) -> Arc<SharedLimits>,
    ) -> Resolved {
        let pools: HashMap<String, Arc<Pool>> = self
            .pools
            .iter()
            .map(|(name, members)| {
                let members = members
                    .iter()
                    .map(|(source, weight)| Member {
                        name: source.clone(),
                        def: self.sources[source].clone(),
                        weight: *weight,
                        shared: shared(&format!("source {source}")),
                    })
                    .collect();
                (name.clone(), Arc::new(Pool::new(name.clone(), members)))
            })
            .collect();
        let apply = |under: &Limits, p: &Partial| apply(under, p, &pools);
        let base = base(cfg);
        let default = Arc::new(apply(&base, &self.default));
        let destinations = self
            .destinations
            .iter()
            .map(|(d, p)| (d.clone(), Arc::new(apply(&default, p))))
            .collect();
        let providers = self
            .providers
            .iter()
            .map(|(name, (suffixes, p))| Provider {
                name: name.clone(),
                suffixes: suffixes.clone(),
                // `adaptive` in a provider rule adapts its totals, not
                // each of its domains' own limits.
                limits: Arc::new(apply(
                    &default,
                    &Partial {
                        adaptive: None,
                        ..p.clone()
                    },
                )),
                adaptive: p.adaptive.unwrap_or(false),
                totals: Totals {
                    connections: p.connections,
                    message_rate: p.message_rate,
                    connection_rate: p.connection_rate,
                },
                per_source: p.per_source,
                shared: shared(name),
            })
            .collect();
        let tenants = self
            .tenants
            .iter()
            .map(|(name, t)| {
                let tenant = Tenant {
                    name: name.clone(),
                    pool: t.pool.as_ref().and_then(|p| pools.get(p).cloned()),
                    message_rate: t.message_rate,
                    connections: t.connections,
                    shared: shared(&format!("tenant {name}")),
                };
                (name.clone(), Arc::new(tenant))
            })
            .collect();
        Resolved {
            default,
            destinations,
            destination_rules: self.destinations.clone(),
            providers,
            pools,
            tenants,
        }
    }

    /// Each key of `domain`'s limits with the place it came from; `mx`:
    /// the domain's MX hosts, to find its provider.
    pub fn explain(
        &self,
        cfg: &Config,
        domain: &str,
        mx: &[&str],
    ) -> (Option<String>, Vec<(&'static str, String, String)>) {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let resolved = self.resolve(cfg, &mut |_| {
            Arc::new(SharedLimits::new(std::time::Instant::now()))
        });
        let provider = resolved.provider_of(mx.iter().copied());
        let limits = resolved.limits(&domain, provider);
        let provider = provider.map(|i| resolved.providers[i].name.clone());
        let rule = self.destinations.get(&domain);
        let by_provider = provider
            .as_ref()
            .and_then(|p| self.providers.get(p))
            .map(|(_, p)| p);
        let from = |(in_rule, in_provider, in_default): (bool, bool, bool), config_key: &str| {
            if in_rule {
                format!("[destination.\"{domain}\"]")
            } else if in_provider {
                format!("[provider.{}]", provider.as_deref().unwrap_or_default())
            } else if in_default {
                "[default]".to_string()
            } else {
                config_key.to_string()
            }
        };
        let d = &self.default;
        let set = |f: fn(&Partial) -> bool| (rule.is_some_and(f), by_provider.is_some_and(f), f(d));
        let row = |key, value: String, set: (bool, bool, bool), config_key: &str| {
            (key, value, from(set, config_key))
        };
        let rate = |r: &Option<Rate>| r.map_or("unlimited".to_string(), |r| r.to_string());
        let rows = vec![
            row(
                "connections",
                limits.connections.to_string(),
                set(|p| p.connections.is_some()),
                "delivery.max_connections_per_destination (per core)",
            ),
            row(
                "message_rate",
                rate(&limits.message_rate),
                set(|p| p.message_rate.is_some()),
                "built-in: unlimited",
            ),
            row(
                "connection_rate",
                rate(&limits.connection_rate),
                set(|p| p.connection_rate.is_some()),
                "built-in: unlimited",
            ),
            row(
                "messages_per_connection",
                limits.messages_per_connection.to_string(),
                set(|p| p.messages_per_connection.is_some()),
                "delivery.max_messages_per_connection",
            ),
            row(
                "recipients_per_transaction",
                limits
                    .recipients_per_transaction
                    .map_or("unlimited".into(), |n| n.to_string()),
                set(|p| p.recipients_per_transaction.is_some()),
                "built-in: every recipient of a message in one transaction",
            ),
            row(
                "retry",
                retry_text(&limits.retry),
                set(|p| p.retry.is_some()),
                "delivery.retry_initial_secs, retry_max_secs",
            ),
            row(
                "expire",
                format!("{}s", limits.expire.as_secs()),
                set(|p| p.expire.is_some()),
                "delivery.expire_secs",
            ),
        ];
        (provider, rows)
    }
}

impl Rules {
    /// The name of the pool `domain`'s rules give it (no tenant, no
    /// reroute).
    pub fn explain_pool(&self, cfg: &Config, domain: &str, mx: &[&str]) -> Option<String> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let resolved = self.resolve(cfg, &mut |_| {
            Arc::new(SharedLimits::new(std::time::Instant::now()))
        });
        let provider = resolved.provider_of(mx.iter().copied());
        resolved
            .limits(&domain, provider)
            .pool
            .as_ref()
            .map(|p| p.name.clone())
    }

    /// One line per source of pool `name`: address, EHLO, weight, limits
    /// and warm-up plan.
    pub fn pool_lines(&self, name: &str) -> Vec<String> {
        let Some(members) = self.pools.get(name) else {
            return Vec::new();
        };
        members
            .iter()
            .map(|(source, weight)| {
                let def = &self.sources[source];
                let mut line = format!("source {source}: {} weight {weight}", def.address);
                if let Some(e) = &def.ehlo {
                    line += &format!(", ehlo {e}");
                }
                if let Some(n) = def.totals.connections {
                    line += &format!(", connections {n}");
                }
                if let Some(r) = def.totals.message_rate {
                    line += &format!(", message_rate {r}");
                }
                if let Some(w) = &def.warmup {
                    let overflow = match &w.overflow {
                        super::warmup::Overflow::Queue => "queue".to_string(),
                        super::warmup::Overflow::Pool(p) => format!("pool {p}"),
                    };
                    line += &format!(
                        ", warming by plan {} ({} days from {} a day per provider; overflow: {overflow}; progress in <spool>/warmup.json)",
                        w.name,
                        w.daily.len(),
                        w.daily[0]
                    );
                }
                line
            })
            .collect()
    }
}

fn retry_text(r: &Retry) -> String {
    match r {
        Retry::Doubling { initial, max } => {
            format!("{}s doubling up to {}s", initial.as_secs(), max.as_secs())
        }
        Retry::Schedule(steps) => {
            let s: Vec<String> = steps.iter().map(|d| format!("{}s", d.as_secs())).collect();
            format!("[{}] then the last again", s.join(", "))
        }
    }
}

/// What the configuration alone says (no shaping file).
fn base(cfg: &Config) -> Limits {
    let d = &cfg.delivery;
    Limits {
        connections: d.max_connections_per_destination,
        message_rate: None,
        connection_rate: None,
        messages_per_connection: d.max_messages_per_connection,
        recipients_per_transaction: None,
        retry: Retry::Doubling {
            initial: d.retry_initial,
            max: d.retry_max,
        },
        expire: d.expire,
        on_response: Arc::new([]),
        adaptive: false,
        pool: None,
    }
}

fn apply(under: &Limits, p: &Partial, pools: &HashMap<String, Arc<Pool>>) -> Limits {
    Limits {
        connections: p.connections.unwrap_or(under.connections),
        message_rate: p.message_rate.or(under.message_rate),
        connection_rate: p.connection_rate.or(under.connection_rate),
        messages_per_connection: p
            .messages_per_connection
            .unwrap_or(under.messages_per_connection),
        recipients_per_transaction: p
            .recipients_per_transaction
            .or(under.recipients_per_transaction),
        retry: p.retry.clone().unwrap_or_else(|| under.retry.clone()),
        expire: p.expire.unwrap_or(under.expire),
        on_response: match &p.on_response {
            None => under.on_response.clone(),
            Some(own) => own
                .iter()
                .chain(under.on_response.iter())
                .cloned()
                .collect(),
        },
        adaptive: p.adaptive.unwrap_or(under.adaptive),
        pool: match &p.pool {
            // Names were checked against the pools when the file was read.
            Some(name) => pools.get(name).cloned(),
            None => under.pool.clone(),
        },
    }
}

/// A provider rule, resolved: its limits are the totals over all its
/// domains and all cores, held in `shared`.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    suffixes: Vec<String>,
    /// What each of its domains gets (the rule over the default).
    pub limits: Arc<Limits>,
    /// The totals over all its domains and cores: only the keys the
    /// provider rule itself sets.
    pub totals: Totals,
    /// What each source may send the provider (its own totals).
    pub per_source: Option<Totals>,
    /// Its totals adapt to its 4xx replies (shared by every core).
    pub adaptive: bool,
    pub shared: Arc<SharedLimits>,
}

/// A provider's limits summed over its domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub connections: Option<u32>,
    pub message_rate: Option<Rate>,
    pub connection_rate: Option<Rate>,
}

impl Provider {
    /// Whether `host` (lower-cased, no trailing dot) ends in one of the
    /// provider's suffixes (".bigmail.test" matches "mx1.bigmail.test";
    /// "bigmail.test" also matches itself).
    fn has(&self, host: &str) -> bool {
        self.suffixes.iter().any(|s| {
            let bare = s.trim_start_matches('.');
            host == bare
                || host.len() > bare.len()
                    && host.ends_with(bare)
                    && host.as_bytes()[host.len() - bare.len() - 1] == b'.'
        })
    }
}

/// Every destination's limits, ready to look up.
#[derive(Debug)]
pub struct Resolved {
    default: Arc<Limits>,
    destinations: HashMap<String, Arc<Limits>>,
    destination_rules: BTreeMap<String, Partial>,
    providers: Vec<Provider>,
    pools: HashMap<String, Arc<Pool>>,
    tenants: HashMap<String, Arc<Tenant>>,
}

impl Resolved {
    /// The limits for `domain` (lower-cased, as the queues key it), in
    /// `provider` if it belongs to one: its own rule over the provider's
    /// over the default.
    pub fn limits(&self, domain: &str, provider: Option<usize>) -> Arc<Limits> {
        let lower;
        let domain = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = domain.to_ascii_lowercase();
            &lower
        } else {
            domain
        };
        match (
            provider.and_then(|i| self.providers.get(i)),
            self.destinations.get(domain),
        ) {
            (None, Some(own)) => own.clone(),
            (None, None) => self.default.clone(),
            (Some(p), None) => p.limits.clone(),
            (Some(p), Some(_)) => Arc::new(apply(
                &p.limits,
                &self.destination_rules[domain],
                &self.pools,
            )),
        }
    }

    /// Whether `domain` (lower-cased) has a rule of its own.
    pub fn has_destination(&self, domain: &str) -> bool {
        self.destinations.contains_key(domain)
    }

    /// The provider whose suffixes every one of `mx_hosts` ends in (the
    /// first by name if several do); none for no hosts.
    pub fn provider_of<'a>(
        &self,
        mx_hosts: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<usize> {
        mx_hosts.clone().next()?;
        self.providers
            .iter()
            .position(|p| mx_hosts.clone().all(|h| p.has(h)))
    }

    pub fn provider(&self, index: usize) -> &Provider {
        &self.providers[index]
    }

    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    /// The rule of the tenant a message names, if there is one.
    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_with_provider() -> Resolved {
        let text = "[default]\nconnections = 7\n[provider.big]\nmx_suffix = [\".big.test\", \"other.test\"]\nconnections = 3\nmessage_rate = \"5/s\"\n[destination.\"own.test\"]\nconnections = 2\n";
        let rules = crate::shaping::file::parse(text, "s.toml").unwrap();
        let cfg = crate::config::Config::build(None, Default::default()).unwrap();
        rules.resolve(&cfg, &mut |_| {
            Arc::new(SharedLimits::new(std::time::Instant::now()))
        })
    }

    #[test]
    fn a_provider_takes_domains_whose_mx_hosts_all_match() {
        let r = rules_with_provider();
        assert_eq!(
            r.provider_of(
                ["mx1.big.test", "MX2.big.test".to_ascii_lowercase().as_str()].into_iter()
            ),
            Some(0)
        );
        assert_eq!(r.provider_of(["other.test"].into_iter()), Some(0));
        assert_eq!(
            r.provider_of(["mx1.big.test", "mx.elsewhere.test"].into_iter()),
            None,
            "not all"
        );
        assert_eq!(
            r.provider_of(["notbig.test"].into_iter()),
            None,
            "a suffix ends at a dot"
        );
        assert_eq!(r.provider_of([].into_iter()), None);
        let p = r.provider(0);
        assert_eq!(p.totals.connections, Some(3));
        assert_eq!(
            r.limits("a.test", Some(0)).connections,
            3,
            "the provider's rule over the default"
        );
        assert_eq!(
            r.limits("own.test", Some(0)).connections,
            2,
            "the destination's own rule first"
        );
        assert_eq!(
            r.limits("own.test", Some(0)).message_rate,
            p.limits.message_rate
        );
        assert_eq!(r.limits("a.test", None).connections, 7);
    }

    #[test]
    fn retry_schedules_repeat_their_last_step() {
        let r = Retry::Schedule(vec![Duration::from_secs(60), Duration::from_secs(300)].into());
        let waits: Vec<u64> = (1..=4).map(|a| r.delay(a).as_secs()).collect();
        assert_eq!(waits, [60, 300, 300, 300]);
    }
}
