//! The operator's actions in force on one core: suspensions, reroutes and
//! temporary overrides of shaping keys, each for one selector (a domain,
//! provider, source, tenant or campaign), each with an id and an end.
//!
//! They come from the admin API over the mesh: the admin server gives each
//! change to every core, so every core holds the same list and nothing
//! here is shared between threads. The [`super::Shaper`] consults the list
//! where it consults the shaping file's rules. Ended actions are dropped
//! when next looked at; at most [`ACTIONS_MAX`] are in force at once.

use super::rate::Rate;
use crate::config::NextHop;
use std::cell::RefCell;
use std::time::Instant;

pub const ACTIONS_MAX: usize = 1024;
/// Longest an action may last: a week.
pub const DURATION_MAX_S: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Domain(String),
    Provider(String),
    Source(String),
    Tenant(String),
    Campaign(String),
}

impl Selector {
    pub const KEYS: [&'static str; 5] = ["domain", "provider", "source", "tenant", "campaign"];

    pub fn new(key: &str, name: &str) -> Option<Selector> {
        let name = name.to_string();
        Some(match key {
            "domain" => Selector::Domain(name.to_ascii_lowercase()),
            "provider" => Selector::Provider(name),
            "source" => Selector::Source(name),
            "tenant" => Selector::Tenant(name),
            "campaign" => Selector::Campaign(name),
            _ => return None,
        })
    }

    pub fn key(&self) -> &'static str {
        match self {
            Selector::Domain(_) => "domain",
            Selector::Provider(_) => "provider",
            Selector::Source(_) => "source",
            Selector::Tenant(_) => "tenant",
            Selector::Campaign(_) => "campaign",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Selector::Domain(n)
            | Selector::Provider(n)
            | Selector::Source(n)
            | Selector::Tenant(n)
            | Selector::Campaign(n) => n,
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.key(), self.name())
    }
}

/// Shaping keys an override may set; `None` leaves the rule's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patch {
    pub connections: Option<u32>,
    pub message_rate: Option<Rate>,
    pub connection_rate: Option<Rate>,
    pub messages_per_connection: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    Suspend,
    /// Connections go out from this pool instead.
    Pool(String),
    /// Connections go to this host instead of the MX (domains only).
    NextHop(NextHop),
    Override(Patch),
}

#[derive(Debug, Clone)]
pub struct Action {
    pub id: u64,
    pub selector: Selector,
    pub what: What,
    pub until: Instant,
    /// The end as wall-clock milliseconds, for people.
    pub until_ms: u64,
    pub by: String,
    pub reason: String,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self.what {
            What::Suspend => "suspend",
            What::Pool(_) | What::NextHop(_) => "reroute",
            What::Override(_) => "override",
        }
    }

    /// One line for the delivery log.
    pub fn describe(&self) -> String {
        let secs = self
            .until
            .saturating_duration_since(Instant::now())
            .as_secs();
        let what = match &self.what {
            What::Suspend => "suspend".to_string(),
            What::Pool(p) => format!("reroute to pool {p}"),
            What::NextHop(h) => format!("reroute to {}:{}", h.host, h.port),
            What::Override(p) => format!("override {}", describe_patch(p)),
        };
        format!(
            "{what} {} for {secs} s (action a{})",
            self.selector, self.id
        )
    }
}

fn describe_patch(p: &Patch) -> String {
    let mut parts = Vec::new();
    if let Some(c) = p.connections {
        parts.push(format!("connections = {c}"));
    }
    if let Some(r) = &p.message_rate {
        parts.push(format!("message_rate = {r}"));
    }
    if let Some(r) = &p.connection_rate {
        parts.push(format!("connection_rate = {r}"));
    }
    if let Some(m) = p.messages_per_connection {
        parts.push(format!("messages_per_connection = {m}"));
    }
    parts.join(", ")
}

/// What a domain's mail is under, as far as the shaper needs to know.
pub struct Subject<'a> {
    pub domain: &'a str,
    /// The domain's provider, if this core knows it.
    pub provider: Option<&'a str>,
}

impl Subject<'_> {
    fn is(&self, s: &Selector) -> bool {
        match s {
            Selector::Domain(d) => d.eq_ignore_ascii_case(self.domain),
            Selector::Provider(p) => self.provider == Some(p.as_str()),
            _ => false,
        }
    }
}

#[derive(Default)]
pub struct Actions {
    list: RefCell<Vec<Action>>,
    /// An action ended by itself and was dropped; [`Actions::expired`]
    /// has not said so yet.
    lapsed: std::cell::Cell<bool>,
}

impl Actions {
    /// Drops the actions that have ended by themselves, noting it.
    fn prune(&self, list: &mut Vec<Action>, now: Instant) {
        let before = list.len();
        list.retain(|a| a.until > now);
        if list.len() < before {
            self.lapsed.set(true);
        }
    }

    /// Adds (or, same id, replaces) an action; false when the list is full.
    pub fn add(&self, action: Action, now: Instant) -> bool {
        let mut list = self.list.borrow_mut();
        self.prune(&mut list, now);
        list.retain(|a| a.id != action.id);
        if list.len() >= ACTIONS_MAX {
            return false;
        }
        list.push(action);
        true
    }

    /// Ends action `id`; the action if it was in force.
    pub fn end(&self, id: u64, now: Instant) -> Option<Action> {
        let mut list = self.list.borrow_mut();
        let at = list.iter().position(|a| a.id == id && a.until > now)?;
        Some(list.remove(at))
    }

    pub fn in_force(&self, now: Instant) -> Vec<Action> {
        let list = self.list.borrow();
        list.iter().filter(|a| a.until > now).cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.list.borrow().is_empty()
    }

    /// True once each time an action has ended by itself since the last
    /// call: its destinations must be looked at again.
    pub fn expired(&self, now: Instant) -> bool {
        self.prune(&mut self.list.borrow_mut(), now);
        self.lapsed.replace(false)
    }

    /// Ids of the actions in force that apply to the subject.
    pub fn applying(&self, subject: &Subject<'_>, now: Instant) -> Vec<u64> {
        let list = self.list.borrow();
        list.iter()
            .filter(|a| a.until > now && subject.is(&a.selector))
            .map(|a| a.id)
            .collect()
    }

    /// The latest end of a suspension of the subject in force.
    pub fn suspended(&self, subject: &Subject<'_>, now: Instant) -> Option<Instant> {
        self.latest(now, |a| a.what == What::Suspend && subject.is(&a.selector))
    }

    /// The latest end of a suspension of the tenant or campaign.
    pub fn lane_suspended(&self, tenant: &str, campaign: &str, now: Instant) -> Option<Instant> {
        self.latest(now, |a| {
            a.what == What::Suspend
                && match &a.selector {
                    Selector::Tenant(t) => !tenant.is_empty() && t == tenant,
                    Selector::Campaign(c) => !campaign.is_empty() && c == campaign,
                    _ => false,
                }
        })
    }

    pub fn source_suspended(&self, source: &str, now: Instant) -> Option<Instant> {
        self.latest(now, |a| {
            a.what == What::Suspend && a.selector == Selector::Source(source.to_string())
        })
    }

    fn latest(&self, now: Instant, f: impl Fn(&Action) -> bool) -> Option<Instant> {
        let list = self.list.borrow();
        list.iter()
            .filter(|a| a.until > now && f(a))
            .map(|a| a.until)
            .max()
    }

    /// The newest reroute to a pool in force for the subject or the tenant.
    pub fn pool(&self, subject: &Subject<'_>, tenant: &str, now: Instant) -> Option<String> {
        let list = self.list.borrow();
        list.iter().rev().find_map(|a| match &a.what {
            What::Pool(p)
                if a.until > now
                    && (subject.is(&a.selector)
                        || (!tenant.is_empty()
                            && a.selector == Selector::Tenant(tenant.to_string()))) =>
            {
                Some(p.clone())
            }
            _ => None,
        })
    }

    /// The newest reroute to a next hop in force for the domain.
    pub fn next_hop(&self, domain: &str, now: Instant) -> Option<NextHop> {
        let list = self.list.borrow();
        list.iter().rev().find_map(|a| match &a.what {
            What::NextHop(h)
                if a.until > now && a.selector == Selector::Domain(domain.to_ascii_lowercase()) =>
            {
                Some(h.clone())
            }
            _ => None,
        })
    }

    /// The overrides in force for the subject, oldest first (a later one
    /// wins where two set the same key).
    pub fn patches(&self, subject: &Subject<'_>, now: Instant) -> Vec<Patch> {
        let list = self.list.borrow();
        list.iter()
            .filter(|a| a.until > now && subject.is(&a.selector))
            .filter_map(|a| match &a.what {
                What::Override(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn action(id: u64, selector: Selector, what: What, secs: u64) -> Action {
        Action {
            id,
            selector,
            what,
            until: Instant::now() + Duration::from_secs(secs),
            until_ms: 0,
            by: "t".into(),
            reason: String::new(),
        }
    }

    #[test]
    fn a_suspension_holds_its_selector_only_until_it_ends_or_is_ended() {
        let a = Actions::default();
        let now = Instant::now();
        a.add(
            action(1, Selector::Domain("a.test".into()), What::Suspend, 60),
            now,
        );
        a.add(
            action(2, Selector::Provider("big".into()), What::Suspend, 60),
            now,
        );
        let plain = Subject {
            domain: "A.test",
            provider: None,
        };
        let other = Subject {
            domain: "b.test",
            provider: Some("big"),
        };
        let none = Subject {
            domain: "c.test",
            provider: None,
        };
        assert!(a.suspended(&plain, now).is_some());
        assert!(a.suspended(&other, now).is_some());
        assert!(a.suspended(&none, now).is_none());
        assert!(a.suspended(&plain, now + Duration::from_secs(61)).is_none());
        assert_eq!(a.end(1, now).map(|x| x.id), Some(1));
        assert!(a.suspended(&plain, now).is_none());
        assert!(a.end(1, now).is_none());
    }

    /// An action that ends by itself is reported once, whichever call
    /// noticed first (a listing of the actions, a new action).
    #[test]
    fn an_action_that_ends_by_itself_is_reported_once() {
        let a = Actions::default();
        let now = Instant::now();
        a.add(
            action(1, Selector::Domain("a.test".into()), What::Suspend, 1),
            now,
        );
        assert!(!a.expired(now));
        let later = now + Duration::from_secs(2);
        assert!(a.in_force(later).is_empty());
        a.add(
            action(2, Selector::Domain("b.test".into()), What::Suspend, 60),
            later,
        );
        assert!(a.expired(later));
        assert!(!a.expired(later));
    }

    #[test]
    fn the_later_override_wins_and_tenants_reroute() {
        let a = Actions::default();
        let now = Instant::now();
        let d = || Selector::Domain("a.test".into());
        let patch = |c| {
            What::Override(Patch {
                connections: Some(c),
                ..Patch::default()
            })
        };
        a.add(action(1, d(), patch(5), 60), now);
        a.add(action(2, d(), patch(1), 60), now);
        a.add(
            action(3, Selector::Tenant("t1".into()), What::Pool("p".into()), 60),
            now,
        );
        let s = Subject {
            domain: "a.test",
            provider: None,
        };
        let p = a.patches(&s, now);
        assert_eq!(p.last().unwrap().connections, Some(1));
        assert_eq!(a.pool(&s, "t1", now).as_deref(), Some("p"));
        assert_eq!(a.pool(&s, "t2", now), None);
        assert_eq!(a.applying(&s, now), vec![1, 2]);
    }
}
