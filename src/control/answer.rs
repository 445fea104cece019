//! How a core answers a control [`Request`]: from its own queues, shaper,
//! delivery log and spool, on its own thread. Bouncing settles entries the
//! way delivery does (DSNs included); everything else only reads, or
//! changes this core's copy of the operator's actions.

use super::report::*;
use super::{Reply, Request};
use crate::delivery::outcome::Outcome;
use crate::delivery_log::{Kind, Record};
use crate::engine::Core;
use crate::queue::DomainView;
use crate::shaping::operator::Selector;
use std::rc::Rc;
use std::time::Instant;

pub(super) async fn answer(core: &Rc<Core>, request: Request) -> Reply {
    match request {
        Request::Summary => Reply::Summary(summary(core)),
        Request::Queues { sort, limit } => Reply::Queues(queues(core, sort, limit)),
        Request::Queue { domain } => Reply::Queue(queue(core, &domain).map(Box::new)),
        Request::Act(action) => {
            let ok = core.shaper.act(action);
            // Mail held or released by it is looked at again now.
            core.queues.mark_all_dirty();
            Reply::Acted(ok)
        }
        Request::End(id) => {
            let ended = core.shaper.end_action(id);
            core.queues.mark_all_dirty();
            Reply::Ended(ended)
        }
        Request::Actions => Reply::Actions(core.shaper.actions()),
        Request::Bounce {
            selector,
            by,
            reason,
        } => Reply::Bounced(bounce(core, &selector, &by, &reason).await),
        Request::Find { id, recipient } => Reply::Found(find(core, id, recipient.as_deref())),
        Request::Metrics => Reply::Metrics(Box::new(metrics(core))),
        Request::Subscribe { filter, tx } => {
            Reply::Subscribed(core.log.stream.subscribe(filter, tx))
        }
        Request::Suppress(change) => Reply::Suppressed(core.suppression.commit(change).await),
        Request::Replicate(change) => {
            core.suppression.replicate(&change);
            Reply::Done
        }
        Request::Log { what, by, reason } => {
            core.log
                .write(&Record::admin(&what, &by, &reason, core.index));
            Reply::Done
        }
    }
}

fn summary(core: &Core) -> CoreSummary {
    let k = core.log.tally.by_kind();
    let at = |kind: Kind| k[Kind::ALL.iter().position(|x| *x == kind).expect("in ALL")];
    let q = core.queues.summary();
    let now = Instant::now();
    CoreSummary {
        received: at(Kind::Reception),
        delivered: at(Kind::Delivery),
        deferred: at(Kind::TransientFailure),
        bounced: at(Kind::Bounce),
        expired: at(Kind::Expiration),
        ready: q.ready as u64,
        waiting: q.scheduled as u64,
        suspended: core
            .queues
            .ready_views()
            .iter()
            .map(|v| held(core, v, now) as u64)
            .sum(),
        connections_in: core.inbound.sessions() as u64,
        connections_out: u64::from(core.queues.open_connections()),
        domains: q.domains as u64,
    }
}

fn row(core: &Core, v: &DomainView, now: Instant, now_ms: u64) -> QueueRow {
    let d = &v.domain;
    let until = core.shaper.backoff(d, now).suspended_until;
    let suspended = held(core, v, now);
    let (deferred, last) = core.log.tally.last(d);
    let limits = core.shaper.limits(d);
    QueueRow {
        domain: d.clone(),
        core: core.index,
        ready: v.ready() - suspended,
        waiting: v.waiting,
        suspended,
        suspended_until_ms: until
            .map(|u| now_ms + u.saturating_duration_since(now).as_millis() as u64),
        oldest_age_s: v
            .oldest_ms
            .map_or(0.0, |o| now_ms.saturating_sub(o) as f64 / 1000.0),
        connections: v.connections,
        deferred,
        last_reply: last.map(|r| ReplySeen {
            time_ms: r.time_ms,
            text: r.text.into(),
        }),
        limits: LimitsView {
            connections: limits.connections,
            message_rate: limits.message_rate.map(|r| r.to_string()),
            connection_rate: limits.connection_rate.map(|r| r.to_string()),
            rule: core.shaper.rule_of(d),
        },
        actions: core
            .shaper
            .actions_for(d)
            .into_iter()
            .map(|id| format!("a{id}"))
            .collect(),
    }
}

/// The core's first `limit` destinations by `sort`. Only those get a
/// whole row (limits, rules, actions): the choice uses counts alone.
fn queues(core: &Core, sort: Sort, limit: usize) -> Vec<QueueRow> {
    let (now, now_ms) = (Instant::now(), crate::delivery_log::now_ms());
    let mut views = core.queues.views(sort == Sort::Age);
    // Domains that only deferred (nothing queued now) still sort by it.
    if sort == Sort::Deferred {
        let queued: std::collections::HashSet<String> =
            views.iter().map(|v| v.domain.clone()).collect();
        for (domain, _) in core.log.tally.deferred_domains() {
            if crate::router::owner_of(&domain, core.cores) == core.index
                && !queued.contains(&domain)
            {
                views.push(DomainView {
                    domain,
                    lanes: Vec::new(),
                    waiting: 0,
                    connections: 0,
                    oldest_ms: None,
                });
            }
        }
    }
    match sort {
        Sort::Ready => views.sort_by_key(|v| std::cmp::Reverse((v.ready(), v.waiting))),
        Sort::Deferred => {
            views.sort_by_key(|v| std::cmp::Reverse(core.log.tally.last(&v.domain).0))
        }
        Sort::Age => views.sort_by_key(|v| v.oldest_ms.unwrap_or(u64::MAX)),
    }
    views.truncate(limit);
    if sort != Sort::Age {
        core.queues.add_ages(&mut views);
    }
    // Already in order: each row's sort key is its view's.
    views.iter().map(|v| row(core, v, now, now_ms)).collect()
}

/// Ready entries of `v` held by a suspension now.
fn held(core: &Core, v: &DomainView, now: Instant) -> usize {
    if core
        .shaper
        .backoff(&v.domain, now)
        .suspended_until
        .is_some()
    {
        return v.ready();
    }
    v.lanes
        .iter()
        .filter(|(t, _)| core.shaper.lane_held(&v.domain, t, now).is_some())
        .map(|(_, n)| n)
        .sum()
}

fn queue(core: &Core, domain: &str) -> Option<QueueDetail> {
    let history = core.log.tally.history(domain);
    let view = core.queues.view(domain);
    if view.is_none() && history.is_none() {
        return None;
    }
    let view = view.unwrap_or(DomainView {
        domain: domain.to_string(),
        lanes: Vec::new(),
        waiting: 0,
        connections: 0,
        oldest_ms: None,
    });
    let row = row(core, &view, Instant::now(), crate::delivery_log::now_ms());
    let replies = history.map_or_else(Vec::new, |h| {
        h.replies
            .iter()
            .map(|r| ReplySeen {
                time_ms: r.time_ms,
                text: r.text.to_string(),
            })
            .collect()
    });
    Some(QueueDetail { row, replies })
}

/// Whether mail for `domain` can be what `selector` names.
fn domain_selected(core: &Core, selector: &Selector, domain: &str) -> bool {
    match selector {
        Selector::Domain(d) => d.eq_ignore_ascii_case(domain),
        Selector::Provider(p) => core.shaper.provider_name(domain).as_deref() == Some(p),
        Selector::Tenant(_) | Selector::Campaign(_) => true,
        // Mail is not tied to a source until a connection takes it.
        Selector::Source(_) => false,
    }
}

/// Whether the lane's tags are what `selector` names.
fn lane_selected(selector: &Selector, tenant: &str, campaign: &str) -> bool {
    match selector {
        Selector::Tenant(t) => t == tenant,
        Selector::Campaign(c) => c == campaign,
        _ => true,
    }
}

/// Bounces every queued entry the selector names, with DSNs; returns the
/// recipients bounced.
async fn bounce(core: &Rc<Core>, selector: &Selector, by: &str, reason: &str) -> u64 {
    let taken = core.queues.take_where(|domain, entry| {
        let envelope = entry.message.envelope();
        let (tenant, campaign) = envelope.tags();
        domain_selected(core, selector, domain) && lane_selected(selector, &tenant, &campaign)
    });
    let text = format!(
        "{} ({by}): {reason}",
        crate::delivery::settle::OPERATOR_BOUNCE
    );
    let mut bounced = 0u64;
    for (domain, entry) in taken {
        let outcomes = entry
            .recipients
            .iter()
            .map(|&i| (i, Outcome::Bounced(text.clone())))
            .collect::<Vec<_>>();
        bounced += outcomes.len() as u64;
        crate::delivery::settle::settle(core, &domain, entry, outcomes, None).await;
        glommio::yield_if_needed().await;
    }
    bounced
}

fn find(core: &Core, id: Option<u64>, recipient: Option<&str>) -> Vec<Queued> {
    let found = core.queues.find(|e| match (id, recipient) {
        (Some(id), _) => e.message.id == id,
        (None, Some(r)) => {
            let env = e.message.envelope();
            e.recipients
                .iter()
                .any(|&i| env.address(i).eq_ignore_ascii_case(r))
        }
        (None, None) => false,
    });
    let mut out = Vec::new();
    for f in found {
        let env = f.entry.message.envelope();
        for &i in &f.entry.recipients {
            let address = env.address(i);
            if recipient.is_some_and(|r| !address.eq_ignore_ascii_case(r)) {
                continue;
            }
            out.push(Queued {
                id: f.entry.message.id_text(),
                recipient: address.into_owned(),
                domain: f.domain.clone(),
                core: core.index,
                state: if f.waiting { "waiting" } else { "ready" },
                attempts: f.entry.attempts,
            });
        }
    }
    out
}

fn metrics(core: &Core) -> CoreMetrics {
    let now = Instant::now();
    let mut views = core.queues.views(false);
    views.sort_by_key(|v| std::cmp::Reverse((v.ready(), v.waiting)));
    let top = views
        .iter()
        .take(TOP_DESTINATIONS)
        .map(|v| (v.domain.clone(), v.ready() as u64, v.waiting as u64))
        .collect();
    let (held, throttled) = core.shaper.held_destinations(now);
    let (dns_queries, dns_cache_hits) = core.resolver.counts();
    let (segments, bytes) = core.spool.segments_held();
    let st = &core.spool.stats;
    let first = core.index == 0;
    CoreMetrics {
        core: core.index,
        records: core.log.tally.by_kind(),
        by_tenant: core.log.tally.by_tenant(),
        summary: summary(core),
        top,
        destinations_suspended: held,
        destinations_throttled: throttled,
        batch_records: st.batch_records.snapshot(),
        sync_seconds: st.sync_seconds.snapshot(),
        final_dot_seconds: core.inbound.final_dot.snapshot(),
        dns_queries,
        dns_cache_hits,
        dns_cache_entries: core.resolver.cache_len() as u64,
        spool_segments: segments as u64,
        spool_bytes: bytes,
        spool_free_bytes: if first {
            free_bytes(core.spool.dir_path())
        } else {
            0
        },
        spool_records: st.records.get(),
        spool_syncs: st.syncs.get(),
        spool_failed_syncs: st.failed_syncs.get(),
        spool_segments_recycled: st.segments_recycled.get(),
        spool_spares: core.spool.spares_held() as u64,
        event_subscribers: core.log.stream.subscribers() as u64,
        suppression_entries: core.suppression.len() as u64,
        actions: core.shaper.actions().len() as u64,
        providers: if first {
            core.shaper.provider_states(now)
        } else {
            Vec::new()
        },
        warmups: if first {
            core.shaper.warmup_states()
        } else {
            Vec::new()
        },
        webhooks: core.webhooks.report(),
    }
}

/// Bytes free to spate on the spool's file system.
fn free_bytes(dir: &std::path::Path) -> u64 {
    nix::sys::statvfs::statvfs(dir).map_or(0, |s| s.blocks_available() * s.fragment_size())
}
