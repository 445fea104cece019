//! Where the operator's actions ([`super::operator`]) meet the shaper:
//! the hooks the shaper's answers go through, and the calls that change
//! the list. Costs nothing while no action is in force.

use super::operator::{Action, Patch, Subject};
use super::{backoff, egress, Limits, Shaper};
use crate::config::NextHop;
use std::sync::Arc;
use std::time::Instant;

impl Shaper {
    /// Puts an action in force on this core; false if the list is full.
    /// Every domain's pending look is forgotten: the caller has the queues
    /// look at every domain again, under the action.
    pub fn act(&self, action: Action) -> bool {
        self.waking.borrow_mut().clear();
        self.operator.add(action, Instant::now())
    }

    /// Ends action `id` on this core (the caller looks at every domain
    /// again, as after [`Shaper::act`]).
    pub fn end_action(&self, id: u64) -> Option<Action> {
        self.waking.borrow_mut().clear();
        self.operator.end(id, Instant::now())
    }

    /// For the core's poll: true when an action has ended by itself, and
    /// every domain should be looked at again (one waiting for a rate of
    /// an override that has ended, say).
    pub fn actions_ended(&self) -> bool {
        if !self.operator.expired(Instant::now()) {
            return false;
        }
        self.waking.borrow_mut().clear();
        true
    }

    pub fn actions(&self) -> Vec<Action> {
        self.operator.in_force(Instant::now())
    }

    /// Ids of the actions in force for `domain`.
    pub fn actions_for(&self, domain: &str) -> Vec<u64> {
        if self.operator.is_empty() {
            return Vec::new();
        }
        let provider = self.provider_name(domain);
        let subject = subject(domain, &provider);
        self.operator.applying(&subject, Instant::now())
    }

    /// Which rules set `domain`'s limits: "default", "destination D",
    /// "provider P" or both, and "+ override" while one is in force.
    pub fn rule_of(&self, domain: &str) -> String {
        let own = self.rules.borrow().has_destination(domain);
        let mut rule = match (self.provider_name(domain), own) {
            (Some(p), true) => format!("destination {domain} in provider {p}"),
            (Some(p), false) => format!("provider {p}"),
            (None, true) => format!("destination {domain}"),
            (None, false) => "default".to_string(),
        };
        if !self.operator.is_empty() {
            let provider = self.provider_name(domain);
            let subject = subject(domain, &provider);
            if !self.operator.patches(&subject, Instant::now()).is_empty() {
                rule.push_str(" + override");
            }
        }
        rule
    }

    /// Destinations of this core's with a suspension, and with a
    /// throttle, in force (the shaping file's reply rules).
    pub fn held_destinations(&self, now: Instant) -> (u64, u64) {
        let buckets = self.buckets.borrow();
        let mut counts = (0, 0);
        for b in buckets.values() {
            let e = b.backoff.effect(now);
            counts.0 += u64::from(e.suspended_until.is_some());
            counts.1 += u64::from(e.suspended_until.is_none() && e.scale < 1.0);
        }
        counts
    }

    /// Each provider's shared state: suspended, and the share in use.
    pub fn provider_states(&self, now: Instant) -> Vec<crate::control::report::ProviderState> {
        self.refresh();
        let rules = self.rules.borrow();
        (0..rules.provider_count())
            .map(|i| {
                let p = rules.provider(i);
                let e = p.shared.backoff.load(p.shared.epoch()).effect(now);
                crate::control::report::ProviderState {
                    name: p.name.clone(),
                    suspended: e.suspended_until.is_some(),
                    scale: e.scale,
                }
            })
            .collect()
    }

    /// Every warming source's day and today's count, by provider.
    pub fn warmup_states(&self) -> Vec<crate::control::report::WarmupState> {
        self.published
            .warmups
            .states()
            .into_iter()
            .map(
                |(source, provider, s)| crate::control::report::WarmupState {
                    source,
                    provider,
                    day: s.day,
                    sent_today: s.sent,
                },
            )
            .collect()
    }

    /// Reloads the shaping file (blocking: file reads), as SIGHUP does.
    pub fn published(&self) -> Arc<super::Published> {
        self.published.clone()
    }

    /// Whether the rules in force have a pool of this name.
    pub fn has_pool(&self, name: &str) -> bool {
        self.refresh();
        self.rules.borrow().pool(name).is_some()
    }

    /// The name of `domain`'s provider, if this core knows it.
    pub fn provider_name(&self, domain: &str) -> Option<String> {
        let index = self.providers.borrow().get(domain).copied()?;
        Some(self.rules.borrow().provider(index).name.clone())
    }

    /// `effect` with the operator's suspension of `domain` (or its
    /// provider) added.
    pub(super) fn operated_backoff(
        &self,
        domain: &str,
        effect: backoff::Effect,
        now: Instant,
    ) -> backoff::Effect {
        if self.operator.is_empty() {
            return effect;
        }
        let provider = self.provider_name(domain);
        let subject = subject(domain, &provider);
        let until = self.operator.suspended(&subject, now);
        effect.and(backoff::Effect {
            suspended_until: until,
            scale: 1.0,
        })
    }

    /// Until when the operator holds mail of this tenant or campaign.
    pub(super) fn operated_lane(&self, tags: &crate::queue::Tags, now: Instant) -> Option<Instant> {
        if self.operator.is_empty() {
            return None;
        }
        self.operator
            .lane_suspended(&tags.tenant, &tags.campaign, now)
    }

    /// The pool an operator's reroute sends mail of `tenant` for `domain`
    /// to, if one is in force and the pool exists.
    pub(super) fn operated_pool(
        &self,
        domain: &str,
        tenant: &str,
        now: Instant,
    ) -> Option<Arc<egress::Pool>> {
        if self.operator.is_empty() {
            return None;
        }
        let provider = self.provider_name(domain);
        let subject = subject(domain, &provider);
        let name = self.operator.pool(&subject, tenant, now)?;
        self.rules.borrow().pool(&name).cloned()
    }

    /// The next hop an operator's reroute sends `domain` to.
    pub fn operated_next_hop(&self, domain: &str) -> Option<NextHop> {
        if self.operator.is_empty() {
            return None;
        }
        self.operator.next_hop(domain, Instant::now())
    }

    /// `limits` with the operator's overrides for `domain` applied.
    pub(super) fn operated_limits(&self, domain: &str, limits: Arc<Limits>) -> Arc<Limits> {
        if self.operator.is_empty() {
            return limits;
        }
        let provider = self.provider_name(domain);
        let subject = subject(domain, &provider);
        let patches = self.operator.patches(&subject, Instant::now());
        if patches.is_empty() {
            return limits;
        }
        let mut l = (*limits).clone();
        for p in patches {
            apply(&mut l, p);
        }
        Arc::new(l)
    }

    /// Until when the operator holds connections from `source`.
    pub fn source_held(&self, source: &str, now: Instant) -> Option<Instant> {
        if self.operator.is_empty() {
            return None;
        }
        self.operator.source_suspended(source, now)
    }
}

/// What the operator's selectors are matched against for `domain`.
fn subject<'a>(domain: &'a str, provider: &'a Option<String>) -> Subject<'a> {
    Subject {
        domain,
        provider: provider.as_deref(),
    }
}

fn apply(l: &mut Limits, p: Patch) {
    if let Some(c) = p.connections {
        l.connections = c;
    }
    if p.message_rate.is_some() {
        l.message_rate = p.message_rate;
    }
    if p.connection_rate.is_some() {
        l.connection_rate = p.connection_rate;
    }
    if let Some(m) = p.messages_per_connection {
        l.messages_per_connection = m;
    }
}
