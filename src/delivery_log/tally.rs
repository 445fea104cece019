//! Counts of one core's delivery-log records, kept as they are written:
//! by kind, by kind and tenant, and for each destination domain its
//! deferrals and last replies. The admin API and `/metrics` read them.
//!
//! Bounded: at most [`TENANTS_MAX`] tenants are counted by name (the rest
//! together as [`OTHER`]) and [`DOMAINS_MAX`] domains keep a history (past
//! it, the half that heard from their destination longest ago are
//! forgotten).

use super::{Kind, Record};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

pub const TENANTS_MAX: usize = 256;
pub const DOMAINS_MAX: usize = 10_000;
/// Replies kept per domain.
pub const REPLIES_MAX: usize = 20;
/// Longest reply text kept, in bytes.
pub const REPLY_BYTES_MAX: usize = 200;
/// The tenant name that stands for every tenant past [`TENANTS_MAX`].
pub const OTHER: &str = "(other)";

pub type Counts = [u64; Kind::ALL.len()];

#[derive(Debug, Clone)]
pub struct Reply {
    pub time_ms: u64,
    pub text: Box<str>,
}

/// What one destination domain heard, newest reply first.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub deferred: u64,
    pub replies: VecDeque<Reply>,
}

#[derive(Default)]
pub struct Tally {
    by_kind: [Cell<u64>; Kind::ALL.len()],
    by_tenant: RefCell<HashMap<Box<str>, Counts>>,
    domains: RefCell<HashMap<Box<str>, History>>,
}

fn index(kind: Kind) -> usize {
    Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is in ALL")
}

impl Tally {
    pub fn count(&self, r: &Record<'_>) {
        let i = index(r.kind);
        self.by_kind[i].set(self.by_kind[i].get() + 1);
        if !r.tenant.is_empty() {
            let mut tenants = self.by_tenant.borrow_mut();
            let name = if tenants.contains_key(r.tenant) || tenants.len() < TENANTS_MAX {
                r.tenant
            } else {
                OTHER
            };
            match tenants.get_mut(name) {
                Some(c) => c[i] += 1,
                None => {
                    let mut c = Counts::default();
                    c[i] += 1;
                    tenants.insert(name.into(), c);
                }
            }
        }
        let replied = matches!(
            r.kind,
            Kind::Delivery | Kind::TransientFailure | Kind::Bounce
        );
        if replied && !r.domain.is_empty() {
            self.heard(r);
        }
    }

    fn heard(&self, r: &Record<'_>) {
        let mut domains = self.domains.borrow_mut();
        if domains.len() >= DOMAINS_MAX && !domains.contains_key(r.domain) {
            forget_older_half(&mut domains);
        }
        let h = match domains.get_mut(r.domain) {
            Some(h) => h,
            None => domains.entry(r.domain.into()).or_default(),
        };
        if r.kind == Kind::TransientFailure {
            h.deferred += 1;
        }
        let text = crate::text::cut(r.response, REPLY_BYTES_MAX);
        // A run of identical replies (a busy destination's 250s) keeps
        // one entry, refreshed, so the history shows what changed.
        if let Some(last) = h.replies.front_mut().filter(|l| *l.text == *text) {
            last.time_ms = r.time_ms;
            return;
        }
        if h.replies.len() >= REPLIES_MAX {
            h.replies.pop_back();
        }
        h.replies.push_front(Reply {
            time_ms: r.time_ms,
            text: text.into(),
        });
    }

    pub fn by_kind(&self) -> Counts {
        std::array::from_fn(|i| self.by_kind[i].get())
    }

    pub fn by_tenant(&self) -> Vec<(String, Counts)> {
        let tenants = self.by_tenant.borrow();
        tenants.iter().map(|(t, c)| (t.to_string(), *c)).collect()
    }

    pub fn history(&self, domain: &str) -> Option<History> {
        self.domains.borrow().get(domain).cloned()
    }

    /// Deferrals and the last reply of `domain`.
    pub fn last(&self, domain: &str) -> (u64, Option<Reply>) {
        let domains = self.domains.borrow();
        domains
            .get(domain)
            .map_or((0, None), |h| (h.deferred, h.replies.front().cloned()))
    }

    /// Domains with a history, with their deferrals (for sorting).
    pub fn deferred_domains(&self) -> Vec<(String, u64)> {
        let domains = self.domains.borrow();
        domains
            .iter()
            .filter(|(_, h)| h.deferred > 0)
            .map(|(d, h)| (d.to_string(), h.deferred))
            .collect()
    }
}

fn forget_older_half(domains: &mut HashMap<Box<str>, History>) {
    let mut times: Vec<u64> = domains
        .values()
        .map(|h| h.replies.front().map_or(0, |r| r.time_ms))
        .collect();
    let mid = times.len() / 2;
    let (_, median, _) = times.select_nth_unstable(mid);
    let median = *median;
    domains.retain(|_, h| h.replies.front().is_some_and(|r| r.time_ms > median));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(kind: Kind, domain: &'a str, response: &'a str, time_ms: u64) -> Record<'a> {
        let mut r = Record::admin(response, "t", "r", 0);
        r.kind = kind;
        r.domain = domain;
        r.time_ms = time_ms;
        r.by = None;
        r.reason = None;
        r
    }

    #[test]
    fn counts_kinds_and_keeps_the_last_replies_newest_first() {
        let t = Tally::default();
        t.count(&record(Kind::Delivery, "a.test", "250 ok", 1));
        t.count(&record(Kind::Delivery, "a.test", "250 ok", 2));
        t.count(&record(Kind::TransientFailure, "a.test", "451 later", 3));
        assert_eq!(t.by_kind()[index(Kind::Delivery)], 2);
        let h = t.history("a.test").unwrap();
        assert_eq!(h.deferred, 1);
        let texts: Vec<&str> = h.replies.iter().map(|r| &*r.text).collect();
        assert_eq!(texts, ["451 later", "250 ok"]);
        assert_eq!(h.replies[1].time_ms, 2, "a repeated reply is refreshed");
        for i in 0..50 {
            t.count(&record(
                Kind::Delivery,
                "a.test",
                &format!("250 {i}"),
                10 + i,
            ));
        }
        assert_eq!(t.history("a.test").unwrap().replies.len(), REPLIES_MAX);
    }

    #[test]
    fn the_domain_table_stays_bounded() {
        let t = Tally::default();
        for i in 0..(DOMAINS_MAX as u64 + 10) {
            t.count(&record(Kind::Delivery, &format!("d{i}.test"), "250", i));
        }
        let n = t.domains.borrow().len();
        assert!(n <= DOMAINS_MAX && n > DOMAINS_MAX / 3, "{n}");
        assert!(t.history(&format!("d{}.test", DOMAINS_MAX + 9)).is_some());
    }
}
