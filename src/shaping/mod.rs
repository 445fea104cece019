//! Traffic shaping: how fast, over how many connections and how often mail
//! leaves for each destination domain, from the operator's shaping file
//! (`--shaping FILE`, `delivery.shaping_file`).
//!
//! The rules are built once per load and published whole ([`Published`]);
//! SIGHUP reloads the file, and a bad file leaves the old rules in force.
//! Each core keeps its own [`Shaper`]: the rules it last saw and the rate
//! state (GCRA) of the destinations it owns. A destination domain is owned
//! by exactly one core, so its limits need no coordination between cores:
//! "connections = 10" is 10 in all, held by the owning core.
//!
//! A provider rule (`[provider.NAME]`, domains whose MX hosts all end in
//! its suffixes) spans domains that different cores own: its connections
//! and rates are totals, held with shared atomics ([`provider`]). A core
//! learns a domain's provider when it resolves the domain's MX hosts for a
//! connection; until then the domain has the default limits.
//!
//! Never blocks a core: the published rules are behind a mutex that a core
//! touches only after a reload (it watches an atomic generation first).
//!
//! Reply rules (`backoff`), adaptive mode, egress sources and pools
//! (`egress`) and warm-up plans (`warmup`) are built here too. A reply
//! rule or `adaptive = true` in a provider rule acts on the provider's
//! totals for every core (its suspension, throttle, reroute and adaptive
//! share live in its [`SharedLimits`]).
//!
//! A provider's `per_source` limits hold for each source with that
//! provider, shared like the provider's own (one [`SharedLimits`] per pair,
//! made on first use and kept across reloads). A connection idle on a place
//! in a count that spans domains (a provider's, a source's, a pair's) gives
//! it up as soon as another connection is refused one.
//!
//! Tenants (`[tenant.NAME]`): a message names its tenant and campaign in
//! header fields that the listener moves into the spool record's envelope;
//! the queues keep a lane per tenant and campaign (`crate::queue`), and
//! here a tenant's pool, its total message rate (shared by every core, like
//! a provider's) and suspensions of one tenant or campaign at one
//! destination are held.

pub mod backoff;
pub mod egress;
pub mod explain;
pub mod file;
mod operated;
pub mod operator;
pub mod provider;
pub mod rate;
pub mod rules;
pub mod tenant;
pub mod warmup;

pub use file::ShapingError;
pub use provider::{ProviderHandle, PROVIDER_FULL_RETRY};
pub use rules::{Limits, Resolved, Retry, Rules};
pub use tenant::TenantPlaces;

use provider::SharedLimits;

use crate::config::Config;
use rate::{Gcra, Rate};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Past this many destinations with rate state, a core forgets those whose
/// state says nothing (their limiters are idle).
const BUCKETS_SWEEP_AT: usize = 10_000;

/// Reads and checks a shaping file, also that this host can send from
/// every source address in it.
pub fn load(path: &Path) -> Result<Rules, ShapingError> {
    let text = std::fs::read_to_string(path).map_err(|e| ShapingError {
        path: path.display().to_string(),
        line: 0,
        key: "(file)".into(),
        reason: e.to_string(),
    })?;
    let rules = file::parse(&text, &path.display().to_string())?;
    for (name, address) in rules.source_addresses() {
        crate::delivery::check_source(address).map_err(|e| ShapingError {
            path: path.display().to_string(),
            line: text
                .lines()
                .position(|l| l.trim() == format!("[source.{name}]"))
                .map_or(0, |i| i + 1),
            key: format!("source.{name}.address"),
            reason: format!("this host cannot send from {address}: {e}"),
        })?;
    }
    Ok(rules)
}

/// The rules in force, shared by every core.
pub struct Published {
    generation: AtomicU64,
    current: Mutex<Arc<Resolved>>,
    /// Each provider's cross-core counts by name, kept across reloads.
    shared: Mutex<HashMap<String, Arc<SharedLimits>>>,
    epoch: Instant,
    file: Option<PathBuf>,
    cfg: Arc<Config>,
    /// Every warming source's progress, kept across reloads.
    pub warmups: Arc<warmup::Warmups>,
}

impl Published {
    /// The rules of the configured file (already checked), or the
    /// configuration's own limits when there is none.
    pub fn new(cfg: Arc<Config>, rules: Option<Rules>, warmups: Arc<warmup::Warmups>) -> Published {
        let published = Published {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(
                Rules::default().resolve(&cfg, &mut |_| unreachable!()),
            )),
            shared: Mutex::default(),
            epoch: Instant::now(),
            file: cfg.delivery.shaping_file.clone(),
            cfg,
            warmups,
        };
        let resolved = published.resolve(&rules.unwrap_or_default());
        *published.current.lock().expect("new") = Arc::new(resolved);
        published
    }

    fn resolve(&self, rules: &Rules) -> Resolved {
        let mut shared = self.shared.lock().expect("not poisoned");
        rules.resolve(&self.cfg, &mut |name| {
            shared
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(SharedLimits::new(self.epoch)))
                .clone()
        })
    }

    /// Reads the file again. On success the cores pick the new rules up
    /// for every connection they open and every retry they schedule from
    /// now on; on error nothing changes. Returns the number of
    /// destination rules.
    pub fn reload(&self) -> Result<Option<usize>, ShapingError> {
        let Some(path) = &self.file else {
            return Ok(None);
        };
        let rules = load(path)?;
        let count = rules.destination_count();
        let resolved = self.resolve(&rules);
        *self.current.lock().expect("no panic while holding it") = Arc::new(resolved);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(Some(count))
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The counts of `source` with `provider` (its `per_source` limits),
    /// shared by every core and kept across reloads.
    fn pair_limits(&self, source: &str, provider: &str) -> Arc<SharedLimits> {
        let mut shared = self.shared.lock().expect("not poisoned");
        shared
            .entry(format!("source {source} provider {provider}"))
            .or_insert_with(|| Arc::new(SharedLimits::new(self.epoch)))
            .clone()
    }

    /// Ends the warm-up day (manual calendar): every core looks at its
    /// domains again, as after a reload. Returns the new day.
    pub fn end_warmup_day(&self) -> Option<u32> {
        let day = self.warmups.calendar.advance()?;
        self.generation.fetch_add(1, Ordering::Release);
        Some(day)
    }
}

/// One core's view of the rules and the rate state of its destinations.
pub struct Shaper {
    published: Arc<Published>,
    seen: Cell<u64>,
    /// The generation the core's poll last acted on.
    polled: Cell<u64>,
    rules: RefCell<Arc<Resolved>>,
    buckets: RefCell<HashMap<Box<str>, Buckets>>,
    /// Domains with a timer pending to look at them again.
    waking: RefCell<std::collections::HashSet<Box<str>>>,
    /// The size at which `buckets` is next swept of idle state.
    sweep_at: Cell<usize>,
    /// The provider (an index into the rules in force) of each domain
    /// whose MX hosts matched one; forgotten on reload.
    providers: RefCell<HashMap<Box<str>, usize>>,
    /// The limits of those domains (bounded and forgotten with them).
    combined: RefCell<HashMap<Box<str>, Arc<Limits>>>,
    /// Warm-up progress handles by "SOURCE\0PROVIDER", so the shared
    /// table's mutex is taken once per pair, not per connection.
    progress: RefCell<HashMap<String, Arc<warmup::Progress>>>,
    /// Suspensions of one tenant or campaign at one destination, until
    /// when, by "DOMAIN\0t\0TENANT" or "DOMAIN\0c\0CAMPAIGN".
    lane_holds: RefCell<HashMap<String, Instant>>,
    /// Counts of a source with a provider, by "SOURCE\0PROVIDER".
    pairs: RefCell<HashMap<String, Arc<SharedLimits>>>,
    /// The pool of each provider's reroute as this core last read it, with
    /// the reroute's generation (forgotten on reload).
    provider_reroutes: RefCell<HashMap<usize, (u64, Arc<egress::Pool>)>>,
    /// The latest end of the holds in `lane_holds`.
    lane_holds_until: Cell<Option<Instant>>,
    /// The operator's actions in force (admin API), the same on every core.
    operator: operator::Actions,
}

/// Most tenant and campaign suspensions a core holds at once; past it the
/// ended ones are forgotten, and if none has ended the new one is not kept
/// (its mail is retried as a deferral instead).
const LANE_HOLDS_MAX: usize = 100_000;

/// Most pools one connection's choice goes through (a warming source's
/// overflow pool may have warming sources that overflow in turn).
const OVERFLOW_HOPS_MAX: usize = 4;

/// Past this many domains with a known provider, a core forgets them all
/// (each is learnt again at its next connection).
const PROVIDER_DOMAINS_MAX: usize = 100_000;

#[derive(Default)]
struct Buckets {
    messages: Gcra,
    connections: Gcra,
    backoff: backoff::Backoff,
    /// A reroute rule in force: the pool, until when.
    reroute: Option<(Arc<egress::Pool>, Instant)>,
}

/// What a reply rule did, for the delivery log and the reply's recipients.
#[derive(Debug, Clone)]
pub struct Reaction {
    pub rule: backoff::ResponseRule,
    /// "destination DOMAIN" or "provider NAME".
    pub target: String,
}

impl Shaper {
    pub fn new(published: Arc<Published>) -> Shaper {
        let seen = published.generation.load(Ordering::Acquire);
        let rules = published.current.lock().expect("not poisoned").clone();
        Shaper {
            published,
            seen: Cell::new(seen),
            polled: Cell::new(seen),
            rules: RefCell::new(rules),
            buckets: RefCell::default(),
            waking: RefCell::default(),
            sweep_at: Cell::new(BUCKETS_SWEEP_AT),
            providers: RefCell::default(),
            combined: RefCell::default(),
            progress: RefCell::default(),
            lane_holds: RefCell::default(),
            pairs: RefCell::default(),
            provider_reroutes: RefCell::default(),
            lane_holds_until: Cell::new(None),
            operator: operator::Actions::default(),
        }
    }

    /// The counts of `source` with `provider`, cached on this core.
    fn pair(&self, source: &str, provider: &str) -> Arc<SharedLimits> {
        let key = format!("{source}\0{provider}");
        if let Some(p) = self.pairs.borrow().get(&key) {
            return p.clone();
        }
        let p = self.published.pair_limits(source, provider);
        let mut cache = self.pairs.borrow_mut();
        if cache.len() >= warmup::PAIRS_MAX {
            cache.clear();
        }
        cache.insert(key, p.clone());
        p
    }

    /// The rule of tenant `name`, if the rules have one.
    pub fn tenant(&self, name: &str) -> Option<Arc<rules::Tenant>> {
        if name.is_empty() {
            return None;
        }
        self.refresh();
        self.rules.borrow().tenant(name).cloned()
    }

    /// The pool mail of `tenant` (empty: none) for `domain` goes out from:
    /// a reroute's while one is in force, else the tenant's, else the
    /// domain's rule's; `None`: `delivery.source_address`.
    pub fn pool_for(&self, domain: &str, tenant: &str, now: Instant) -> Option<Arc<egress::Pool>> {
        if let Some(operated) = self.operated_pool(domain, tenant, now) {
            return Some(operated);
        }
        if let Some(rerouted) = self.rerouted(domain, now) {
            return Some(rerouted);
        }
        match self.tenant(tenant).and_then(|t| t.pool.clone()) {
            Some(pool) => Some(pool),
            None => self.limits(domain).pool.clone(),
        }
    }

    /// Until when the mail of `tags` for `domain` is held by a tenant or
    /// campaign suspension; `None`: it is not.
    pub fn lane_held(
        &self,
        domain: &str,
        tags: &crate::queue::Tags,
        now: Instant,
    ) -> Option<Instant> {
        let named = || {
            [("t", &tags.tenant), ("c", &tags.campaign)]
                .into_iter()
                .filter(|(_, name)| !name.is_empty())
        };
        let by_provider = self.providers.borrow().get(domain).and_then(|&index| {
            let rules = self.rules.borrow();
            let keys = named().map(|(kind, name)| format!("{kind}\0{name}"));
            rules.provider(index).shared.lane_held(keys, now)
        });
        let by_provider = by_provider.max(self.operated_lane(tags, now));
        if self.lane_holds_until.get().is_none_or(|until| until <= now) {
            // Every hold has ended: forget them, so tagged mail costs no
            // lookups from here on.
            if self.lane_holds_until.take().is_some() {
                self.lane_holds.borrow_mut().clear();
            }
            return by_provider;
        }
        let holds = self.lane_holds.borrow();
        let own = named()
            .filter_map(|(kind, name)| holds.get(&format!("{domain}\0{kind}\0{name}")))
            .filter(|until| **until > now)
            .max()
            .copied();
        own.max(by_provider)
    }

    fn hold_lane(&self, key: String, until: Instant, now: Instant) -> bool {
        let mut holds = self.lane_holds.borrow_mut();
        if holds.len() >= LANE_HOLDS_MAX {
            holds.retain(|_, t| *t > now);
            if holds.len() >= LANE_HOLDS_MAX {
                return false;
            }
        }
        let at = holds.entry(key).or_insert(until);
        *at = (*at).max(until);
        let latest = self.lane_holds_until.get().map_or(until, |t| t.max(until));
        self.lane_holds_until.set(Some(latest));
        true
    }

    /// Today for warm-up.
    pub fn today(&self) -> u32 {
        self.published.warmups.calendar.today()
    }

    /// The progress of a warming `source` with `provider`.
    fn progress(&self, source: &str, provider: &str) -> Option<Arc<warmup::Progress>> {
        let key = format!("{source}\0{provider}");
        if let Some(p) = self.progress.borrow().get(&key) {
            return Some(p.clone());
        }
        let p = self.published.warmups.progress(source, provider)?;
        let mut cache = self.progress.borrow_mut();
        if cache.len() >= warmup::PAIRS_MAX {
            cache.clear();
        }
        cache.insert(key, p.clone());
        Some(p)
    }

    /// The source a new connection (to a domain in `provider`, if it has
    /// one) goes out from, expecting to send `expected` messages: from
    /// `pool` (the lane's, [`Shaper::pool_for`]), skipping warming sources over today's volume for the
    /// provider; when every source is full, from the overflow pool of a
    /// full one. `Ok(None)`: the domain has no pool. `Err`: no source has
    /// room, and when to look again (tomorrow if every one is full and
    /// their plans keep the mail queued).
    pub fn source_for(
        &self,
        pool: Option<Arc<egress::Pool>>,
        provider: Option<&ProviderHandle>,
        expected: u64,
        now: Instant,
    ) -> Result<Option<egress::SourceLease>, Instant> {
        let Some(mut pool) = pool else {
            return Ok(None);
        };
        let asked = pool.name.clone();
        let per_source = provider.and_then(|p| p.per_source);
        let provider = provider.map_or(warmup::OTHER, |p| p.name.as_str());
        let today = self.today();
        let warm = |m: &egress::Member| {
            let plan = m.def.warmup.clone()?;
            Some((plan, self.progress(&m.name, provider)?))
        };
        let warm_full =
            |m: &egress::Member| warm(m).is_some_and(|(plan, p)| !p.has_room(&plan, today));
        let pair_max = per_source.and_then(|t| t.connections);
        let pair_full = |m: &egress::Member| {
            pair_max.is_some_and(|max| {
                let pair = self.pair(&m.name, provider);
                let full = pair.open_connections() >= max;
                if full {
                    pair.note_wanted();
                }
                full
            })
        };
        let held = |m: &egress::Member| self.source_held(&m.name, now);
        if let Some(until) = pool.members.iter().map(held).min().flatten() {
            // Every source of the pool is suspended by the operator.
            return Err(until);
        }
        let full = |m: &egress::Member| held(m).is_some() || warm_full(m) || pair_full(m);
        for _ in 0..OVERFLOW_HOPS_MAX {
            if let Some(mut lease) = pool.choose(expected, &full) {
                if let Some(limits) = per_source {
                    let shared = self.pair(&lease.source().name, provider);
                    let slot = match limits.connections {
                        // Another core took the last since the choice.
                        Some(max) => Some(
                            shared
                                .open_connection(max)
                                .ok_or(now + PROVIDER_FULL_RETRY)?,
                        ),
                        None => None,
                    };
                    lease.pair = Some(egress::PairLimits {
                        shared,
                        message_rate: limits.message_rate,
                        _slot: slot,
                    });
                }
                lease.warm = warm(lease.source()).map(|(plan, progress)| egress::Warm {
                    plan,
                    progress,
                    provider: provider.to_string(),
                });
                if pool.name != asked {
                    lease.overflow_on = Some(today);
                }
                lease.asked = Some(asked);
                return Ok(Some(lease));
            }
            let overflow = pool.members.iter().filter(|m| warm_full(m)).find_map(|m| {
                match &m.def.warmup.as_ref()?.overflow {
                    warmup::Overflow::Pool(name) => Some(name.clone()),
                    warmup::Overflow::Queue => None,
                }
            });
            let next = overflow.and_then(|name| self.rules.borrow().pool(&name).cloned());
            match next {
                Some(next) if next != pool => pool = next,
                _ if pool.members.iter().all(&warm_full) => {
                    return Err(self.published.warmups.calendar.tomorrow_at(now))
                }
                _ => break,
            }
        }
        Err(now + PROVIDER_FULL_RETRY)
    }

    /// Finds the provider of `domain` from its MX hosts, remembers it for
    /// the domain's limits, and returns it for the connection to hold.
    pub fn note_provider<'a>(
        &self,
        domain: &str,
        mx_hosts: impl Iterator<Item = &'a str> + Clone,
    ) -> Option<ProviderHandle> {
        self.refresh();
        let rules = self.rules.borrow();
        let mut providers = self.providers.borrow_mut();
        let Some(index) = rules.provider_of(mx_hosts) else {
            providers.remove(domain);
            self.combined.borrow_mut().remove(domain);
            return None;
        };
        if providers.len() >= PROVIDER_DOMAINS_MAX {
            providers.clear();
            self.combined.borrow_mut().clear();
        }
        providers.insert(domain.into(), index);
        self.combined.borrow_mut().remove(domain);
        Some(ProviderHandle::of(rules.provider(index)))
    }

    /// When `domain`'s next message conforms to `rate`; `None`: now.
    pub fn message_due(&self, domain: &str, rate: &Rate, now: Instant) -> Option<Instant> {
        let buckets = self.buckets.borrow();
        buckets.get(domain)?.messages.due(rate, now)
    }

    /// Claims the one timer `domain` may have pending; false if it has one.
    pub fn claim_wake(&self, domain: &str) -> bool {
        self.waking.borrow_mut().insert(domain.into())
    }

    pub fn release_wake(&self, domain: &str) {
        self.waking.borrow_mut().remove(domain);
    }

    /// The limits for `domain` under the rules now in force.
    pub fn limits(&self, domain: &str) -> Arc<Limits> {
        let limits = self.rule_limits(domain);
        self.operated_limits(domain, limits)
    }

    /// The limits for `domain` under the rules alone.
    fn rule_limits(&self, domain: &str) -> Arc<Limits> {
        self.refresh();
        let Some(provider) = self.providers.borrow().get(domain).copied() else {
            return self.rules.borrow().limits(domain, None);
        };
        // A domain in a provider with a rule of its own has limits made of
        // both: made once, not on every message.
        if let Some(limits) = self.combined.borrow().get(domain) {
            return limits.clone();
        }
        let limits = self.rules.borrow().limits(domain, Some(provider));
        self.combined
            .borrow_mut()
            .insert(domain.into(), limits.clone());
        limits
    }

    /// Takes up rules published since this core last looked.
    fn refresh(&self) -> u64 {
        let generation = self.published.generation.load(Ordering::Acquire);
        if generation != self.seen.get() {
            *self.rules.borrow_mut() = self.published.current.lock().expect("not poisoned").clone();
            self.seen.set(generation);
            self.providers.borrow_mut().clear();
            self.combined.borrow_mut().clear();
            self.provider_reroutes.borrow_mut().clear();
        }
        generation
    }

    /// For the core's poll: true once after each reload, when every domain
    /// should be looked at again (a domain waiting for a rate of the old
    /// rules is looked at now).
    pub fn reloaded(&self) -> bool {
        let generation = self.refresh();
        if generation == self.polled.get() {
            return false;
        }
        self.polled.set(generation);
        self.waking.borrow_mut().clear();
        true
    }

    /// Runs `reply` through `domain`'s reply rules (its own, its
    /// provider's, the default's); the first that matches acts at once. A
    /// rule that suspends a tenant or campaign matches only a message that
    /// names one (`tags`).
    pub fn react(
        &self,
        domain: &str,
        reply: &str,
        tags: (&str, &str),
        now: Instant,
    ) -> Option<Reaction> {
        let limits = self.limits(domain);
        let lane_of = |lane: backoff::Lane| match lane {
            backoff::Lane::Tenant => ("t", "tenant", tags.0),
            backoff::Lane::Campaign => ("c", "campaign", tags.1),
        };
        let rule = limits
            .on_response
            .iter()
            .find(|r| r.matches(reply) && r.lane.is_none_or(|lane| !lane_of(lane).2.is_empty()))?;
        if let Some(lane) = rule.lane {
            let (kind, what, name) = lane_of(lane);
            let until = now + rule.duration;
            if rule.scope == backoff::Scope::Provider {
                // Held for the whole provider, on every core.
                let index = *self.providers.borrow().get(domain)?;
                let rules = self.rules.borrow();
                let p = rules.provider(index);
                if !p.shared.hold_lane(format!("{kind}\0{name}"), until, now) {
                    return None;
                }
                return Some(Reaction {
                    rule: rule.clone(),
                    target: format!("{what} {name} at provider {}", p.name),
                });
            }
            if !self.hold_lane(format!("{domain}\0{kind}\0{name}"), until, now) {
                return None;
            }
            return Some(Reaction {
                rule: rule.clone(),
                target: format!("{what} {name} at destination {domain}"),
            });
        }
        let target = match rule.scope {
            backoff::Scope::Destination => {
                let pool = rule
                    .pool
                    .as_ref()
                    .and_then(|name| self.rules.borrow().pool(name).cloned());
                self.with_buckets(domain, now, |b| {
                    b.backoff.apply(rule, now);
                    if let Some(pool) = pool {
                        b.reroute = Some((pool, now + rule.duration));
                    }
                });
                format!("destination {domain}")
            }
            backoff::Scope::Provider => {
                let index = *self.providers.borrow().get(domain)?;
                let rules = self.rules.borrow();
                let p = rules.provider(index);
                p.shared.backoff.apply(rule, p.shared.epoch(), now);
                if let Some(pool) = rule.pool.as_ref().and_then(|name| rules.pool(name)) {
                    let until = now + rule.duration;
                    p.shared
                        .backoff
                        .reroute(pool.clone(), p.shared.epoch(), until);
                }
                format!("provider {}", p.name)
            }
        };
        Some(Reaction {
            rule: rule.clone(),
            target,
        })
    }

    /// The suspension and throttle `domain` is under at `now`: its own and
    /// its provider's together (the later end, the larger factor).
    pub fn backoff(&self, domain: &str, now: Instant) -> backoff::Effect {
        let own = self
            .buckets
            .borrow()
            .get(domain)
            .map_or(backoff::Effect::NONE, |b| b.backoff.effect(now));
        let Some(index) = self.providers.borrow().get(domain).copied() else {
            return self.operated_backoff(domain, own, now);
        };
        let rules = self.rules.borrow();
        let shared = &rules.provider(index).shared;
        let effect = own.and(shared.backoff.load(shared.epoch()).effect(now));
        drop(rules);
        self.operated_backoff(domain, effect, now)
    }

    /// Adaptive mode (`adaptive = true` for the destination): a 4xx reply
    /// (`pushed_back`) halves the share of its limits in use, at most once a
    /// second, and deliveries raise it by one message per rate period each
    /// second, back up to the limits. Returns the new share when it was cut.
    pub fn adapt(
        &self,
        domain: &str,
        pushed_back: bool,
        delivered: bool,
        now: Instant,
    ) -> Option<f64> {
        let limits = self.limits(domain);
        if !limits.adaptive {
            return None;
        }
        let steps = limits
            .message_rate
            .map_or(100, |r| r.count)
            .max(u64::from(limits.connections));
        self.with_buckets(domain, now, |b| {
            if pushed_back {
                return b.backoff.cut(now);
            }
            if delivered {
                b.backoff.raise(1.0 / steps as f64, now);
            }
            None
        })
    }

    /// Adaptive mode on the totals of `domain`'s provider (`adaptive = true`
    /// in its rule): a 4xx reply halves the share of the totals in use, for
    /// every core, at most once a second; deliveries raise it by one
    /// message per rate period each second. Returns the provider and its
    /// new share when it was cut.
    pub fn adapt_provider(
        &self,
        domain: &str,
        pushed_back: bool,
        delivered: bool,
        now: Instant,
    ) -> Option<(String, f64)> {
        let index = self.providers.borrow().get(domain).copied()?;
        let rules = self.rules.borrow();
        let p = rules.provider(index);
        if !p.adaptive {
            return None;
        }
        let (backoff, epoch) = (&p.shared.backoff, p.shared.epoch());
        if pushed_back {
            return backoff.cut(epoch, now).map(|level| (p.name.clone(), level));
        }
        if delivered {
            let steps = p
                .totals
                .message_rate
                .map_or(100, |r| r.count)
                .max(u64::from(p.totals.connections.unwrap_or(1)));
            backoff.raise(1.0 / steps as f64, epoch, now);
        }
        None
    }

    /// When `domain`'s provider (if it has one) lets its next message go;
    /// `None`: now, or no provider.
    pub fn provider_message_due(&self, domain: &str, now: Instant) -> Option<Instant> {
        let index = self.providers.borrow().get(domain).copied()?;
        ProviderHandle::of(self.rules.borrow().provider(index)).message_due(now)
    }

    /// The pool `domain`'s connections go out from: a reroute's while one
    /// is in force, else its rule's; `None`: `delivery.source_address`.
    pub fn pool(&self, domain: &str, now: Instant) -> Option<Arc<egress::Pool>> {
        if let Some(operated) = self.operated_pool(domain, "", now) {
            return Some(operated);
        }
        match self.rerouted(domain, now) {
            Some(pool) => Some(pool),
            None => self.limits(domain).pool.clone(),
        }
    }

    /// The pool a reroute rule sends `domain` to while it is in force:
    /// the destination's own, else its provider's.
    fn rerouted(&self, domain: &str, now: Instant) -> Option<Arc<egress::Pool>> {
        let own = self
            .buckets
            .borrow()
            .get(domain)
            .and_then(|b| b.reroute.clone())
            .filter(|(_, until)| *until > now)
            .map(|(pool, _)| pool);
        own.or_else(|| {
            let index = self.providers.borrow().get(domain).copied()?;
            let rules = self.rules.borrow();
            let shared = &rules.provider(index).shared;
            let generation = shared.backoff.reroute_in_force(shared.epoch(), now)?;
            let mut seen = self.provider_reroutes.borrow_mut();
            if let Some((g, pool)) = seen.get(&index) {
                if *g == generation {
                    return Some(pool.clone());
                }
            }
            let pool = shared.backoff.reroute_pool()?;
            seen.insert(index, (generation, pool.clone()));
            Some(pool)
        })
    }

    /// Takes one message of `domain`'s rate, or says when one conforms.
    pub fn take_message(&self, domain: &str, rate: &Rate, now: Instant) -> Result<(), Instant> {
        self.with_buckets(domain, now, |b| b.messages.take(rate, now))
    }

    /// Takes one new connection of `domain`'s rate, or says when.
    pub fn take_connection(&self, domain: &str, rate: &Rate, now: Instant) -> Result<(), Instant> {
        self.with_buckets(domain, now, |b| b.connections.take(rate, now))
    }

    fn with_buckets<T>(&self, domain: &str, now: Instant, f: impl FnOnce(&mut Buckets) -> T) -> T {
        let mut buckets = self.buckets.borrow_mut();
        if buckets.len() >= self.sweep_at.get() && !buckets.contains_key(domain) {
            buckets.retain(|_, b| {
                let rerouted = b.reroute.as_ref().is_some_and(|(_, until)| *until > now);
                rerouted
                    || !(b.messages.is_idle(now)
                        && b.connections.is_idle(now)
                        && b.backoff.is_idle(now))
            });
            // The next sweep waits until the table has doubled, so a table
            // of busy destinations is not swept on every new one.
            self.sweep_at.set((buckets.len() * 2).max(BUCKETS_SWEEP_AT));
        }
        match buckets.get_mut(domain) {
            Some(b) => f(b),
            None => f(buckets.entry(domain.into()).or_default()),
        }
    }
}
