//! Each core's queues of recipients waiting for delivery: one ready queue
//! per destination domain (only domains this core owns), and one timer heap
//! of entries waiting for their next retry.
//!
//! An [`Entry`] is one message's recipients in one domain. It holds the
//! message handle (shared by the entries of all its domains on this core)
//! and recipient indexes; never the body, which stays in the spool mapping.
//! The queues do no I/O: delivery pops from them and pushes back.
//!
//! A domain's ready entries are kept in lanes, one per tenant and campaign
//! the messages named (`X-Spate-Tenant`, `X-Spate-Campaign`; one lane for
//! mail that names none), taken in turn: a tenant whose mail must wait (its
//! rate, a suspension, another pool) never holds up the others'.

mod inspect;

pub use inspect::{DomainView, Found};

use crate::local::{Event, Notify};
use crate::message::MessageHandle;
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

/// Recipient indexes (into the spool record) of one entry; most entries
/// have one or two, held inline.
pub type Indexes = SmallVec<[u32; 2]>;

/// One message's recipients that go to one domain.
#[derive(Debug, Clone)]
pub struct Entry {
    pub message: Rc<MessageHandle>,
    /// Indexes of the record's recipients (as in `message.recipients`).
    pub recipients: Indexes,
    /// Delivery attempts made so far.
    pub attempts: u32,
}

/// A domain's ready work and the connections serving it.
#[derive(Default)]
pub struct DomainQueue {
    /// Lanes with entries (an emptied lane is dropped).
    lanes: Vec<Lane>,
    /// The lane to look at first next time (round robin).
    cursor: usize,
    /// Entries in all lanes.
    ready: usize,
    /// Delivery connections open (or opening) for this domain on this core.
    pub connections: u32,
    /// Bumped whenever work is added, so idle connections can wait for it.
    pub work: Rc<Event>,
}

/// The tenant and campaign a lane's messages named (empty: none).
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct Tags {
    pub tenant: Box<str>,
    pub campaign: Box<str>,
}

struct Lane {
    tags: Rc<Tags>,
    entries: VecDeque<Entry>,
}

/// Whether a connection may take a lane's next entry now.
pub enum Allow {
    Yes,
    /// Not before then (a rate, a suspension).
    Until(Instant),
    /// Never on this connection (it goes out from another pool).
    No,
}

/// What [`Queues::pop_allowed`] found.
pub enum Pop {
    Entry(Entry, Rc<Tags>),
    /// Every lane this connection may take must wait; the earliest may go
    /// then. True if other lanes may go now on a connection from another
    /// pool.
    Wait(Instant, bool),
    /// No lane may go on this connection, and some of them may go on a
    /// connection from another pool.
    Elsewhere,
    Empty,
}

/// Lanes one domain keeps on one core before a tenant's further campaigns
/// share one lane (campaign `*`); past twice as many, every further
/// tenant's mail shares the lane `*`/`*`, which no tenant rule limits.
/// Pushing and popping walk the lanes, so their number is kept small.
pub const LANES_MAX: usize = 256;
/// The name that stands for many tenants or campaigns sharing a lane.
pub const SHARED_LANE: &str = "*";

impl DomainQueue {
    fn push(&mut self, entry: Entry, front: bool) {
        let envelope = entry.message.envelope();
        let (mut tenant, mut campaign) = envelope.tags();
        let find = |lanes: &[Lane], tenant: &str, campaign: &str| {
            lanes
                .iter()
                .position(|l| *l.tags.tenant == *tenant && *l.tags.campaign == *campaign)
        };
        let mut at = find(&self.lanes, &tenant, &campaign);
        if at.is_none() && self.lanes.len() >= LANES_MAX {
            campaign = SHARED_LANE.into();
            if self.lanes.len() >= 2 * LANES_MAX {
                tenant = SHARED_LANE.into();
            }
            at = find(&self.lanes, &tenant, &campaign);
        }
        let lane = match at {
            Some(i) => &mut self.lanes[i],
            None => {
                self.lanes.push(Lane {
                    tags: Rc::new(Tags {
                        tenant: tenant.into(),
                        campaign: campaign.into(),
                    }),
                    entries: VecDeque::new(),
                });
                self.lanes.last_mut().expect("just pushed")
            }
        };
        drop(envelope);
        if front {
            lane.entries.push_front(entry);
        } else {
            lane.entries.push_back(entry);
        }
        self.ready += 1;
    }

    /// The first entry of the first lane (from the cursor on) that `allow`
    /// lets go; the cursor moves past it.
    fn pop(&mut self, mut allow: impl FnMut(&Tags) -> Allow) -> Pop {
        let n = self.lanes.len();
        let (mut wait, mut elsewhere): (Option<Instant>, bool) = (None, false);
        for k in 0..n {
            let i = (self.cursor + k) % n;
            match allow(&self.lanes[i].tags) {
                Allow::Yes => {
                    let lane = &mut self.lanes[i];
                    let entry = lane.entries.pop_front().expect("lanes are never empty");
                    let tags = lane.tags.clone();
                    self.ready -= 1;
                    // The next in turn is the lane after this one: at i
                    // itself once this one is gone (order is kept).
                    let next = if lane.entries.is_empty() {
                        self.lanes.remove(i);
                        i
                    } else {
                        i + 1
                    };
                    self.cursor = if self.lanes.is_empty() {
                        0
                    } else {
                        next % self.lanes.len()
                    };
                    return Pop::Entry(entry, tags);
                }
                Allow::Until(t) => wait = Some(wait.map_or(t, |w| w.min(t))),
                Allow::No => elsewhere = true,
            }
        }
        match (wait, elsewhere) {
            (Some(t), elsewhere) => Pop::Wait(t, elsewhere),
            (None, true) => Pop::Elsewhere,
            (None, false) => Pop::Empty,
        }
    }
}

/// An entry waiting for its retry. The domain is named by its number in
/// [`DomainNames`], not by a string of its own: a queue of a million
/// deferred messages holds a million of these.
struct Scheduled {
    /// Milliseconds after the queues' epoch, rounded up: never early.
    due_ms: u64,
    seq: u32,
    domain: u32,
    entry: Entry,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ms, self.seq) == (other.due_ms, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due_ms, self.seq).cmp(&(other.due_ms, other.seq))
    }
}

/// Counts for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSummary {
    /// Messages and recipients queued on this core since it started
    /// (recovered ones included), not what is queued now.
    pub messages_enqueued: u64,
    pub recipients_enqueued: u64,
    pub domains: usize,
    pub ready: usize,
    pub scheduled: usize,
}

/// The names of the domains this core has queued for, each held once and
/// numbered. Names are kept until the process ends: one per distinct
/// domain this core has scheduled a retry for, not one per message.
#[derive(Default)]
struct DomainNames {
    numbers: HashMap<Rc<str>, u32>,
    names: Vec<Rc<str>>,
}

impl DomainNames {
    fn number(&mut self, domain: &str) -> u32 {
        if let Some(&n) = self.numbers.get(domain) {
            return n;
        }
        let n = u32::try_from(self.names.len()).expect("fewer than 2^32 domains");
        let name: Rc<str> = domain.into();
        self.names.push(name.clone());
        self.numbers.insert(name, n);
        n
    }

    fn name(&self, number: u32) -> Rc<str> {
        self.names[number as usize].clone()
    }
}

pub struct Queues {
    core: usize,
    /// Retry times are kept as milliseconds after this instant.
    epoch: Instant,
    domains: RefCell<HashMap<Box<str>, DomainQueue>>,
    scheduled: RefCell<BinaryHeap<Reverse<Scheduled>>>,
    names: RefCell<DomainNames>,
    seq: Cell<u32>,
    /// Domains that got ready work since the delivery driver last looked.
    dirty: RefCell<Vec<Box<str>>>,
    /// Wakes the delivery driver.
    pub wake: Notify,
    messages: Cell<u64>,
    recipients: Cell<u64>,
}

impl Queues {
    pub fn new(core: usize) -> Queues {
        Queues {
            core,
            epoch: Instant::now(),
            domains: Default::default(),
            scheduled: Default::default(),
            names: Default::default(),
            seq: Default::default(),
            dirty: Default::default(),
            wake: Default::default(),
            messages: Default::default(),
            recipients: Default::default(),
        }
    }

    pub fn core(&self) -> usize {
        self.core
    }

    /// Queues every recipient of `handle`; all must belong to this core.
    /// Recipients recovered with a retry time in the future wait for it.
    pub fn enqueue(&self, handle: MessageHandle) {
        let message = Rc::new(handle);
        // (domain, entry, latest next-attempt time of its recipients)
        let mut by_domain: SmallVec<[(String, Entry, u64); 1]> = SmallVec::new();
        let envelope = message.envelope();
        for r in &message.recipients {
            let domain = envelope.domain(r.index).to_ascii_lowercase();
            match by_domain.iter_mut().find(|(d, _, _)| *d == domain) {
                Some((_, e, next)) => {
                    e.recipients.push(r.index);
                    e.attempts = e.attempts.max(r.attempts);
                    *next = (*next).max(r.next_attempt_ms);
                }
                None => {
                    let entry = Entry {
                        message: message.clone(),
                        recipients: smallvec::smallvec![r.index],
                        attempts: r.attempts,
                    };
                    by_domain.push((domain, entry, r.next_attempt_ms));
                }
            }
        }
        drop(envelope);
        self.messages.set(self.messages.get() + 1);
        self.recipients
            .set(self.recipients.get() + message.recipients.len() as u64);
        let now_ms = crate::delivery_log::now_ms();
        for (domain, entry, next_ms) in by_domain {
            if next_ms > now_ms {
                let wait = std::time::Duration::from_millis(next_ms - now_ms);
                self.schedule(&domain, entry, Instant::now() + wait);
            } else {
                self.push_ready(&domain, entry, false);
            }
        }
    }

    /// Makes `entry` ready for `domain`, at the back or (to go next) the front.
    pub fn push_ready(&self, domain: &str, entry: Entry, front: bool) {
        let mut domains = self.domains.borrow_mut();
        let q = domains.entry(domain.into()).or_default();
        q.push(entry, front);
        q.work.notify_all();
        drop(domains);
        self.dirty.borrow_mut().push(domain.into());
        self.wake.notify();
    }

    /// The next entry of any lane.
    pub fn pop_ready(&self, domain: &str) -> Option<Entry> {
        match self.pop_allowed(domain, |_| Allow::Yes) {
            Pop::Entry(entry, _) => Some(entry),
            _ => None,
        }
    }

    /// The next entry of the lanes `allow` lets go, taking lanes in turn.
    pub fn pop_allowed(&self, domain: &str, allow: impl FnMut(&Tags) -> Allow) -> Pop {
        match self.domains.borrow_mut().get_mut(domain) {
            Some(q) => q.pop(allow),
            None => Pop::Empty,
        }
    }

    /// The tags of the lane the next connection should serve: the first
    /// (from the cursor on) that `allow` lets go now. `Err`: none may go,
    /// and when one may (`None`: no lane has work this way).
    pub fn next_lane(
        &self,
        domain: &str,
        mut allow: impl FnMut(&Tags) -> Allow,
    ) -> Result<Rc<Tags>, Option<Instant>> {
        let domains = self.domains.borrow();
        let Some(q) = domains.get(domain) else {
            return Err(None);
        };
        let n = q.lanes.len();
        let mut wait: Option<Instant> = None;
        for k in 0..n {
            let lane = &q.lanes[(q.cursor + k) % n];
            match allow(&lane.tags) {
                Allow::Yes => return Ok(lane.tags.clone()),
                Allow::Until(t) => wait = Some(wait.map_or(t, |w| w.min(t))),
                Allow::No => {}
            }
        }
        Err(wait)
    }

    /// Parks `entry` until `due`.
    pub fn schedule(&self, domain: &str, entry: Entry, due: Instant) {
        // Ties in `due` go in the order scheduled; the sequence wraps after
        // 2^32 entries, which only reorders equal deadlines.
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let domain = self.names.borrow_mut().number(domain);
        let after = due.saturating_duration_since(self.epoch);
        let due_ms =
            after.as_millis() as u64 + u64::from(!after.subsec_nanos().is_multiple_of(1_000_000));
        self.scheduled.borrow_mut().push(Reverse(Scheduled {
            due_ms,
            seq,
            domain,
            entry,
        }));
        self.wake.notify();
    }

    /// Moves every entry due by `now` to its ready queue; returns how many.
    pub fn release_due(&self, now: Instant) -> usize {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let mut moved = 0;
        loop {
            let next = {
                let mut heap = self.scheduled.borrow_mut();
                match heap.peek() {
                    Some(Reverse(s)) if s.due_ms <= now_ms => heap.pop().map(|Reverse(s)| s),
                    _ => None,
                }
            };
            let Some(s) = next else { return moved };
            let domain = self.names.borrow().name(s.domain);
            self.push_ready(&domain, s.entry, false);
            moved += 1;
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        let heap = self.scheduled.borrow();
        let Reverse(s) = heap.peek()?;
        Some(self.epoch + std::time::Duration::from_millis(s.due_ms))
    }

    /// Asks the driver to look at `domain` again.
    pub fn mark_dirty(&self, domain: &str) {
        self.dirty.borrow_mut().push(domain.into());
        self.wake.notify();
    }

    /// Asks the driver to look at every domain with ready mail again.
    pub fn mark_all_dirty(&self) {
        let domains = self.domains.borrow();
        let mut dirty = self.dirty.borrow_mut();
        dirty.extend(
            domains
                .iter()
                .filter(|(_, q)| q.ready > 0)
                .map(|(d, _)| d.clone()),
        );
        drop(dirty);
        self.wake.notify();
    }

    pub fn take_dirty(&self) -> Vec<Box<str>> {
        let mut dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        dirty.sort_unstable();
        dirty.dedup();
        dirty
    }

    /// Ready entries and open connections of a domain.
    pub fn load(&self, domain: &str) -> (usize, u32) {
        self.domains
            .borrow()
            .get(domain)
            .map_or((0, 0), |q| (q.ready, q.connections))
    }

    pub fn connection_opened(&self, domain: &str) {
        self.domains
            .borrow_mut()
            .entry(domain.into())
            .or_default()
            .connections += 1;
    }

    pub fn connection_closed(&self, domain: &str) {
        let mut domains = self.domains.borrow_mut();
        if let Some(q) = domains.get_mut(domain) {
            q.connections -= 1;
            if q.connections == 0 && q.ready == 0 {
                domains.remove(domain);
            }
        }
    }

    /// The domain's work event and its current generation, for idle waits.
    pub fn work_event(&self, domain: &str) -> (Rc<Event>, u64) {
        let mut domains = self.domains.borrow_mut();
        let ev = domains.entry(domain.into()).or_default().work.clone();
        let generation = ev.generation();
        (ev, generation)
    }

    /// Delivery connections open on this core, all domains together.
    pub fn open_connections(&self) -> u32 {
        self.domains.borrow().values().map(|q| q.connections).sum()
    }

    pub fn summary(&self) -> QueueSummary {
        let domains = self.domains.borrow();
        QueueSummary {
            messages_enqueued: self.messages.get(),
            recipients_enqueued: self.recipients.get(),
            domains: domains.len(),
            ready: domains.values().map(|q| q.ready).sum(),
            scheduled: self.scheduled.borrow().len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub fn handle(recipients: &[&str]) -> MessageHandle {
        MessageHandle::in_memory(1, "s@a.test", recipients, b"x")
    }

    #[test]
    fn a_retry_entry_is_small() {
        // A million deferred messages hold a million of these in the heap.
        assert!(std::mem::size_of::<Scheduled>() <= 56);
        assert!(std::mem::size_of::<Entry>() <= 40);
    }

    #[test]
    fn lanes_are_taken_in_turn_and_kept_few() {
        let q = Queues::new(0);
        let tagged = |tenant: &str, campaign: &str| {
            MessageHandle::in_memory_tagged(1, "s@a.test", &["r@x.test"], b"x", (tenant, campaign))
        };
        for _ in 0..3 {
            q.enqueue(tagged("a", "1"));
        }
        q.enqueue(tagged("b", "1"));
        q.enqueue(handle(&["r@x.test"]));
        let mut order = Vec::new();
        while let Pop::Entry(_, tags) = q.pop_allowed("x.test", |_| Allow::Yes) {
            order.push(format!("{}/{}", tags.tenant, tags.campaign));
        }
        assert_eq!(order, ["a/1", "b/1", "/", "a/1", "a/1"], "in turn");
        // A lane that must wait does not hold up the others.
        q.enqueue(tagged("a", "1"));
        q.enqueue(tagged("b", "1"));
        let later = Instant::now() + std::time::Duration::from_secs(9);
        let held = |t: &Tags| {
            if &*t.tenant == "a" {
                Allow::Until(later)
            } else {
                Allow::Yes
            }
        };
        assert!(matches!(q.pop_allowed("x.test", held), Pop::Entry(_, t) if &*t.tenant == "b"));
        assert!(matches!(q.pop_allowed("x.test", held), Pop::Wait(t, false) if t == later));
        assert!(matches!(
            q.pop_allowed("x.test", |_| Allow::No),
            Pop::Elsewhere
        ));
        // Past LANES_MAX, a tenant's further campaigns share one lane.
        let many = Queues::new(0);
        for i in 0..LANES_MAX + 10 {
            many.enqueue(tagged("a", &i.to_string()));
        }
        let lanes = many.domains.borrow()["x.test"].lanes.len();
        assert_eq!(lanes, LANES_MAX + 1);
        assert_eq!(many.load("x.test").0, LANES_MAX + 10, "nothing lost");
    }

    #[test]
    fn recipients_are_grouped_by_lower_cased_domain() {
        let q = Queues::new(0);
        q.enqueue(handle(&["a@X.test", "b@x.test", "c@y.test"]));
        assert_eq!(
            q.take_dirty(),
            vec![Box::from("x.test"), Box::from("y.test")]
        );
        assert_eq!(q.pop_ready("x.test").unwrap().recipients.as_slice(), [0, 1]);
        assert_eq!(q.pop_ready("y.test").unwrap().recipients.as_slice(), [2]);
        assert!(q.pop_ready("x.test").is_none());
    }

    #[test]
    fn scheduled_entries_come_back_when_due_in_order() {
        let q = Queues::new(0);
        q.enqueue(handle(&["a@x.test"]));
        let e = q.pop_ready("x.test").unwrap();
        let now = Instant::now();
        q.schedule(
            "x.test",
            Entry {
                attempts: 2,
                ..e.clone()
            },
            now + Duration::from_secs(20),
        );
        q.schedule(
            "x.test",
            Entry { attempts: 1, ..e },
            now + Duration::from_secs(10),
        );
        let next = q.next_due().unwrap();
        assert!(next >= now + Duration::from_secs(10), "never early");
        assert!(
            next <= now + Duration::from_millis(10_001),
            "at most 1 ms late"
        );
        assert_eq!(q.release_due(now), 0);
        assert_eq!(q.release_due(now + Duration::from_secs(15)), 1);
        assert_eq!(q.pop_ready("x.test").unwrap().attempts, 1);
        assert_eq!(q.release_due(now + Duration::from_secs(60)), 1);
        assert_eq!(q.pop_ready("x.test").unwrap().attempts, 2);
    }
}
