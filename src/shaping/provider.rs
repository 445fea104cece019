//! Limits that span cores: a provider's connections and rates are summed
//! over all of its domains, and different cores own different domains.
//!
//! Design: each provider has one [`SharedLimits`] that every core updates
//! with atomic compare-and-swap, never a lock. The connection count is
//! raised only while it is below the limit, so the total across cores never
//! passes it; each rate is a GCRA whose theoretical arrival time is one
//! atomic (nanoseconds since a shared epoch), advanced only by the core
//! whose event conforms. A core that is refused waits (a message) or looks
//! again later (a connection); nothing is leased, so no share is stranded on
//! a core without mail. The cost is one contended cache line per provider,
//! touched once per message and once per connection.
//!
//! The state outlives reloads: a provider keeps its counts when the file is
//! read again, so connections already open still count.
//!
//! [`ProviderHandle`] is a domain's provider as one connection holds it:
//! its totals and these shared counts.

use super::backoff::SharedBackoff;
use super::rate::Rate;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How long a refused connection counts as someone wanting a place:
/// longer than the wait before it asks again (`PROVIDER_FULL_RETRY`).
pub const WANTED_FOR: std::time::Duration = std::time::Duration::from_millis(200);

/// One provider's counts, shared by every core.
#[derive(Debug)]
pub struct SharedLimits {
    epoch: Instant,
    connections: AtomicU32,
    message_tat_ns: AtomicU64,
    connection_tat_ns: AtomicU64,
    /// When a connection was last refused for the count (ns after the
    /// epoch, 0: never): an idle connection holding a place gives it up
    /// while others want one.
    refused_ns: AtomicU64,
    /// A suspension or throttle from one of the provider's rules.
    pub backoff: SharedBackoff,
    /// Suspensions of one tenant or campaign at the whole provider, by
    /// "t\0NAME" or "c\0NAME", until when; `lane_holds_until_ns` (the
    /// latest end, ns after the epoch) says whether any is in force without
    /// taking the lock.
    lane_holds: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    lane_holds_until_ns: AtomicU64,
}

/// Most tenant and campaign suspensions one provider holds at once.
pub const PROVIDER_LANE_HOLDS_MAX: usize = 10_000;

impl SharedLimits {
    pub fn new(epoch: Instant) -> SharedLimits {
        SharedLimits {
            epoch,
            connections: AtomicU32::new(0),
            message_tat_ns: AtomicU64::new(0),
            connection_tat_ns: AtomicU64::new(0),
            refused_ns: AtomicU64::new(0),
            backoff: SharedBackoff::default(),
            lane_holds: Default::default(),
            lane_holds_until_ns: AtomicU64::new(0),
        }
    }

    /// Holds the mail of a tenant or campaign (`key`) for the provider on
    /// every core until `until`; false if the table is full of holds in
    /// force.
    pub fn hold_lane(&self, key: String, until: Instant, now: Instant) -> bool {
        let mut holds = self.lane_holds.lock().expect("not poisoned");
        holds.retain(|_, t| *t > now);
        if holds.len() >= PROVIDER_LANE_HOLDS_MAX {
            return false;
        }
        let at = holds.entry(key).or_insert(until);
        *at = (*at).max(until);
        let until_ns = until.saturating_duration_since(self.epoch).as_nanos() as u64;
        self.lane_holds_until_ns
            .fetch_max(until_ns, Ordering::AcqRel);
        true
    }

    /// Until when the provider holds any of `keys`; `None`: not held.
    pub fn lane_held(&self, keys: impl Iterator<Item = String>, now: Instant) -> Option<Instant> {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        if self.lane_holds_until_ns.load(Ordering::Acquire) <= now_ns {
            return None;
        }
        let holds = self.lane_holds.lock().expect("not poisoned");
        keys.filter_map(|k| holds.get(&k).copied())
            .filter(|t| *t > now)
            .max()
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// A connection slot if fewer than `max` are open, all cores together.
    pub fn open_connection(self: &Arc<Self>, max: u32) -> Option<ConnectionSlot> {
        let mut open = self.connections.load(Ordering::Acquire);
        loop {
            if open >= max {
                self.note_wanted();
                return None;
            }
            match self.connections.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(ConnectionSlot(self.clone())),
                Err(now) => open = now,
            }
        }
    }

    /// Records that a connection wanted a place and found none.
    pub fn note_wanted(&self) {
        let now = (self.epoch.elapsed().as_nanos() as u64).max(1);
        self.refused_ns.store(now, Ordering::Relaxed);
    }

    /// Whether a connection was refused a place in the last
    /// [`WANTED_FOR`]: then an idle holder should let its place go.
    pub fn place_wanted(&self) -> bool {
        let refused = self.refused_ns.load(Ordering::Relaxed);
        refused != 0
            && (self.epoch.elapsed().as_nanos() as u64).saturating_sub(refused)
                < WANTED_FOR.as_nanos() as u64
    }

    /// Connections open now, all cores together.
    pub fn open_connections(&self) -> u32 {
        self.connections.load(Ordering::Acquire)
    }

    /// When the next message conforms to `rate`; `None`: now. Takes
    /// nothing.
    pub fn message_due(&self, rate: &Rate, now: Instant) -> Option<Instant> {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let interval = rate.interval().as_nanos() as u64;
        let tolerance = interval.saturating_mul(rate.burst.saturating_sub(1));
        let tat = self.message_tat_ns.load(Ordering::Acquire).max(now_ns);
        let earliest = tat.saturating_sub(tolerance);
        (earliest > now_ns).then(|| self.epoch + std::time::Duration::from_nanos(earliest))
    }

    pub fn take_message(&self, rate: &Rate, now: Instant) -> Result<(), Instant> {
        self.take(&self.message_tat_ns, rate, now)
    }

    pub fn take_connection(&self, rate: &Rate, now: Instant) -> Result<(), Instant> {
        self.take(&self.connection_tat_ns, rate, now)
    }

    /// The GCRA of [`super::rate::Gcra`] on one atomic.
    fn take(&self, tat_ns: &AtomicU64, rate: &Rate, now: Instant) -> Result<(), Instant> {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let interval = rate.interval().as_nanos() as u64;
        let tolerance = interval.saturating_mul(rate.burst.saturating_sub(1));
        let mut seen = tat_ns.load(Ordering::Acquire);
        loop {
            let tat = seen.max(now_ns);
            let earliest = tat.saturating_sub(tolerance);
            if earliest > now_ns {
                return Err(self.epoch + std::time::Duration::from_nanos(earliest));
            }
            match tat_ns.compare_exchange_weak(
                seen,
                tat + interval,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => seen = now,
            }
        }
    }
}

/// One open connection counted against its provider; dropping it frees
/// the place.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<SharedLimits>);

impl ConnectionSlot {
    /// The counts this is a place in.
    pub fn limits(&self) -> &SharedLimits {
        &self.0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A domain's provider as a connection holds it: its limits (the totals)
/// and the counts shared by every core.
#[derive(Clone)]
pub struct ProviderHandle {
    pub name: String,
    pub totals: super::rules::Totals,
    /// What each source may send the provider.
    pub per_source: Option<super::rules::Totals>,
    pub shared: Arc<SharedLimits>,
}

/// How long a connection that found its provider's connections all taken
/// waits before trying again (a slot freed on another core cannot wake
/// this one).
pub const PROVIDER_FULL_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

impl ProviderHandle {
    /// A connection within the provider's totals, or when to try again.
    pub fn open_connection(&self, now: Instant) -> Result<Option<ConnectionSlot>, Instant> {
        let effect = self.shared.backoff.load(self.shared.epoch()).effect(now);
        if let Some(until) = effect.suspended_until {
            return Err(until);
        }
        let slot = match self.totals.connections {
            Some(max) => {
                let max = effect.connections(max);
                Some(
                    self.shared
                        .open_connection(max)
                        .ok_or(now + PROVIDER_FULL_RETRY)?,
                )
            }
            None => None,
        };
        if let Some(rate) = &self.totals.connection_rate {
            self.shared
                .take_connection(&rate.scaled(effect.scale), now)?;
        }
        Ok(slot)
    }

    /// Whether another connection wants a place in the provider's
    /// connection count.
    pub fn place_wanted(&self) -> bool {
        self.totals.connections.is_some() && self.shared.place_wanted()
    }

    /// When the provider's total rate lets the next message go; `None`:
    /// now.
    pub fn message_due(&self, now: Instant) -> Option<Instant> {
        self.shared.message_due(&self.message_rate(now)?, now)
    }

    /// One message within the provider's total rate, or when one conforms.
    pub fn take_message(&self, now: Instant) -> Result<(), Instant> {
        match self.message_rate(now) {
            Some(rate) => self.shared.take_message(&rate, now),
            None => Ok(()),
        }
    }

    /// The provider's total message rate at `now`, under its throttle.
    fn message_rate(&self, now: Instant) -> Option<super::rate::Rate> {
        let effect = self.shared.backoff.load(self.shared.epoch()).effect(now);
        Some(self.totals.message_rate?.scaled(effect.scale))
    }
}

impl ProviderHandle {
    pub(super) fn of(p: &super::rules::Provider) -> ProviderHandle {
        ProviderHandle {
            name: p.name.clone(),
            totals: p.totals,
            per_source: p.per_source,
            shared: p.shared.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Four threads race for connections and messages: the totals never
    /// pass the limits.
    #[test]
    fn the_total_across_threads_never_passes_the_limit() {
        let epoch = Instant::now();
        let shared = Arc::new(SharedLimits::new(epoch));
        let rate = Rate::parse("1000/s,burst=10").unwrap();
        let at = epoch + Duration::from_secs(1);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let slots: Vec<_> = (0..10).filter_map(|_| shared.open_connection(7)).collect();
                    let sent = (0..100)
                        .filter(|_| shared.take_message(&rate, at).is_ok())
                        .count();
                    (slots, sent)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let slots: usize = results.iter().map(|(s, _)| s.len()).sum();
        let sent: usize = results.iter().map(|(_, n)| n).sum();
        assert_eq!(slots, 7);
        assert_eq!(shared.open_connections(), 7);
        assert_eq!(sent, 10, "the burst, at one instant");
        drop(results);
        assert_eq!(shared.open_connections(), 0);
    }
}
