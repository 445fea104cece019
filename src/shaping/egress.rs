//! Egress: the local addresses ("sources") delivery connects from, each
//! with its EHLO name and limits, grouped into weighted pools.
//!
//! A pool's choice is shared by every core: each pool counts the messages
//! each of its sources has sent or has reserved for a connection still
//! open (atomics), and a new connection takes the source furthest behind
//! its weight's share, so the shares hold over all cores together rather
//! than per core at random. A source's own limits
//! (connections, message rate) are totals over all cores too, held like a
//! provider's ([`super::provider::SharedLimits`]).

use super::provider::{ConnectionSlot, SharedLimits};
use super::rate::Rate;
use super::rules::Totals;
use super::warmup::{Plan, Progress, Taken};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Most sources, and most sources in one pool.
pub const SOURCES_MAX: usize = 1024;
/// Largest weight of a source in a pool.
pub const WEIGHT_MAX: i64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub address: String,
    pub ehlo: Option<String>,
    pub connections: Option<i64>,
    pub message_rate: Option<String>,
    pub warmup: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub sources: BTreeMap<String, i64>,
}

/// A source as the file defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDef {
    pub address: IpAddr,
    /// `None`: `delivery.ehlo_name`.
    pub ehlo: Option<String>,
    pub totals: Totals,
    /// The warm-up plan this source follows, if it is warming.
    pub warmup: Option<Arc<Plan>>,
}

impl SourceDef {
    pub fn def_address(&self) -> IpAddr {
        self.address
    }
}

/// Checks one `[source.NAME]`; the error is the reason and the key.
pub(super) fn source(
    raw: &RawSource,
    plans: &BTreeMap<String, Arc<Plan>>,
) -> Result<SourceDef, (String, &'static str)> {
    let address = raw
        .address
        .parse()
        .map_err(|_| (format!("{:?} is not an IP address", raw.address), "address"))?;
    if let Some(e) = &raw.ehlo {
        let ok = !e.is_empty()
            && e.len() <= 253
            && e.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err((format!("{e:?} is not a host name"), "ehlo"));
        }
    }
    let warmup = match &raw.warmup {
        None => None,
        Some(name) => Some(
            plans
                .get(name)
                .cloned()
                .ok_or_else(|| (format!("no [warmup.{name}]"), "warmup"))?,
        ),
    };
    let connections = match raw.connections {
        None => None,
        Some(n) if (1..=100_000).contains(&n) => Some(n as u32),
        Some(n) => return Err((format!("{n} is outside 1..=100000"), "connections")),
    };
    let message_rate = raw
        .message_rate
        .as_deref()
        .map(Rate::parse)
        .transpose()
        .map_err(|e| (e, "message_rate"))?;
    Ok(SourceDef {
        address,
        ehlo: raw.ehlo.clone(),
        totals: Totals {
            connections,
            message_rate,
            connection_rate: None,
        },
        warmup,
    })
}

/// Checks one `[pool.NAME]` against the sources: its members and weights.
pub(super) fn pool(
    raw: &RawPool,
    sources: &BTreeMap<String, SourceDef>,
) -> Result<Vec<(String, u32)>, String> {
    if raw.sources.is_empty() || raw.sources.len() > SOURCES_MAX {
        return Err(format!("needs 1 to {SOURCES_MAX} sources"));
    }
    raw.sources
        .iter()
        .map(|(name, &w)| {
            if !sources.contains_key(name) {
                return Err(format!("no [source.{name}]"));
            }
            if !(1..=WEIGHT_MAX).contains(&w) {
                return Err(format!("weight {w} of {name} is outside 1..={WEIGHT_MAX}"));
            }
            Ok((name.clone(), w as u32))
        })
        .collect()
}

/// One source in a resolved pool.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub def: SourceDef,
    pub weight: u32,
    /// The source's counts, shared by every pool it is in and every core.
    pub shared: Arc<SharedLimits>,
}

/// A pool, resolved: its members and the messages each has sent.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub members: Vec<Member>,
    sent: Vec<AtomicU64>,
}

/// Pools are told apart by name (within one set of rules names are unique).
impl PartialEq for Pool {
    fn eq(&self, other: &Pool) -> bool {
        self.name == other.name
    }
}

impl Eq for Pool {}

/// The source a connection goes out from, and its place in its
/// connection limit (dropped with the connection).
pub struct SourceLease {
    pub pool: Arc<Pool>,
    pub member: usize,
    /// Messages counted for this connection in advance, and sent so far.
    reserved: u64,
    used: std::cell::Cell<u64>,
    _slot: Option<ConnectionSlot>,
    /// The source's warm-up with the destination's provider, if warming.
    pub(super) warm: Option<Warm>,
    /// The pool the destination asked for: `pool`'s name, or the pool
    /// that overflowed into it.
    pub(super) asked: Option<String>,
    /// For a source of an overflow pool: the warm-up day it was chosen on.
    /// On another day the warming sources may have room again.
    pub(super) overflow_on: Option<u32>,
    /// The source's limits with the destination's provider (its
    /// `per_source`), and its place in their connection count.
    pub(super) pair: Option<PairLimits>,
}

/// What one source may send one provider, and its counts over all cores.
pub struct PairLimits {
    pub shared: Arc<SharedLimits>,
    pub message_rate: Option<Rate>,
    pub(super) _slot: Option<ConnectionSlot>,
}

/// A warming source has sent today's volume for a provider.
#[derive(Debug)]
pub struct NoneLeft;

/// A warming source's plan and progress with one provider.
#[derive(Clone)]
pub struct Warm {
    pub plan: Arc<Plan>,
    pub progress: Arc<Progress>,
    pub provider: String,
}

impl Drop for SourceLease {
    /// Gives back the reserved messages this connection did not send.
    fn drop(&mut self) {
        let unused = self.reserved.saturating_sub(self.used.get());
        self.pool.sent[self.member].fetch_sub(unused, Ordering::Relaxed);
    }
}

impl SourceLease {
    pub fn source(&self) -> &Member {
        &self.pool.members[self.member]
    }

    /// Counts one message sent from this source, for the pool's shares
    /// (past the reservation, the pool's count grows with it).
    pub fn sent(&self) {
        let used = self.used.get() + 1;
        self.used.set(used);
        if used > self.reserved {
            self.pool.sent[self.member].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The pool the destination asked for when this source was chosen
    /// (while that stays its pool, the connection may go on).
    pub fn asked_pool(&self) -> &str {
        self.asked.as_deref().unwrap_or(&self.pool.name)
    }

    /// Whether this connection holds a place in a count that spans
    /// domains: its source's connections, or its source's with the
    /// provider.
    pub fn holds_shared_place(&self) -> bool {
        self.source().def.totals.connections.is_some()
            || self.pair.as_ref().is_some_and(|p| p._slot.is_some())
    }

    /// Whether another connection wants this one's place in a count it
    /// holds (its source's, or its source's with the provider).
    pub fn place_wanted(&self) -> bool {
        let m = self.source();
        (m.def.totals.connections.is_some() && m.shared.place_wanted())
            || self
                .pair
                .as_ref()
                .is_some_and(|p| p._slot.is_some() && p.shared.place_wanted())
    }

    /// Whether this connection took overflow on a warm-up day before
    /// `today` (then it should end, so the next goes out from the pool
    /// asked for).
    pub fn overflowed_before(&self, today: u32) -> bool {
        self.overflow_on.is_some_and(|day| day != today)
    }

    pub fn warm(&self) -> Option<&Warm> {
        self.warm.as_ref()
    }

    /// Whether the source's warm-up lets another message go `today`.
    pub fn has_room(&self, today: u32) -> bool {
        self.warm
            .as_ref()
            .is_none_or(|w| w.progress.has_room(&w.plan, today))
    }

    /// Counts one message against the source's warm-up volume for today:
    /// `Ok(None)` for a source that is not warming, `Err` if none is left
    /// (another core took the last).
    pub fn take_warm(&self, today: u32) -> Result<Option<Taken>, NoneLeft> {
        match &self.warm {
            None => Ok(None),
            Some(w) => w.progress.take(&w.plan, today).map(Some).ok_or(NoneLeft),
        }
    }

    /// When the source's own rate lets the next message go; `None`: now.
    /// (Its own rate, and its rate with the destination's provider.)
    pub fn message_due(&self, now: Instant) -> Option<Instant> {
        let m = self.source();
        let own = m
            .def
            .totals
            .message_rate
            .and_then(|rate| m.shared.message_due(&rate, now));
        let pair = self
            .pair
            .as_ref()
            .and_then(|p| p.shared.message_due(p.message_rate.as_ref()?, now));
        own.max(pair)
    }

    /// One message of the source's own rate and of its rate with the
    /// provider, or when one conforms.
    pub fn take_message(&self, now: Instant) -> Result<(), Instant> {
        let m = self.source();
        if let Some(rate) = &m.def.totals.message_rate {
            m.shared.take_message(rate, now)?;
        }
        match &self.pair {
            Some(PairLimits {
                shared,
                message_rate: Some(rate),
                ..
            }) => shared.take_message(rate, now),
            _ => Ok(()),
        }
    }
}

impl Pool {
    pub fn new(name: String, members: Vec<Member>) -> Pool {
        let sent = members.iter().map(|_| AtomicU64::new(0)).collect();
        Pool {
            name,
            members,
            sent,
        }
    }

    /// The source for a new connection that expects to send `expected`
    /// messages: the one furthest behind its weight's share of the pool's
    /// messages (sent, and reserved by connections still open) that has a
    /// connection to spare and is not `full` (a warming source over today's
    /// volume), the heavier first on a tie; `None` if none has.
    /// The expected messages are reserved at once, so connections opened
    /// together spread over the sources.
    pub fn choose(
        self: &Arc<Self>,
        expected: u64,
        full: &dyn Fn(&Member) -> bool,
    ) -> Option<SourceLease> {
        let mut order: Vec<(f64, u32, usize)> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let sent = self.sent[i].load(Ordering::Relaxed) as f64;
                (sent / f64::from(m.weight), m.weight, i)
            })
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        order.into_iter().find_map(|(_, _, i)| {
            let m = &self.members[i];
            if full(m) {
                return None;
            }
            let slot = match m.def.totals.connections {
                Some(max) => Some(m.shared.open_connection(max)?),
                None => None,
            };
            self.sent[i].fetch_add(expected, Ordering::Relaxed);
            Some(SourceLease {
                pool: self.clone(),
                member: i,
                reserved: expected,
                used: std::cell::Cell::new(0),
                _slot: slot,
                warm: None,
                asked: None,
                overflow_on: None,
                pair: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, weight: u32, connections: Option<u32>) -> Member {
        Member {
            name: name.into(),
            def: SourceDef {
                address: "127.0.0.1".parse().unwrap(),
                ehlo: None,
                totals: Totals {
                    connections,
                    message_rate: None,
                    connection_rate: None,
                },
                warmup: None,
            },
            weight,
            shared: Arc::new(SharedLimits::new(Instant::now())),
        }
    }

    #[test]
    fn choices_follow_the_weights_and_the_connection_limits() {
        let two = || vec![member("a", 1, None), member("b", 3, None)];
        let pool = Arc::new(Pool::new("p".into(), two()));
        let mut counts = [0; 2];
        for _ in 0..400 {
            let e = pool.choose(1, &|_| false).unwrap();
            counts[e.member] += 1;
            e.sent();
        }
        assert_eq!(counts, [100, 300]);
        // Four connections opened together, each expecting 10 messages:
        // three to b and one to a, the heavier first on the tie.
        let fresh = Arc::new(Pool::new("f".into(), two()));
        let open: Vec<_> = (0..4)
            .map(|_| fresh.choose(10, &|_| false).unwrap())
            .collect();
        assert_eq!(open.iter().filter(|e| e.member == 1).count(), 3);
        assert_eq!(open[0].member, 1);
        drop(open);
        let left: u64 = fresh.sent.iter().map(|n| n.load(Ordering::Relaxed)).sum();
        assert_eq!(left, 0, "unsent reservations are given back");
        let capped = Arc::new(Pool::new("c".into(), vec![member("a", 1, Some(1))]));
        let held = capped.choose(1, &|_| false).unwrap();
        assert!(
            capped.choose(1, &|_| false).is_none(),
            "its one connection is taken"
        );
        drop(held);
        assert!(capped.choose(1, &|_| false).is_some());
    }
}
