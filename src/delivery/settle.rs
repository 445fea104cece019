//! Settling what an attempt did to each recipient: the state record goes to
//! this core's spool first, then the log line, then the queue moves on
//! (forget, retry now, retry later) and bounces become a DSN.
//!
//! It must never let the queue forget a recipient before its state record
//! was handed to the spool.

use super::outcome::{retry_delay, Outcome};
use super::Remote;
use crate::bounce::Failure;
use crate::delivery_log::{now_ms, Kind, Record};
use crate::engine::Core;
use crate::queue::Entry;
use spool_format::{encode_state, StateRecord};
use std::rc::Rc;
use std::time::Instant;

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
    let d = &core.cfg.delivery;
    let expired = now
        >= entry
            .message
            .received_ms
            .saturating_add(d.expire.as_millis() as u64);
    let next_in = retry_delay(attempt, d.retry_initial, d.retry_max);
    let next_ms = now + next_in.as_millis() as u64;
    let mut records = Vec::new();
    let (mut retry_now, mut later, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for (index, outcome) in outcomes {
        let address = entry.address(index).to_string();
        let (state, kind) = match &outcome {
            Outcome::Delivered(_) => (
                Some(StateRecord::Delivered {
                    recipient: index,
                    time_ms: now,
                }),
                Kind::Delivery,
            ),
            Outcome::Bounced(r) => {
                failures.push(Failure {
                    recipient: address.clone(),
                    diagnostic: r.clone(),
                    expired: false,
                    remote_mta: remote.map(|r| r.host.clone()),
                });
                (
                    Some(StateRecord::Bounced {
                        recipient: index,
                        time_ms: now,
                        reason: r,
                    }),
                    Kind::Bounce,
                )
            }
            Outcome::Retry(_) => {
                retry_now.push(index);
                (None, Kind::TransientFailure)
            }
            Outcome::Deferred(r) if expired => {
                failures.push(Failure {
                    recipient: address.clone(),
                    diagnostic: format!("{r} (gave up after {attempt} attempts)"),
                    expired: true,
                    remote_mta: remote.map(|r| r.host.clone()),
                });
                (
                    Some(StateRecord::Expired {
                        recipient: index,
                        time_ms: now,
                    }),
                    Kind::Expiration,
                )
            }
            Outcome::Deferred(r) => {
                later.push(index);
                (
                    Some(StateRecord::Attempt {
                        recipient: index,
                        time_ms: now,
                        attempt,
                        next_ms,
                        reason: r,
                    }),
                    Kind::TransientFailure,
                )
            }
        };
        if let Some(state) = state {
            encode_state(&mut records, entry.message.id, &state);
        }
        log(
            core,
            &entry,
            domain,
            &address,
            kind,
            outcome.reason(),
            attempt,
            remote,
            now,
        );
    }
    if !records.is_empty() {
        if let Err(e) = core.spool.append(records).await {
            // The outcome stands; after a restart the recipient is retried
            // (a possible duplicate, never a loss).
            eprintln!(
                "spate: core {}: state records for {:016x} not written: {e}",
                core.index, entry.message.id
            );
        }
    }
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
    if !later.is_empty() {
        core.queues.schedule(
            domain,
            Entry {
                recipients: later,
                attempts: attempt,
                ..entry.clone()
            },
            Instant::now() + next_in,
        );
    }
    if !failures.is_empty() && !entry.message.sender.is_empty() {
        if let Err(e) = core.send_dsn(&entry.message, &failures).await {
            eprintln!(
                "spate: core {}: DSN for {:016x} not spooled: {e}",
                core.index, entry.message.id
            );
        }
    }
}

/// Gives every ready entry of `domain` the same outcome (DNS said no, or no
/// host could be reached).
pub async fn fail_domain(core: &Rc<Core>, domain: &str, outcome: Outcome, remote: Option<&Remote>) {
    for entry in core.queues.drain_ready(domain) {
        let outcomes = entry
            .recipients
            .iter()
            .map(|&i| (i, outcome.clone()))
            .collect();
        settle(core, domain, entry, outcomes, remote).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn log(
    core: &Core,
    entry: &Entry,
    domain: &str,
    recipient: &str,
    kind: Kind,
    response: &str,
    attempt: u32,
    remote: Option<&Remote>,
    now: u64,
) {
    core.log.write(&Record {
        kind,
        time_ms: now,
        id: entry.message.id_text(),
        sender: &entry.message.sender,
        recipient,
        domain,
        mx_host: remote.map(|r| r.host.as_str()),
        mx_ip: remote.map(|r| r.ip),
        connection: remote.map(|r| r.connection),
        response,
        attempt,
        size: entry.message.body_len,
        queue_time_ms: now.saturating_sub(entry.message.received_ms),
        core: core.index,
    });
}
