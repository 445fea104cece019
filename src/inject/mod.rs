//! HTTP injection: a JSON request ([`request`]) becomes spooled messages
//! with the same durability as SMTP. The recipients on a suppression list
//! are refused one by one; the others' messages are composed
//! ([`compose`]), sealed into spool records (spate's Received field, DKIM
//! signature, tenant and campaign), and appended together, so they share
//! group commits. The answer comes only once every record is durable.
//!
//! A request is spooled whole or not at all: if any record fails (or the
//! spool does not confirm within `spool.ack_deadline_ms`), those that were
//! written are marked finished without delivery, no reception is logged,
//! and the client is told that nothing was accepted. (A crash between a
//! record's sync and its finishing mark can still deliver it: a duplicate,
//! never a loss, as with SMTP's 451 after a late sync.)
//!
//! Runs on the core that took the HTTP connection; the messages go to the
//! cores that own their recipients' domains, as SMTP mail does. It must
//! never hold more memory than the core's DATA budget lets it.

pub mod compose;
pub mod request;

use crate::engine::{Accepted, Core};
use crate::feedback::unsubscribe::Signer;
use crate::message::Stored;
use compose::{Composed, Templates};
use request::Request;
use serde::Serialize;
use spool_format::{encode_state, MessageBuilder, StateRecord, FLAG_8BITMIME, FLAG_SMTPUTF8};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

/// What an injection did.
#[derive(Debug, Serialize)]
pub struct Injected {
    pub accepted: usize,
    pub messages: Vec<MessageOut>,
    pub refused: Vec<RefusedRecipient>,
}

#[derive(Debug, Serialize)]
pub struct MessageOut {
    pub id: String,
    pub recipients: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RefusedRecipient {
    pub address: String,
    pub reason: String,
}

/// Why a request was refused whole.
#[derive(Debug)]
pub enum Refused {
    /// The request is wrong: the client must change it (400).
    Bad(String),
    /// The core has no memory for it now: try again (503).
    Busy(String),
    /// The spool did not take it whole (503); nothing was accepted.
    Spool(String),
}

/// The per-core parts injection needs beyond the core.
pub struct Injector {
    pub unsubscribe: Option<(String, Signer)>,
}

impl Injector {
    pub fn new(cfg: &crate::config::Inject) -> Injector {
        Injector {
            unsubscribe: cfg
                .unsubscribe
                .as_ref()
                .map(|u| (u.url_prefix.clone(), Signer::new(&u.secret))),
        }
    }
}

/// Takes a request's body: checks, composes, spools, answers.
pub async fn inject(
    core: &Rc<Core>,
    injector: &Injector,
    body: &[u8],
    peer: &str,
    tls: bool,
) -> Result<Injected, Refused> {
    let cfg = &core.cfg.platform.inject;
    let req = request::parse(body, cfg.max_recipients).map_err(Refused::Bad)?;
    let templates = Templates::compile(&req).map_err(Refused::Bad)?;
    let mut refused = Vec::new();
    let mut rendered = Vec::with_capacity(req.recipients.len());
    // What rendering holds counts on the core's DATA budget, as it goes.
    let mut lease = core.inbound.data_lease();
    let mut held = 0usize;
    let bytes_max = core.cfg.max_message_bytes as usize;
    for (i, rc) in req.recipients.iter().enumerate() {
        if let Some(why) = core.suppression.check(&req.tenant, &rc.address) {
            refused.push(RefusedRecipient {
                address: rc.address.clone(),
                reason: format!("550 5.7.1 {why}"),
            });
            continue;
        }
        let link = injector.unsubscribe.as_ref().and_then(|(prefix, signer)| {
            let address = crate::suppression::lists::normalize(&rc.address).ok()?;
            Some(format!("{prefix}{}", signer.token(&req.tenant, &address)?))
        });
        let r = templates
            .render(&req, i, link, bytes_max)
            .map_err(Refused::Bad)?;
        held += r.bytes();
        if !lease.cover(held) {
            return Err(busy(held));
        }
        rendered.push((i, r));
        glommio::yield_if_needed().await;
    }
    let groups = compose::group(rendered);
    let sealed = seal_all(core, &req, groups, peer, tls, &mut lease, held).await?;
    let messages = spool_all(core, sealed).await?;
    drop(lease);
    Ok(Injected {
        accepted: messages.iter().map(|m| m.recipients.len()).sum(),
        messages,
        refused,
    })
}

/// The Message-ID of a message's text, read from its header section the
/// way the SMTP listener reads it.
fn message_id_of(text: &[u8]) -> Option<String> {
    let end = memchr::memmem::find(text, b"\r\n\r\n")? + 2;
    let mut header = text[..end].to_vec();
    header.extend_from_slice(b"\r\n.\r\n");
    let mut rx = crate::listener::data::DataReceiver::new(usize::MAX);
    rx.feed(&header, &mut Vec::new());
    rx.message_id()
}

fn busy(held: usize) -> Refused {
    Refused::Busy(format!(
        "the core's memory budget for incoming mail is spent ({held} bytes held by this request); try again"
    ))
}

/// A message sealed into its spool record, not yet appended.
struct Sealed {
    accepted: Accepted,
    record: Vec<u8>,
}

async fn seal_all(
    core: &Rc<Core>,
    req: &Request,
    groups: Vec<Composed>,
    peer: &str,
    tls: bool,
    lease: &mut crate::listener::admission::DataLease,
    mut held: usize,
) -> Result<Vec<Sealed>, Refused> {
    let now_ms = crate::delivery_log::now_ms();
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let id = core.spool.next_message_id();
        let text = compose::build(
            req.content.as_ref(),
            &g.rendered,
            id,
            &core.cfg.hostname,
            (now_ms / 1000) as i64,
        )
        .map_err(Refused::Bad)?;
        if text.len() as u64 > core.cfg.max_message_bytes {
            return Err(Refused::Bad(format!(
                "recipients[{}]: the message is {} bytes, over server.max_message_bytes ({})",
                g.recipients[0],
                text.len(),
                core.cfg.max_message_bytes
            )));
        }
        let recipients: Vec<String> = g
            .recipients
            .iter()
            .map(|&i| req.recipients[i].address.clone())
            .collect();
        held += text.len() * 2;
        if !lease.cover(held) {
            return Err(busy(held));
        }
        out.push(seal(core, req, id, now_ms, recipients, &text, peer, tls)?);
        glommio::yield_if_needed().await;
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn seal(
    core: &Core,
    req: &Request,
    id: u64,
    now_ms: u64,
    recipients: Vec<String>,
    text: &[u8],
    peer: &str,
    tls: bool,
) -> Result<Sealed, Refused> {
    let utf8 = !req.sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
    let flags =
        (if text.is_ascii() { 0 } else { FLAG_8BITMIME }) | if utf8 { FLAG_SMTPUTF8 } else { 0 };
    let rcpts: Vec<&[u8]> = recipients.iter().map(|r| r.as_bytes()).collect();
    let mut builder = MessageBuilder::new(
        Vec::with_capacity(text.len() + 4096),
        now_ms,
        flags,
        req.sender.as_bytes(),
        &rcpts,
    );
    let for_clause = match recipients.as_slice() {
        [one] => format!("\r\n\tfor <{one}>"),
        _ => String::new(),
    };
    let received = format!(
        "Received: from [{peer}]\r\n\tby {} (spate) with {} id {id:016x}{for_clause};\r\n\t{}\r\n",
        core.cfg.hostname,
        if tls { "HTTPS" } else { "HTTP" },
        chrono::Utc::now().to_rfc2822(),
    );
    builder.body_mut().extend_from_slice(received.as_bytes());
    builder.body_mut().extend_from_slice(text);
    if !(req.tenant.is_empty() && req.campaign.is_empty()) {
        builder.set_tags(req.tenant.as_bytes(), req.campaign.as_bytes());
    }
    core.dkim
        .sign_record(&mut builder)
        .map_err(|e| Refused::Spool(format!("signing the message: {e}")))?;
    let accepted = Accepted {
        id,
        received_ms: now_ms,
        flags,
        sender: req.sender.clone(),
        recipients,
        body_start: builder.body_start(),
        body_len: builder.body_len(),
        message_id: message_id_of(text),
    };
    Ok(Sealed {
        accepted,
        record: builder.finish(id),
    })
}

/// Appends every record; logs and hands them off only if all are durable
/// in time, else finishes those written without delivery.
async fn spool_all(core: &Rc<Core>, sealed: Vec<Sealed>) -> Result<Vec<MessageOut>, Refused> {
    // Set when the client will not hear "accepted": the deadline passed,
    // or the client went away (this future dropped). Read once, when every
    // record is durable; after that the request is committed.
    let abandoned = Rc::new(Cell::new(false));
    let _guard = SetOnDrop(abandoned.clone());
    let (tx, rx) = futures_channel::oneshot::channel();
    let c = core.clone();
    let gave_up = abandoned.clone();
    glommio::spawn_local(async move { append_or_undo(&c, sealed, &gave_up, tx).await }).detach();
    let late = async {
        glommio::timer::sleep(core.cfg.ack_deadline).await;
        None
    };
    let answer = futures_lite::future::or(async { rx.await.ok() }, late).await;
    match answer {
        Some(r) => r,
        None => {
            abandoned.set(true);
            Err(Refused::Spool(
                "the spool did not confirm in time; nothing was accepted, try again".into(),
            ))
        }
    }
}

struct SetOnDrop(Rc<Cell<bool>>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

type Answered = futures_channel::oneshot::Sender<Result<Vec<MessageOut>, Refused>>;

/// Appends every record; if all are durable and the client still waits,
/// answers, then logs and hands the messages off; else finishes those
/// written without delivery and answers no.
async fn append_or_undo(
    core: &Rc<Core>,
    sealed: Vec<Sealed>,
    abandoned: &Cell<bool>,
    answer: Answered,
) {
    let mut batch = Vec::with_capacity(sealed.len());
    let mut accepted = Vec::with_capacity(sealed.len());
    for s in sealed {
        let stored = s.accepted.stored(s.record.len());
        batch.push((s.record, stored.clone()));
        accepted.push((s.accepted, stored));
    }
    let results = core.spool.append_messages(batch).await;
    let failed = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .map(|e| e.to_string());
    if failed.is_some() || abandoned.get() {
        undo(core, &accepted, &results);
        let _ = answer.send(Err(Refused::Spool(format!(
            "the spool could not take the request whole ({}); nothing was accepted",
            failed.unwrap_or_else(|| "it confirmed too late".into())
        ))));
        return;
    }
    // Committed: the answer goes first, so no deadline can pass between
    // here and the client hearing it.
    let out = accepted
        .iter()
        .map(|(a, _)| MessageOut {
            id: format!("{:016x}", a.id),
            recipients: a.recipients.clone(),
        })
        .collect();
    let _ = answer.send(Ok(out));
    for (a, stored) in accepted {
        core.accepted(a, stored).await;
    }
}

/// Marks every recipient of the messages that were written as finished
/// (bounced, without a notice or a log record: the client was told no).
fn undo(
    core: &Core,
    accepted: &[(Accepted, Arc<Stored>)],
    results: &[Result<crate::spool::Placement, crate::spool::SpoolError>],
) {
    let now = crate::delivery_log::now_ms();
    let mut records = Vec::new();
    let mut about = Vec::new();
    for ((a, stored), r) in accepted.iter().zip(results) {
        if r.is_err() {
            continue;
        }
        for i in 0..a.recipients.len() as u32 {
            let state = StateRecord::Bounced {
                recipient: i,
                time_ms: now,
                reason: "injection refused whole",
            };
            encode_state(&mut records, a.id, &state);
            about.push(stored.clone());
        }
    }
    if !records.is_empty() {
        core.spool.append_lazy(records, about);
    }
    for (a, stored) in accepted
        .iter()
        .zip(results)
        .filter(|(_, r)| r.is_ok())
        .map(|(x, _)| x)
    {
        stored.finish(a.recipients.len() as u32);
    }
}
