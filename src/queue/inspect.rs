//! Looking into one core's queues for the operator (admin API): what each
//! domain holds, where a message is, and taking entries out to bounce
//! them. Walks every entry, so these run only on the operator's request,
//! never on the delivery path.

use super::{Entry, Queues, Tags};
use std::cmp::Reverse;
use std::collections::HashMap;
use std::rc::Rc;

/// One domain's queue on this core.
#[derive(Debug)]
pub struct DomainView {
    pub domain: String,
    /// Each lane's tags and its ready entries.
    pub lanes: Vec<(Rc<Tags>, usize)>,
    /// Entries waiting for a retry.
    pub waiting: usize,
    pub connections: u32,
    /// When the oldest queued message was received (ms since the epoch).
    pub oldest_ms: Option<u64>,
}

impl DomainView {
    pub fn ready(&self) -> usize {
        self.lanes.iter().map(|(_, n)| n).sum()
    }
}

/// A queued entry that matched a search.
#[derive(Debug)]
pub struct Found {
    pub domain: String,
    pub entry: Entry,
    pub waiting: bool,
}

fn earlier(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn received(entry: &Entry) -> u64 {
    entry.message.envelope().received_ms()
}

impl Queues {
    /// Every domain with ready or waiting entries or open connections;
    /// with `ages`, when each one's oldest message came (which reads every
    /// entry's record, not only the counts).
    pub fn views(&self, ages: bool) -> Vec<DomainView> {
        let oldest = |entries: &mut dyn Iterator<Item = &Entry>| -> Option<u64> {
            if ages {
                entries.map(received).min()
            } else {
                None
            }
        };
        let mut views: HashMap<String, DomainView> = HashMap::new();
        let blank = |domain: &str| DomainView {
            domain: domain.to_string(),
            lanes: Vec::new(),
            waiting: 0,
            connections: 0,
            oldest_ms: None,
        };
        for (domain, q) in self.domains.borrow().iter() {
            let v = views
                .entry(domain.to_string())
                .or_insert_with(|| blank(domain));
            v.connections = q.connections;
            for lane in &q.lanes {
                v.lanes.push((lane.tags.clone(), lane.entries.len()));
                v.oldest_ms = earlier(v.oldest_ms, oldest(&mut lane.entries.iter()));
            }
        }
        let names = self.names.borrow();
        for Reverse(s) in self.scheduled.borrow().iter() {
            let name = names.name(s.domain);
            let v = views
                .entry(name.to_string())
                .or_insert_with(|| blank(&name));
            v.waiting += 1;
            v.oldest_ms = earlier(v.oldest_ms, oldest(&mut std::iter::once(&s.entry)));
        }
        views.into_values().collect()
    }

    /// Fills in the age of each of `views` (when its oldest queued message
    /// came): their own entries, and one walk of the waiting ones.
    pub fn add_ages(&self, views: &mut [DomainView]) {
        let names = self.names.borrow();
        let mut by_number: HashMap<u32, usize> = HashMap::new();
        let domains = self.domains.borrow();
        for (i, v) in views.iter_mut().enumerate() {
            if let Some(&n) = names.numbers.get(v.domain.as_str()) {
                by_number.insert(n, i);
            }
            if let Some(q) = domains.get(v.domain.as_str()) {
                for lane in &q.lanes {
                    v.oldest_ms = earlier(v.oldest_ms, lane.entries.iter().map(received).min());
                }
            }
        }
        if by_number.is_empty() {
            return;
        }
        for Reverse(s) in self.scheduled.borrow().iter() {
            if let Some(&i) = by_number.get(&s.domain) {
                views[i].oldest_ms = earlier(views[i].oldest_ms, Some(received(&s.entry)));
            }
        }
    }

    /// The domains with ready entries, their lanes' counts only (no walk
    /// of the waiting entries): cheap enough for a summary each second.
    pub fn ready_views(&self) -> Vec<DomainView> {
        let domains = self.domains.borrow();
        domains
            .iter()
            .filter(|(_, q)| q.ready > 0)
            .map(|(d, q)| DomainView {
                domain: d.to_string(),
                lanes: q
                    .lanes
                    .iter()
                    .map(|l| (l.tags.clone(), l.entries.len()))
                    .collect(),
                waiting: 0,
                connections: q.connections,
                oldest_ms: None,
            })
            .collect()
    }

    /// The view of one domain (with its age), if it has anything queued
    /// or open.
    pub fn view(&self, domain: &str) -> Option<DomainView> {
        let mut v = DomainView {
            domain: domain.to_string(),
            lanes: Vec::new(),
            waiting: 0,
            connections: 0,
            oldest_ms: None,
        };
        let mut any = false;
        if let Some(q) = self.domains.borrow().get(domain) {
            any = true;
            v.connections = q.connections;
            for lane in &q.lanes {
                v.lanes.push((lane.tags.clone(), lane.entries.len()));
                v.oldest_ms = earlier(v.oldest_ms, lane.entries.iter().map(received).min());
            }
        }
        let names = self.names.borrow();
        for Reverse(s) in self.scheduled.borrow().iter() {
            if *names.name(s.domain) == *domain {
                any = true;
                v.waiting += 1;
                v.oldest_ms = earlier(v.oldest_ms, Some(received(&s.entry)));
            }
        }
        any.then_some(v)
    }

    /// Queued entries that `matches`, ready and waiting.
    pub fn find(&self, matches: impl Fn(&Entry) -> bool) -> Vec<Found> {
        let mut found = Vec::new();
        for (domain, q) in self.domains.borrow().iter() {
            for lane in &q.lanes {
                for e in lane.entries.iter().filter(|e| matches(e)) {
                    found.push(Found {
                        domain: domain.to_string(),
                        entry: e.clone(),
                        waiting: false,
                    });
                }
            }
        }
        let names = self.names.borrow();
        for Reverse(s) in self.scheduled.borrow().iter() {
            if matches(&s.entry) {
                found.push(Found {
                    domain: names.name(s.domain).to_string(),
                    entry: s.entry.clone(),
                    waiting: true,
                });
            }
        }
        found
    }

    /// Takes every queued entry (ready or waiting) that `matches` out of
    /// the queues, to be settled by the caller (bounced); connections
    /// never see them again.
    pub fn take_where(&self, matches: impl Fn(&str, &Entry) -> bool) -> Vec<(Rc<str>, Entry)> {
        let mut taken = Vec::new();
        {
            let mut heap = self.scheduled.borrow_mut();
            let all = std::mem::take(&mut *heap).into_vec();
            let names = self.names.borrow();
            for Reverse(s) in all {
                let domain = names.name(s.domain);
                if matches(&domain, &s.entry) {
                    taken.push((domain, s.entry));
                } else {
                    heap.push(Reverse(s));
                }
            }
        }
        let mut domains = self.domains.borrow_mut();
        for (domain, q) in domains.iter_mut() {
            let name: Rc<str> = Rc::from(&**domain);
            for lane in q.lanes.iter_mut() {
                let entries = std::mem::take(&mut lane.entries);
                for e in entries {
                    if matches(&name, &e) {
                        taken.push((name.clone(), e));
                    } else {
                        lane.entries.push_back(e);
                    }
                }
            }
            q.lanes.retain(|l| !l.entries.is_empty());
            q.ready = q.lanes.iter().map(|l| l.entries.len()).sum();
            q.cursor = 0;
        }
        domains.retain(|_, q| q.ready > 0 || q.connections > 0);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::handle;
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn views_count_ready_and_waiting_and_take_empties_both() {
        let q = Queues::new(0);
        q.enqueue(handle(&["a@x.test", "b@y.test"]));
        let e = q.pop_ready("y.test").unwrap();
        q.schedule("y.test", e, Instant::now() + Duration::from_secs(3600));
        let mut views = q.views(true);
        views.sort_by(|a, b| a.domain.cmp(&b.domain));
        assert_eq!((views[0].ready(), views[0].waiting), (1, 0));
        assert_eq!((views[1].ready(), views[1].waiting), (0, 1));
        assert!(views[1].oldest_ms.is_some());
        let mut cheap = q.views(false);
        assert!(cheap.iter().all(|v| v.oldest_ms.is_none()));
        q.add_ages(&mut cheap);
        assert!(cheap.iter().all(|v| v.oldest_ms.is_some()), "{cheap:?}");
        assert_eq!(q.find(|_| true).len(), 2);
        let taken = q.take_where(|d, _| d == "y.test");
        assert_eq!(taken.len(), 1);
        assert_eq!(&*taken[0].0, "y.test");
        assert_eq!(q.summary().scheduled, 0);
        assert_eq!(q.take_where(|_, _| true).len(), 1);
        assert!(q.views(false).is_empty());
    }
}
