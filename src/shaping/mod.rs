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
//! Never blocks a core: the published rules are behind a mutex that a core
//! touches only after a reload (it watches an atomic generation first).
//!
//! Not yet built (issue 11): provider rules (MX suffixes, summed over
//! domains and cores), reply-driven backoff and adaptive mode, egress
//! sources and pools, warm-up, tenants. The file parser refuses those
//! sections with a message naming the line, rather than ignoring them.

pub mod explain;
pub mod file;
pub mod rate;
pub mod rules;

pub use file::ShapingError;
pub use rules::{Limits, Resolved, Retry, Rules};

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

/// Reads and checks a shaping file.
pub fn load(path: &Path) -> Result<Rules, ShapingError> {
    let text = std::fs::read_to_string(path).map_err(|e| ShapingError {
        path: path.display().to_string(),
        line: 0,
        key: "(file)".into(),
        reason: e.to_string(),
    })?;
    file::parse(&text, &path.display().to_string())
}

/// The rules in force, shared by every core.
pub struct Published {
    generation: AtomicU64,
    current: Mutex<Arc<Resolved>>,
    file: Option<PathBuf>,
    cfg: Arc<Config>,
}

impl Published {
    /// The rules of the configured file (already checked), or the
    /// configuration's own limits when there is none.
    pub fn new(cfg: Arc<Config>, rules: Option<Rules>) -> Published {
        let resolved = rules.unwrap_or_default().resolve(&cfg);
        Published {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(resolved)),
            file: cfg.delivery.shaping_file.clone(),
            cfg,
        }
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
        *self.current.lock().expect("no panic while holding it") =
            Arc::new(rules.resolve(&self.cfg));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(Some(count))
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
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
}

#[derive(Default)]
struct Buckets {
    messages: Gcra,
    connections: Gcra,
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
        }
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
        self.refresh();
        self.rules.borrow().limits(domain)
    }

    /// Takes up rules published since this core last looked.
    fn refresh(&self) -> u64 {
        let generation = self.published.generation.load(Ordering::Acquire);
        if generation != self.seen.get() {
            *self.rules.borrow_mut() = self.published.current.lock().expect("not poisoned").clone();
            self.seen.set(generation);
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
        if buckets.len() >= BUCKETS_SWEEP_AT && !buckets.contains_key(domain) {
            buckets.retain(|_, b| !(b.messages.is_idle(now) && b.connections.is_idle(now)));
        }
        match buckets.get_mut(domain) {
            Some(b) => f(b),
            None => f(buckets.entry(domain.into()).or_default()),
        }
    }
}
