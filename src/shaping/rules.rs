//! The shaping rules in force: what the configuration says for every
//! destination, then the shaping file's `[default]`, then its
//! `[destination."DOMAIN"]` rule, each key taken from the most specific
//! place that sets it.
//!
//! Immutable once built: a reload builds new rules and publishes them
//! whole (see [`super::Published`]).

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
}

/// The file's rules; [`Rules::resolve`] joins them with a configuration.
#[derive(Debug, Default)]
pub struct Rules {
    default: Partial,
    destinations: BTreeMap<String, Partial>,
}

impl Rules {
    pub fn new(default: Partial, destinations: BTreeMap<String, Partial>) -> Rules {
        Rules {
            default,
            destinations,
        }
    }

    pub fn destination_count(&self) -> usize {
        self.destinations.len()
    }

    pub fn has_destination(&self, domain: &str) -> bool {
        self.destinations.contains_key(domain)
    }

    /// Every destination's limits under `cfg`, computed once.
    pub fn resolve(&self, cfg: &Config) -> Resolved {
        let base = base(cfg);
        let default = Arc::new(apply(&base, &self.default));
        let destinations = self
            .destinations
            .iter()
            .map(|(d, p)| (d.clone(), Arc::new(apply(&default, p))))
            .collect();
        Resolved {
            default,
            destinations,
        }
    }

    /// Each key of `domain`'s limits with the place it came from.
    pub fn explain(&self, cfg: &Config, domain: &str) -> Vec<(&'static str, String, String)> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let limits = self.resolve(cfg).limits(&domain);
        let rule = self.destinations.get(&domain);
        let from = |in_rule: bool, in_default: bool, config_key: &str| {
            if in_rule {
                format!("[destination.\"{domain}\"]")
            } else if in_default {
                "[default]".to_string()
            } else {
                config_key.to_string()
            }
        };
        let d = &self.default;
        let set = |f: fn(&Partial) -> bool| (rule.is_some_and(f), f(d));
        let row = |key, value: String, (r, d): (bool, bool), config_key: &str| {
            (key, value, from(r, d, config_key))
        };
        let rate = |r: &Option<Rate>| r.map_or("unlimited".to_string(), |r| r.to_string());
        vec![
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
        ]
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
    }
}

fn apply(under: &Limits, p: &Partial) -> Limits {
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
    }
}

/// Every destination's limits, ready to look up.
#[derive(Debug)]
pub struct Resolved {
    default: Arc<Limits>,
    destinations: HashMap<String, Arc<Limits>>,
}

impl Resolved {
    /// The limits for `domain` (lower-cased, as the queues key it).
    pub fn limits(&self, domain: &str) -> Arc<Limits> {
        match self.destinations.get(domain) {
            Some(l) => l.clone(),
            None if domain.bytes().any(|b| b.is_ascii_uppercase()) => self
                .destinations
                .get(&domain.to_ascii_lowercase())
                .unwrap_or(&self.default)
                .clone(),
            None => self.default.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedules_repeat_their_last_step() {
        let r = Retry::Schedule(vec![Duration::from_secs(60), Duration::from_secs(300)].into());
        let waits: Vec<u64> = (1..=4).map(|a| r.delay(a).as_secs()).collect();
        assert_eq!(waits, [60, 300, 300, 300]);
    }
}
