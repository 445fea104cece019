//! Reply-driven backoff: `on_response` rules that match a destination's
//! replies and suspend, throttle or bounce, and the state they leave.
//!
//! A rule written in a `[provider.NAME]` acts on the whole provider (every
//! core sees it, through the provider's shared state); one written in a
//! `[destination]` or the `[default]` acts on the one destination, on the
//! core that owns it. Every action ends by itself when its duration runs
//! out. Pure apart from the shared atomics: time is passed in.

use regex::Regex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest pattern accepted, and most rules in one section.
pub const PATTERN_BYTES_MAX: usize = 1024;
pub const RULES_MAX: usize = 64;

/// What a matching reply does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No new connection or message until the duration ends; the mail
    /// waits without spending a retry.
    Suspend,
    /// Connections and message rate divided by `factor` for the duration.
    Throttle { factor: u64 },
    /// The recipient bounces (a temporary reply that means "never").
    Bounce,
    /// The destination sends through the rule's pool for the duration.
    Reroute,
}

/// Where a rule was written, which is what it acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Destination,
    Provider,
}

/// What a suspension holds when it names less than its whole target: the
/// replying message's tenant, or its campaign, at the destination that
/// replied (`scope = "tenant"` or `"campaign"` on a suspend rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Tenant,
    Campaign,
}

#[derive(Debug, Clone)]
pub struct ResponseRule {
    pub pattern: Regex,
    pub action: Action,
    pub duration: Duration,
    pub scope: Scope,
    /// reroute: the pool's name.
    pub pool: Option<String>,
    /// suspend: only the message's tenant or campaign.
    pub lane: Option<Lane>,
}

impl PartialEq for ResponseRule {
    fn eq(&self, other: &ResponseRule) -> bool {
        self.pattern.as_str() == other.pattern.as_str()
            && self.action == other.action
            && self.duration == other.duration
            && self.scope == other.scope
            && self.pool == other.pool
            && self.lane == other.lane
    }
}

impl Eq for ResponseRule {}

impl ResponseRule {
    /// Builds a rule from the file's values; the error says what is wrong.
    pub fn new(
        pattern: &str,
        action: &str,
        duration: Option<Duration>,
        factor: Option<u64>,
        pool: Option<&str>,
        scope: Scope,
    ) -> Result<ResponseRule, String> {
        if pattern.len() > PATTERN_BYTES_MAX {
            return Err(format!("a pattern is at most {PATTERN_BYTES_MAX} bytes"));
        }
        let pattern = Regex::new(pattern).map_err(|e| format!("not a regular expression: {e}"))?;
        let action = match (action, factor) {
            ("suspend", None) => Action::Suspend,
            ("throttle", f) => match f.unwrap_or(2) {
                f @ 2..=1000 => Action::Throttle { factor: f },
                f => return Err(format!("factor {f} is outside 2..=1000")),
            },
            ("bounce", None) => Action::Bounce,
            ("reroute", None) if pool.is_none() => {
                return Err("reroute needs pool = \"NAME\"".into())
            }
            ("reroute", None) => Action::Reroute,
            (_, Some(_)) => return Err("factor goes with action = \"throttle\" only".into()),
            (other, None) => {
                return Err(format!(
                    "{other:?} is not an action: suspend, throttle or bounce"
                ))
            }
        };
        if pool.is_some() && action != Action::Reroute {
            return Err("pool goes with action = \"reroute\" only".into());
        }
        let duration = match (action, duration) {
            (Action::Bounce, None) => Duration::ZERO,
            (Action::Bounce, Some(_)) => return Err("bounce takes no duration".into()),
            (_, Some(d)) => d,
            (_, None) => return Err("suspend and throttle need a duration".into()),
        };
        Ok(ResponseRule {
            pattern,
            action,
            duration,
            scope,
            pool: pool.map(str::to_string),
            lane: None,
        })
    }

    /// The rule with `scope = "tenant"` or `"campaign"` (suspend only).
    pub fn with_lane(mut self, lane: &str) -> Result<ResponseRule, String> {
        if self.action != Action::Suspend {
            return Err("scope goes with action = \"suspend\" only".into());
        }
        self.lane = Some(match lane {
            "tenant" => Lane::Tenant,
            "campaign" => Lane::Campaign,
            other => {
                return Err(format!(
                    "scope {other:?} is neither \"tenant\" nor \"campaign\""
                ))
            }
        });
        Ok(self)
    }

    /// Whether `reply` ("CODE ENHANCED TEXT") matches.
    pub fn matches(&self, reply: &str) -> bool {
        self.pattern.is_match(reply)
    }

    /// The words of a log record: what was done to what, and why.
    pub fn describe(&self, target: &str) -> String {
        let what = match self.action {
            Action::Suspend => "suspended".to_string(),
            Action::Throttle { factor } => format!("throttled (limits divided by {factor})"),
            Action::Bounce => return format!("bounce by rule /{}/", self.pattern.as_str()),
            Action::Reroute => format!(
                "rerouted to pool {}",
                self.pool.as_deref().unwrap_or_default()
            ),
        };
        format!(
            "{target} {what} for {}s by rule /{}/",
            self.duration.as_secs(),
            self.pattern.as_str()
        )
    }
}

/// A suspension and a throttle, as deadlines, and (adaptive mode) the
/// share of its limits a destination has earned; what a destination (per
/// core) or a provider (shared, in atomics) is under now.
#[derive(Debug, Default, Clone, Copy)]
pub struct Backoff {
    pub suspended_until: Option<Instant>,
    pub throttled_until: Option<Instant>,
    pub factor: u64,
    pub adaptive: Option<Adaptive>,
}

/// Adaptive mode's state: the share (0 to 1) of the configured
/// connections and rate in use, and when it was last cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    pub level: f64,
    pub last_cut: Instant,
    pub last_raise: Instant,
}

/// Adaptive mode never goes below this share of the limits.
pub const ADAPTIVE_LEVEL_MIN: f64 = 0.01;
/// At most one cut, and one raise, this often: a burst of 4xx replies to
/// messages sent before the last cut took effect does not cut again, and
/// the share grows by one step a second (additive increase), not one a
/// delivery.
pub const ADAPTIVE_CUT_EVERY: Duration = Duration::from_secs(1);

impl Backoff {
    pub fn apply(&mut self, rule: &ResponseRule, now: Instant) {
        let until = now + rule.duration;
        match rule.action {
            Action::Suspend => {
                self.suspended_until = Some(until.max(self.suspended_until.unwrap_or(until)))
            }
            Action::Throttle { factor } => {
                self.throttled_until = Some(until);
                self.factor = factor;
            }
            Action::Bounce | Action::Reroute => {}
        }
    }

    /// When the suspension ends, if one is in force at `now`.
    pub fn suspended(&self, now: Instant) -> Option<Instant> {
        self.suspended_until.filter(|t| *t > now)
    }

    /// The divisor for connections and rate at `now` (1: none).
    pub fn factor(&self, now: Instant) -> u64 {
        match self.throttled_until {
            Some(t) if t > now => self.factor.max(1),
            _ => 1,
        }
    }

    /// Whether it says nothing any more.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.suspended(now).is_none() && self.factor(now) == 1 && self.adaptive.is_none()
    }
}

/// What a destination is under at one moment, its own backoff and its
/// provider's together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effect {
    /// When the suspension in force ends; `None`: not suspended.
    pub suspended_until: Option<Instant>,
    /// Connections and rates are multiplied by this (1: full).
    pub scale: f64,
}

impl Effect {
    pub const NONE: Effect = Effect {
        suspended_until: None,
        scale: 1.0,
    };

    /// Both at once: the later suspension, the smaller share.
    pub fn and(self, other: Effect) -> Effect {
        Effect {
            suspended_until: self.suspended_until.max(other.suspended_until),
            scale: self.scale.min(other.scale),
        }
    }

    /// `connections` under this effect, at least one.
    pub fn connections(&self, connections: u32) -> u32 {
        ((connections as f64 * self.scale).floor() as u32).max(1)
    }
}

impl Backoff {
    pub fn effect(&self, now: Instant) -> Effect {
        let level = self.adaptive.map_or(1.0, |a| a.level);
        Effect {
            suspended_until: self.suspended(now),
            scale: (1.0 / self.factor(now) as f64).min(level),
        }
    }

    /// Adaptive mode, on a 4xx reply: halves the share, at most once per
    /// [`ADAPTIVE_CUT_EVERY`]. Returns the new share if it was cut.
    pub fn cut(&mut self, now: Instant) -> Option<f64> {
        let a = self.adaptive.get_or_insert(Adaptive {
            level: 1.0,
            last_cut: now - ADAPTIVE_CUT_EVERY,
            last_raise: now,
        });
        if now.saturating_duration_since(a.last_cut) < ADAPTIVE_CUT_EVERY {
            return None;
        }
        a.level = (a.level / 2.0).max(ADAPTIVE_LEVEL_MIN);
        a.last_cut = now;
        Some(a.level)
    }

    /// Adaptive mode, on a delivery: raises the share by `step` if a
    /// second has passed since the last cut or raise, up to the whole of
    /// the limits.
    pub fn raise(&mut self, step: f64, now: Instant) {
        if let Some(a) = &mut self.adaptive {
            let last = a.last_cut.max(a.last_raise);
            if now.saturating_duration_since(last) < ADAPTIVE_CUT_EVERY {
                return;
            }
            a.level = (a.level + step).min(1.0);
            a.last_raise = now;
            if a.level >= 1.0 {
                self.adaptive = None;
            }
        }
    }
}

/// A [`Backoff`] every core can read and set: deadlines in nanoseconds
/// after an epoch, one atomic each; adaptive mode's share as the bits of
/// an f64 (0: not cut), with its last cut and raise; and a reroute.
#[derive(Debug, Default)]
pub struct SharedBackoff {
    suspended_until_ns: AtomicU64,
    throttled_until_ns: AtomicU64,
    factor: AtomicU64,
    level_bits: AtomicU64,
    last_cut_ns: AtomicU64,
    last_raise_ns: AtomicU64,
    /// A reroute in force: until when (checked first, without the lock),
    /// and the pool.
    reroute_until_ns: AtomicU64,
    reroute: std::sync::Mutex<Option<std::sync::Arc<super::egress::Pool>>>,
    /// Bumped by every reroute, so a core may keep the pool it last read.
    reroute_generation: AtomicU64,
}

impl SharedBackoff {
    pub fn apply(&self, rule: &ResponseRule, epoch: Instant, now: Instant) {
        let until = (now + rule.duration)
            .saturating_duration_since(epoch)
            .as_nanos() as u64;
        match rule.action {
            Action::Suspend => {
                self.suspended_until_ns.fetch_max(until, Ordering::AcqRel);
            }
            Action::Throttle { factor } => {
                self.factor.store(factor, Ordering::Release);
                self.throttled_until_ns.store(until, Ordering::Release);
            }
            Action::Bounce | Action::Reroute => {}
        }
    }

    /// Sends the provider's mail out from `pool` until `until`.
    pub fn reroute(
        &self,
        pool: std::sync::Arc<super::egress::Pool>,
        epoch: Instant,
        until: Instant,
    ) {
        *self.reroute.lock().expect("not poisoned") = Some(pool);
        self.reroute_generation.fetch_add(1, Ordering::AcqRel);
        let until = until.saturating_duration_since(epoch).as_nanos() as u64;
        self.reroute_until_ns.store(until, Ordering::Release);
    }

    /// Whether a reroute is in force, and its generation (a lock-free
    /// look, for every message).
    pub fn reroute_in_force(&self, epoch: Instant, now: Instant) -> Option<u64> {
        let now_ns = now.saturating_duration_since(epoch).as_nanos() as u64;
        (self.reroute_until_ns.load(Ordering::Acquire) > now_ns)
            .then(|| self.reroute_generation.load(Ordering::Acquire))
    }

    /// The pool of the reroute in force (takes the lock: a core reads it
    /// once per reroute and keeps it).
    pub fn reroute_pool(&self) -> Option<std::sync::Arc<super::egress::Pool>> {
        self.reroute.lock().expect("not poisoned").clone()
    }

    pub fn load(&self, epoch: Instant) -> Backoff {
        let at = |ns: u64| (ns > 0).then(|| epoch + Duration::from_nanos(ns));
        let level = f64::from_bits(self.level_bits.load(Ordering::Acquire));
        Backoff {
            suspended_until: at(self.suspended_until_ns.load(Ordering::Acquire)),
            throttled_until: at(self.throttled_until_ns.load(Ordering::Acquire)),
            factor: self.factor.load(Ordering::Acquire),
            adaptive: (level > 0.0).then_some(Adaptive {
                level,
                last_cut: epoch,
                last_raise: epoch,
            }),
        }
    }

    /// Adaptive mode on a provider's totals, for every core: halves the
    /// share at most once per [`ADAPTIVE_CUT_EVERY`] (the core that wins
    /// the race cuts). Returns the new share if it was cut.
    pub fn cut(&self, epoch: Instant, now: Instant) -> Option<f64> {
        let now_ns = now.saturating_duration_since(epoch).as_nanos() as u64;
        let every = ADAPTIVE_CUT_EVERY.as_nanos() as u64;
        let last = self.last_cut_ns.load(Ordering::Acquire);
        if last != 0 && now_ns.saturating_sub(last) < every {
            return None;
        }
        self.last_cut_ns
            .compare_exchange(last, now_ns.max(1), Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let mut cut = 0.0;
        let _ = self
            .level_bits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let level = match f64::from_bits(bits) {
                    l if l > 0.0 => l,
                    _ => 1.0,
                };
                cut = (level / 2.0).max(ADAPTIVE_LEVEL_MIN);
                Some(cut.to_bits())
            });
        Some(cut)
    }

    /// Adaptive mode on a provider's totals: raises the share by `step`
    /// at most once a second after the last cut or raise, back to whole.
    pub fn raise(&self, step: f64, epoch: Instant, now: Instant) {
        let level = f64::from_bits(self.level_bits.load(Ordering::Acquire));
        if level <= 0.0 {
            return;
        }
        let now_ns = now.saturating_duration_since(epoch).as_nanos() as u64;
        let every = ADAPTIVE_CUT_EVERY.as_nanos() as u64;
        let last_raise = self.last_raise_ns.load(Ordering::Acquire);
        let last = self.last_cut_ns.load(Ordering::Acquire).max(last_raise);
        if now_ns.saturating_sub(last) < every {
            return;
        }
        if self
            .last_raise_ns
            .compare_exchange(last_raise, now_ns, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // A cut on another core since `level` was read is kept: the raise
        // applies to whatever the share is now.
        let _ = self
            .level_bits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let level = f64::from_bits(bits);
                if level <= 0.0 {
                    return None;
                }
                let raised = level + step;
                Some(if raised >= 1.0 { 0 } else { raised.to_bits() })
            });
    }
}

/// When mail held by a suspension ending at `until` becomes ready: spread
/// over a tenth of the suspension (at most a minute), so a provider is not
/// met by every queued message in the same instant.
pub fn with_jitter(until: Instant, suspension: Duration) -> Instant {
    let spread = (suspension / 10).min(Duration::from_secs(60));
    until + spread.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, action: &str, secs: Option<u64>) -> Result<ResponseRule, String> {
        ResponseRule::new(
            pattern,
            action,
            secs.map(Duration::from_secs),
            None,
            None,
            Scope::Destination,
        )
    }

    #[test]
    fn rules_are_checked() {
        assert!(rule("421 .*rate limited", "suspend", Some(60)).is_ok());
        assert!(rule("550 5.1.1", "bounce", None).is_ok());
        assert!(rule("(", "suspend", Some(60))
            .unwrap_err()
            .contains("regular expression"));
        assert!(rule("421", "suspend", None)
            .unwrap_err()
            .contains("duration"));
        assert!(rule("421", "reroute", Some(60))
            .unwrap_err()
            .contains("needs pool"));
        assert!(rule("421", "pause", Some(60))
            .unwrap_err()
            .contains("not an action"));
        let t = ResponseRule::new(
            "451",
            "throttle",
            Some(Duration::from_secs(5)),
            None,
            None,
            Scope::Provider,
        )
        .unwrap();
        assert_eq!(t.action, Action::Throttle { factor: 2 });
    }

    #[test]
    fn a_backoff_ends_by_itself() {
        let now = Instant::now();
        let mut b = Backoff::default();
        b.apply(&rule("x", "suspend", Some(30)).unwrap(), now);
        assert_eq!(b.suspended(now), Some(now + Duration::from_secs(30)));
        assert!(b.suspended(now + Duration::from_secs(31)).is_none());
        let shared = SharedBackoff::default();
        let t = ResponseRule::new(
            "x",
            "throttle",
            Some(Duration::from_secs(10)),
            Some(4),
            None,
            Scope::Provider,
        )
        .unwrap();
        shared.apply(&t, now, now);
        assert_eq!(shared.load(now).factor(now + Duration::from_secs(5)), 4);
        assert_eq!(shared.load(now).factor(now + Duration::from_secs(11)), 1);
        let mut a = Backoff::default();
        assert_eq!(a.cut(now), Some(0.5));
        assert_eq!(
            a.cut(now + Duration::from_millis(10)),
            None,
            "once a second"
        );
        assert_eq!(a.cut(now + Duration::from_secs(1)), Some(0.25));
        assert_eq!(a.effect(now).scale, 0.25);
        let later = now + Duration::from_secs(2);
        a.raise(0.5, later);
        assert_eq!(a.effect(now).scale, 0.75);
        a.raise(0.5, later);
        assert_eq!(a.effect(now).scale, 0.75, "once a second");
        a.raise(0.5, later + Duration::from_secs(1));
        assert!(a.adaptive.is_none(), "back at the limits");
        let j = with_jitter(now, Duration::from_secs(100));
        assert!(j >= now && j <= now + Duration::from_secs(10));
    }
}
