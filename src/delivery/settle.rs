//! Settling what an attempt did to each recipient: a bounce's DSN is
//! spooled first, then the state records go to this core's spool, then the
//! log lines, then the queue moves on (forget, retry now, retry later).
//!
//! It must never let the queue forget a recipient before its state record
//! was handed to the spool, and never make a bounce final before its DSN is
//! durable (if the DSN cannot be spooled, the recipient stays deferred).

use super::outcome::Outcome;
use super::Remote;
use crate::bounce::Failure;
use crate::delivery_log::{now_ms, Kind, Record};
use crate::engine::Core;
use crate::queue::{Entry, Indexes};
use crate::shaping::backoff::{with_jitter, Action};
use crate::shaping::Reaction;
use spool_format::{encode_state, StateRecord};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What becomes of one recipient after this attempt.
enum Fate {
    Delivered,
    Bounced,
    Expired,
    Later,
    RetryNow,
    /// Suspended by a reply rule: ready again at this time, without a
    /// retry spent.
    Held(Instant),
}

/// Applies one attempt's outcomes for `entry`.
pub async fn settle(
    core: &Rc<Core>,
    domain: &str,
    entry: Entry,
    outcomes: Vec<(u32, Outcome)>,
    remote: Option<&Remote>,
) {
    let now = now_ms();
    let attempt = entry.attempts + 1;
    let limits = core.shaper.limits(domain);
    let received_ms = entry.message.envelope().received_ms();
    let expired = now >= received_ms.saturating_add(limits.expire.as_millis() as u64);
    let reactions = react(core, &entry, domain, &outcomes, remote, now);
    adapt(core, &entry, domain, &outcomes, remote, now);
    let mut fates: Vec<(u32, Fate, String)> = outcomes
        .into_iter()
        .map(|(i, o)| {
            let rule = reactions
                .iter()
                .find(|(reply, _)| reply == o.reason())
                .map(|(_, r)| &r.rule);
            let action = rule.map(|r| r.action);
            match o {
                Outcome::Delivered(r) => (i, Fate::Delivered, r),
                Outcome::Bounced(r) => (i, Fate::Bounced, r),
                Outcome::Retry(r) | Outcome::Deferred(r) if action == Some(Action::Bounce) => {
                    (i, Fate::Bounced, format!("{r} (bounced by a reply rule)"))
                }
                Outcome::Retry(r) => (i, Fate::RetryNow, r),
                Outcome::Deferred(r) if expired => (
                    i,
                    Fate::Expired,
                    format!("{r} (gave up after {attempt} attempts)"),
                ),
                Outcome::Deferred(r) if action == Some(Action::Suspend) => {
                    let d = rule.map_or(Duration::ZERO, |r| r.duration);
                    let at = with_jitter(Instant::now() + d, d);
                    (i, Fate::Held(at), format!("{r} (held while suspended)"))
                }
                Outcome::Deferred(r) => (i, Fate::Later, r),
            }
        })
        .collect();
    dsn_first(core, &entry, &mut fates, remote).await;
    let next_in = limits.retry.delay(attempt);
    let next_ms = now + next_in.as_millis() as u64;
    let (mut records, mut about) = (Vec::new(), Vec::new());
    let mut finished = 0;
    let (mut retry_now, mut later) = (Indexes::new(), Indexes::new());
    let mut held: Vec<(u32, Instant)> = Vec::new();
    for (index, fate, reason) in &fates {
        let (recipient, time_ms, reason) = (*index, now, reason.as_str());
        let (state, kind) = match fate {
            Fate::Delivered => (
                Some(StateRecord::Delivered { recipient, time_ms }),
                Kind::Delivery,
            ),
            Fate::Bounced => (
                Some(StateRecord::Bounced {
                    recipient,
                    time_ms,
                    reason,
                }),
                Kind::Bounce,
            ),
            Fate::Expired => (
                Some(StateRecord::Expired { recipient, time_ms }),
                Kind::Expiration,
            ),
            Fate::Later => (
                Some(StateRecord::Attempt {
                    recipient,
                    time_ms,
                    attempt,
                    next_ms,
                    reason,
                }),
                Kind::TransientFailure,
            ),
            Fate::RetryNow => (None, Kind::TransientFailure),
            Fate::Held(at) => (
                Some(StateRecord::Attempt {
                    recipient,
                    time_ms,
                    attempt: entry.attempts,
                    next_ms: now + at.saturating_duration_since(Instant::now()).as_millis() as u64,
                    reason,
                }),
                Kind::TransientFailure,
            ),
        };
        match fate {
            Fate::Later => later.push(recipient),
            Fate::RetryNow => retry_now.push(recipient),
            Fate::Held(at) => held.push((recipient, *at)),
            Fate::Delivered | Fate::Bounced | Fate::Expired => finished += 1,
        }
        if let Some(state) = state {
            encode_state(&mut records, entry.message.id, &state);
            about.push(entry.message.stored.clone());
        }
        log(
            core, &entry, domain, recipient, kind, reason, attempt, remote, now,
        );
    }
    if !records.is_empty() {
        // Queued in order before the queue moves on; not waited for: a
        // state record lost to a crash means a repeated attempt, not a loss.
        core.spool.append_lazy(records, about);
    }
    // After the final records are queued: the last one lets the reclaimer
    // delete the message's segment.
    entry.message.stored.finish(finished);
    if !retry_now.is_empty() {
        core.queues.push_ready(
            domain,
            Entry {
                recipients: retry_now,
                ..entry.clone()
            },
            true,
        );
    }
    for (recipient, at) in held {
        let entry = Entry {
            recipients: smallvec::smallvec![recipient],
            ..entry.clone()
        };
        core.queues.schedule(domain, entry, at);
    }
    if !later.is_empty() {
        core.queues.schedule(
            domain,
            Entry {
                recipients: later,
                attempts: attempt,
                ..entry
            },
            Instant::now() + next_in,
        );
    }
}

/// A destination said the mailbox does not exist: the address goes on
/// the global suppression list (in a task of its own: the journal write
/// must not hold up delivery).
fn suppress_invalid(core: &Core, address: &str, reply: &str, now: u64) {
    use crate::suppression::lists::{Change, Op};
    match Change::new(Op::Add, "", address, reply, "bounce", now) {
        Ok(change) => core.suppression.submit_later(change),
        Err(e) => eprintln!("spate: core {}: not suppressed: {e}", core.index),
    }
}

/// Runs each distinct reply of the attempt through the destination's reply
/// rules; every rule that acts gets a `Backoff` record of its own, naming
/// what it did and the reply that made it.
/// How the reply of an operator's bounce (admin API) begins: it is no
/// destination's reply, so no reply rule reacts to it.
pub const OPERATOR_BOUNCE: &str = "550 5.7.1 Bounced by the operator";
/// How the reply of a recipient bounced because it is suppressed begins
/// (no destination's reply either).
pub const SUPPRESSED_BOUNCE: &str = "550 5.7.1 Suppressed:";

fn react(
    core: &Core,
    entry: &Entry,
    domain: &str,
    outcomes: &[(u32, Outcome)],
    remote: Option<&Remote>,
    now: u64,
) -> Vec<(String, Reaction)> {
    let mut seen: Vec<&str> = Vec::new();
    let mut reactions = Vec::new();
    let envelope = entry.message.envelope();
    let (tenant, campaign) = envelope.tags();
    for (index, outcome) in outcomes {
        let reply = outcome.reason();
        if seen.contains(&reply)
            || reply.starts_with(OPERATOR_BOUNCE)
            || reply.starts_with(SUPPRESSED_BOUNCE)
        {
            continue;
        }
        seen.push(reply);
        let tags = (tenant.as_ref(), campaign.as_ref());
        let Some(reaction) = core.shaper.react(domain, reply, tags, Instant::now()) else {
            continue;
        };
        let mut what = reaction.rule.describe(&reaction.target);
        if let Some(held) = hold_warmup(core, &reaction, remote) {
            what = format!("{what}; {held}");
        }
        let response = format!("{what}: {reply}");
        log_backoff(core, entry, domain, *index, &response, remote, now);
        reactions.push((reply.to_string(), reaction));
    }
    reactions
}

/// A throttling or suspending reply to a warming source keeps it on its
/// plan day with the provider: today will not count as a sending day.
fn hold_warmup(core: &Core, reaction: &Reaction, remote: Option<&Remote>) -> Option<String> {
    if !matches!(
        reaction.rule.action,
        Action::Suspend | Action::Throttle { .. }
    ) {
        return None;
    }
    let warm = remote?.warm.as_ref()?;
    let state = warm.progress.hold(core.shaper.today());
    Some(format!(
        "source {} held on sending day {} of warm-up plan {} for provider {}",
        remote?.source.as_deref().unwrap_or_default(),
        state.day + 1,
        warm.plan.name,
        warm.provider
    ))
}

/// Logs that a warming source reached today's volume for a provider with
/// this entry's message (a `Warmup` record for its first recipient).
pub(super) fn log_warmup_full(
    core: &Core,
    domain: &str,
    entry: &Entry,
    taken: crate::shaping::warmup::Taken,
    remote: &Remote,
) {
    let Some(warm) = &remote.warm else { return };
    let next = match &warm.plan.overflow {
        crate::shaping::warmup::Overflow::Queue => "waits in the queue".to_string(),
        crate::shaping::warmup::Overflow::Pool(p) => format!("goes out from pool {p}"),
    };
    let response = format!(
        "source {} sent its {} messages of sending day {} of warm-up plan {} to provider {}; more today {next}",
        remote.source.as_deref().unwrap_or_default(),
        taken.state.sent,
        taken.state.day + 1,
        warm.plan.name,
        warm.provider
    );
    let index = entry.recipients[0];
    let attempt = entry.attempts + 1;
    log(
        core,
        entry,
        domain,
        index,
        Kind::Warmup,
        &response,
        attempt,
        Some(remote),
        now_ms(),
    );
}

/// Adaptive mode: a 4xx reply from the destination cuts the share of its
/// limits in use (logged as a `Backoff` record), a delivery raises it.
fn adapt(
    core: &Core,
    entry: &Entry,
    domain: &str,
    outcomes: &[(u32, Outcome)],
    remote: Option<&Remote>,
    now: u64,
) {
    // Only a reply the destination gave counts, not a deferral spate
    // made itself (DNS, a loop, a denied network, a lost connection).
    let pushed_back = outcomes
        .iter()
        .filter(|_| remote.is_some())
        .find(|(_, o)| matches!(o, Outcome::Deferred(r) if r.starts_with('4')));
    let delivered = outcomes
        .iter()
        .any(|(_, o)| matches!(o, Outcome::Delivered(_)));
    let provider_cut =
        core.shaper
            .adapt_provider(domain, pushed_back.is_some(), delivered, Instant::now());
    if let (Some((provider, level)), Some((index, outcome))) = (provider_cut, pushed_back) {
        let response = format!(
            "provider {provider} adaptive: its total connections and rate cut to {:.0}% for every core: {}",
            level * 100.0,
            outcome.reason()
        );
        log_backoff(core, entry, domain, *index, &response, remote, now);
    }
    let cut = core
        .shaper
        .adapt(domain, pushed_back.is_some(), delivered, Instant::now());
    if let (Some(level), Some((index, outcome))) = (cut, pushed_back) {
        let response = format!(
            "destination {domain} adaptive: connections and rate cut to {:.0}% of the limits: {}",
            level * 100.0,
            outcome.reason()
        );
        log_backoff(core, entry, domain, *index, &response, remote, now);
    }
}

/// A `Backoff` record about the attempt that caused it.
fn log_backoff(
    core: &Core,
    entry: &Entry,
    domain: &str,
    index: u32,
    response: &str,
    remote: Option<&Remote>,
    now: u64,
) {
    let attempt = entry.attempts + 1;
    log(
        core,
        entry,
        domain,
        index,
        Kind::Backoff,
        response,
        attempt,
        remote,
        now,
    );
}

/// Spools the DSN for the bounced and expired recipients (not for the null
/// sender). If it cannot be spooled, they are deferred instead, so that a
/// final record never stands without its DSN.
async fn dsn_first(
    core: &Core,
    entry: &Entry,
    fates: &mut [(u32, Fate, String)],
    remote: Option<&Remote>,
) {
    let envelope = entry.message.envelope();
    let failures: Vec<Failure> = fates
        .iter()
        .filter(|(_, f, _)| matches!(f, Fate::Bounced | Fate::Expired))
        .map(|(i, f, r)| Failure {
            recipient: envelope.address(*i).into_owned(),
            diagnostic: r.clone(),
            expired: matches!(f, Fate::Expired),
            remote_mta: remote.map(|r| r.host.clone()),
        })
        .collect();
    if failures.is_empty() || envelope.sender().is_empty() {
        return;
    }
    drop(envelope);
    if let Err(e) = core.send_dsn(&entry.message, &failures).await {
        for (_, fate, reason) in fates
            .iter_mut()
            .filter(|(_, f, _)| matches!(f, Fate::Bounced | Fate::Expired))
        {
            *fate = Fate::Later;
            reason.push_str(&format!(" (bounce notice not spooled: {e}; will retry)"));
        }
    }
}

/// Gives every ready entry of `domain` the same outcome (DNS said no, or no
/// host could be reached).
///
/// A domain may have a million entries ready when its destination goes
/// down: they are settled one at a time, letting other tasks of the core
/// run whenever this one has had its share of time, and the taken entries
/// are never copied into a list of their own.
pub async fn fail_domain(core: &Rc<Core>, domain: &str, outcome: Outcome, remote: Option<&Remote>) {
    fail_domain_where(core, domain, outcome, remote, |_| true).await
}

/// [`fail_domain`] for the lanes (tenant and campaign) `lanes` picks only.
pub async fn fail_domain_where(
    core: &Rc<Core>,
    domain: &str,
    outcome: Outcome,
    remote: Option<&Remote>,
    lanes: impl Fn(&crate::queue::Tags) -> bool,
) {
    let ready = core.queues.load(domain).0;
    for _ in 0..ready {
        let popped = core.queues.pop_allowed(domain, |tags| {
            if lanes(tags) {
                crate::queue::Allow::Yes
            } else {
                crate::queue::Allow::No
            }
        });
        let crate::queue::Pop::Entry(entry, _) = popped else {
            return;
        };
        let outcomes = entry
            .recipients
            .iter()
            .map(|&i| (i, outcome.clone()))
            .collect();
        settle(core, domain, entry, outcomes, remote).await;
        glommio::yield_if_needed().await;
    }
}

#[allow(clippy::too_many_arguments)]
fn log(
    core: &Core,
    entry: &Entry,
    domain: &str,
    index: u32,
    kind: Kind,
    response: &str,
    attempt: u32,
    remote: Option<&Remote>,
    now: u64,
) {
    let envelope = entry.message.envelope();
    let sender = envelope.sender();
    let final_failure = matches!(kind, Kind::Bounce | Kind::Expiration);
    let double = final_failure && sender.is_empty();
    let (tenant, campaign) = envelope.tags();
    let lost;
    let failed = matches!(
        kind,
        Kind::TransientFailure | Kind::Bounce | Kind::Expiration
    );
    let class = failed.then(|| core.classes.classify(response));
    let address = envelope.address(index);
    // Only a destination's own permanent reply: a transient one bounced
    // by a reply rule (450 4.1.1, say) says nothing final of the mailbox.
    let permanent = remote.is_some() && response.starts_with('5');
    if kind == Kind::Bounce && permanent && class.is_some_and(|c| c.suppresses()) {
        suppress_invalid(core, &address, response, now);
    }
    let mut record = Record {
        kind,
        time_ms: now,
        id: entry.message.id_text(),
        sender: &sender,
        recipient: &address,
        domain,
        mx_host: remote.map(|r| r.host.as_str()),
        mx_ip: remote.map(|r| r.ip),
        connection: remote.map(|r| r.connection),
        source: remote.and_then(|r| r.source.as_deref()),
        response,
        attempt,
        size: entry.message.body_len(),
        queue_time_ms: now.saturating_sub(envelope.received_ms()),
        core: core.index,
        tenant: &tenant,
        campaign: &campaign,
        by: None,
        reason: None,
        class: class.map(|c| c.name()),
        message_id: None,
    };
    core.log.write(&record);
    if double {
        lost = format!("no notice can be sent for mail from the null sender: {response}");
        record.kind = Kind::DoubleBounce;
        record.response = &lost;
        core.log.write(&record);
    }
}
