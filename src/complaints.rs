//! Complaint intake: mail to a `feedback.addresses` address is a report
//! from a mailbox provider's feedback loop. The listener keeps it whole
//! and durably under `<spool dir>/feedback/<id>.eml` ([`keep`]); then,
//! before the 250, it is read
//! ([`crate::feedback::arf`]), matched to the original message through the
//! delivery logs (by spate's id, from its Received field or a Message-ID
//! it made, else by the original's Message-ID as logged at reception),
//! logged as a `Complaint` record with the original's tenant and campaign,
//! and the complainer is put on that tenant's suppression list.
//!
//! A report is attacker-controlled: the complainer is suppressed only if
//! the logs show the original went to them (or, when the provider
//! redacted the address, the original had one recipient, who is then
//! known from the logs alone). A report that cannot be read is logged as
//! such and kept; nothing here may lose or crash on what it is given.

use crate::delivery_log::{now_ms, Kind, Record};
use crate::engine::Core;
use crate::feedback::arf;
use crate::suppression::lists::{Change, Op};
use glommio::io::{Directory, OpenOptions};
use std::path::PathBuf;
use std::rc::Rc;

pub fn dir(spool_dir: &std::path::Path) -> PathBuf {
    spool_dir.join("feedback")
}

/// Writes the report to its own file and syncs it and its directory.
pub async fn keep(core: &Core, id: u64, report: &[u8]) -> std::io::Result<()> {
    let dir = dir(&core.cfg.spool_dir);
    let path = dir.join(format!("{id:016x}.eml"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .buffered_open(&path)
        .await?;
    let written = file.write_at(report.to_vec(), 0).await?;
    if written != report.len() {
        return Err(std::io::Error::other(format!(
            "short write ({written} of {} bytes)",
            report.len()
        )));
    }
    file.fdatasync().await?;
    file.close().await?;
    Directory::open(&dir).await?.sync().await?;
    Ok(())
}

/// What the logs say about the original message.
#[derive(Default)]
struct Original {
    id: String,
    sender: String,
    tenant: String,
    campaign: String,
    recipients: Vec<String>,
}

/// Reads a kept report and acts on it: logs the complaint, and suppresses
/// the complainer (in a task of its own) when the logs vouch for them.
pub async fn process(core: &Rc<Core>, id: u64, report: &[u8]) {
    let kept = format!("kept as feedback/{id:016x}.eml");
    let r = match arf::parse(report) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("unreadable complaint report ({kept}): {e}");
            log(core, &Original::default(), "", &why);
            return;
        }
    };
    let mut original = match r.spate_id {
        Some(sid) => find(core, "id", &format!("{sid:016x}")).await,
        None => None,
    };
    if original.is_none() {
        if let Some(mid) = &r.original_message_id {
            original = find(core, "message_id", mid).await;
        }
    }
    let reporter = r.user_agent.as_deref().unwrap_or("an unnamed reporter");
    let Some(original) = original else {
        let why = format!(
            "{} report from {reporter} ({kept}): the original message is not in the logs",
            r.feedback_type
        );
        log(
            core,
            &Original::default(),
            r.complainer().unwrap_or(""),
            &why,
        );
        return;
    };
    let complainer = match r.complainer().map(str::to_lowercase) {
        Some(c) if original.recipients.contains(&c) => Some(c),
        _ if original.recipients.len() == 1 => Some(original.recipients[0].clone()),
        _ => None,
    };
    let why = format!("{} report from {reporter} ({kept})", r.feedback_type);
    log(core, &original, complainer.as_deref().unwrap_or(""), &why);
    let Some(complainer) = complainer else {
        return;
    };
    let reason = format!(
        "complaint: {} report about message {}",
        r.feedback_type, original.id
    );
    match Change::new(
        Op::Add,
        &original.tenant,
        &complainer,
        &reason,
        "complaint",
        now_ms(),
    ) {
        Ok(change) => core.suppression.submit_later(change),
        Err(e) => eprintln!("spate: core {}: complaint {id:016x}: {e}", core.index),
    }
}

/// The original's Reception and delivery records in the logs, by its id
/// or its Message-ID (`key`); off the core: the search reads files.
async fn find(core: &Core, key: &'static str, value: &str) -> Option<Original> {
    let dir = core.cfg.log_dir.clone();
    let value = value.to_string();
    let by_key = glommio::executor()
        .spawn_blocking(move || crate::admin::log_history_of(&dir, key, &value))
        .await;
    let reception = by_key.iter().find(|r| r["type"] == "Reception")?;
    let hex = reception["id"].as_str()?.to_string();
    let dir = core.cfg.log_dir.clone();
    let want = hex.clone();
    let records = if key == "id" {
        by_key
    } else {
        glommio::executor()
            .spawn_blocking(move || crate::admin::log_history(&dir, Some(&want), None))
            .await
    };
    let reception = records.iter().find(|r| r["type"] == "Reception")?;
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut recipients: Vec<String> = records
        .iter()
        .filter(|r| r["type"] != "Complaint")
        .map(|r| text(r, "recipient").to_lowercase())
        .filter(|r| !r.is_empty())
        .collect();
    recipients.sort();
    recipients.dedup();
    Some(Original {
        id: hex,
        sender: text(reception, "sender"),
        tenant: text(reception, "tenant"),
        campaign: text(reception, "campaign"),
        recipients,
    })
}

fn log(core: &Core, o: &Original, complainer: &str, response: &str) {
    core.log.write(&Record {
        kind: Kind::Complaint,
        time_ms: now_ms(),
        id: o.id.clone(),
        sender: &o.sender,
        recipient: complainer,
        domain: crate::message::domain_of(complainer),
        mx_host: None,
        mx_ip: None,
        connection: None,
        source: None,
        response,
        attempt: 0,
        size: 0,
        queue_time_ms: 0,
        core: core.index,
        tenant: &o.tenant,
        campaign: &o.campaign,
        by: None,
        reason: None,
        class: None,
        message_id: None,
    });
}
