//! Each core's queues of recipients waiting for delivery: one ready queue
//! per destination domain (only domains this core owns), and one timer heap
//! of entries waiting for their next retry.
//!
//! An [`Entry`] is one message's recipients in one domain. It holds the
//! message handle (shared by the entries of all its domains on this core)
//! and recipient indexes; never the body, which stays in the spool mapping.
//! The queues do no I/O: delivery pops from them and pushes back.

use crate::local::{Event, Notify};
use crate::message::MessageHandle;
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

/// One message's recipients that go to one domain.
#[derive(Debug, Clone)]
pub struct Entry {
    pub message: Rc<MessageHandle>,
    /// Indexes into `message.recipients`.
    pub recipients: Vec<u32>,
    /// Delivery attempts made so far.
    pub attempts: u32,
}

impl Entry {
    pub fn address(&self, index: u32) -> &str {
        let r = self
            .message
            .recipients
            .iter()
            .find(|r| r.index == index)
            .expect("entry names the message's recipients");
        &r.address
    }
}

/// A domain's ready work and the connections serving it.
#[derive(Default)]
pub struct DomainQueue {
    pub ready: VecDeque<Entry>,
    /// Delivery connections open (or opening) for this domain on this core.
    pub connections: u32,
    /// Bumped whenever work is added, so idle connections can wait for it.
    pub work: Rc<Event>,
}

struct Scheduled {
    due: Instant,
    seq: u64,
    domain: Box<str>,
    entry: Entry,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
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
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Counts for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSummary {
    pub messages: u64,
    pub recipients: u64,
    pub domains: usize,
    pub ready: usize,
    pub scheduled: usize,
}

#[derive(Default)]
pub struct Queues {
    core: usize,
    domains: RefCell<HashMap<Box<str>, DomainQueue>>,
    scheduled: RefCell<BinaryHeap<Reverse<Scheduled>>>,
    seq: Cell<u64>,
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
            ..Default::default()
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
        let mut by_domain: Vec<(String, Entry, u64)> = Vec::new();
        for r in &message.recipients {
            let domain = r.domain().to_ascii_lowercase();
            match by_domain.iter_mut().find(|(d, _, _)| *d == domain) {
                Some((_, e, next)) => {
                    e.recipients.push(r.index);
                    e.attempts = e.attempts.max(r.attempts);
                    *next = (*next).max(r.next_attempt_ms);
                }
                None => {
                    let entry = Entry {
                        message: message.clone(),
                        recipients: vec![r.index],
                        attempts: r.attempts,
                    };
                    by_domain.push((domain, entry, r.next_attempt_ms));
                }
            }
        }
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
        if front {
            q.ready.push_front(entry);
        } else {
            q.ready.push_back(entry);
        }
        q.work.notify_all();
        drop(domains);
        self.dirty.borrow_mut().push(domain.into());
        self.wake.notify();
    }

    pub fn pop_ready(&self, domain: &str) -> Option<Entry> {
        self.domains.borrow_mut().get_mut(domain)?.ready.pop_front()
    }

    /// Takes all of a domain's ready work (when its destination is down).
    pub fn drain_ready(&self, domain: &str) -> Vec<Entry> {
        self.domains
            .borrow_mut()
            .get_mut(domain)
            .map(|q| q.ready.drain(..).collect())
            .unwrap_or_default()
    }

    /// Parks `entry` until `due`.
    pub fn schedule(&self, domain: &str, entry: Entry, due: Instant) {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        self.scheduled.borrow_mut().push(Reverse(Scheduled {
            due,
            seq,
            domain: domain.into(),
            entry,
        }));
        self.wake.notify();
    }

    /// Moves every entry due by `now` to its ready queue; returns how many.
    pub fn release_due(&self, now: Instant) -> usize {
        let mut moved = 0;
        loop {
            let next = {
                let mut heap = self.scheduled.borrow_mut();
                match heap.peek() {
                    Some(Reverse(s)) if s.due <= now => heap.pop().map(|Reverse(s)| s),
                    _ => None,
                }
            };
            let Some(s) = next else { return moved };
            self.push_ready(&s.domain, s.entry, false);
            moved += 1;
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.scheduled.borrow().peek().map(|Reverse(s)| s.due)
    }

    /// Asks the driver to look at `domain` again.
    pub fn mark_dirty(&self, domain: &str) {
        self.dirty.borrow_mut().push(domain.into());
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
            .map_or((0, 0), |q| (q.ready.len(), q.connections))
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
            if q.connections == 0 && q.ready.is_empty() {
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
            messages: self.messages.get(),
            recipients: self.recipients.get(),
            domains: domains.len(),
            ready: domains.values().map(|q| q.ready.len()).sum(),
            scheduled: self.scheduled.borrow().len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Recipient, SegmentMap, Stored};
    use std::sync::Arc;
    use std::time::Duration;

    pub fn handle(recipients: &[&str]) -> MessageHandle {
        let map = Arc::new(SegmentMap::anonymous(1, &[b'x'; 10]).unwrap());
        let stored = Stored::new(1, 10, 0, 10, recipients.len() as u32);
        stored.place(&map, 0);
        MessageHandle {
            id: 1,
            received_ms: 0,
            flags: 0,
            stored,
            body_len: 10,
            sender: "s@a.test".into(),
            recipients: recipients
                .iter()
                .enumerate()
                .map(|(i, a)| Recipient {
                    index: i as u32,
                    address: (*a).into(),
                    attempts: 0,
                    next_attempt_ms: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn recipients_are_grouped_by_lower_cased_domain() {
        let q = Queues::new(0);
        q.enqueue(handle(&["a@X.test", "b@x.test", "c@y.test"]));
        assert_eq!(
            q.take_dirty(),
            vec![Box::from("x.test"), Box::from("y.test")]
        );
        assert_eq!(q.pop_ready("x.test").unwrap().recipients, vec![0, 1]);
        assert_eq!(q.pop_ready("y.test").unwrap().recipients, vec![2]);
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
        assert_eq!(q.next_due(), Some(now + Duration::from_secs(10)));
        assert_eq!(q.release_due(now), 0);
        assert_eq!(q.release_due(now + Duration::from_secs(15)), 1);
        assert_eq!(q.pop_ready("x.test").unwrap().attempts, 1);
        assert_eq!(q.release_due(now + Duration::from_secs(60)), 1);
        assert_eq!(q.pop_ready("x.test").unwrap().attempts, 2);
    }
}
