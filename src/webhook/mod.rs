//! Webhooks: delivery-log records POSTed in signed batches to HTTP(S)
//! receivers (`[[webhook]]` tables, `tuning/webhooks.md`).
//!
//! Each core runs one task per webhook ([`task`]) in a low-share task
//! queue. The task reads only its own core's delivery log file, with
//! glommio file reads, from a durable cursor ([`cursor`]) that moves only
//! past batches the receiver answered with a 2xx: delivery is at least
//! once, in log order per core, across restarts and kill -9. A receiver
//! that is down or slow only makes the task retry (with backoff) and the
//! backlog grow (`spate_webhook_backlog_bytes`); the delivery log, and so
//! delivery itself, never waits for a webhook. spate never rotates or
//! deletes its delivery logs, so every file a webhook still needs is kept.
//!
//! What a kill -9 can lose is what the delivery log loses: records still
//! in its memory buffer (up to [`crate::delivery_log::FLUSH_INTERVAL`]).
//!
//! Owns: the shared setup of each webhook ([`Target`], built on the main
//! thread), and each core's counters ([`Webhooks`]). Must never write the
//! delivery log, block the core (no std::fs after start), or hold a
//! batch's memory past [`batch::BODY_BYTES_MAX`].

pub mod batch;
pub mod cursor;
pub mod post;
pub mod sign;
mod task;

pub use task::run;

use crate::config::{Config, Webhook};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What every core shares of one webhook: its settings, key and TLS.
#[derive(Debug)]
pub struct Target {
    pub cfg: Webhook,
    secret: sign::Secret,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Reads every webhook's secret, builds its TLS settings and makes its
/// cursor directory. On the main thread, before the cores start.
pub fn load(cfg: &Config) -> Result<Arc<[Target]>, String> {
    let mut targets = Vec::with_capacity(cfg.webhooks.len());
    for w in &cfg.webhooks {
        let secret =
            sign::Secret::load(&w.secret_file).map_err(|e| format!("webhook {}: {e}", w.name))?;
        let tls = if w.https {
            let clients = crate::delivery::TlsClients::new(w.ca_file.as_deref())
                .map_err(|e| format!("webhook {}: ca_file: {e}", w.name))?;
            Some(clients.verified)
        } else {
            None
        };
        let dir = cursor_dir(&cfg.spool_dir, &w.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("webhook {}: {}: {e}", w.name, dir.display()))?;
        targets.push(Target {
            cfg: w.clone(),
            secret,
            tls,
        });
    }
    Ok(targets.into())
}

/// `<spool dir>/webhooks/<name>`: where its cursors are kept.
pub fn cursor_dir(spool_dir: &Path, name: &str) -> PathBuf {
    spool_dir.join("webhooks").join(name)
}

/// One webhook's counters on one core.
#[derive(Debug, Default)]
struct Stats {
    events: Cell<u64>,
    failures: Cell<u64>,
    backlog_bytes: Cell<u64>,
    last_success_ms: Cell<u64>,
}

/// A core's webhooks: the shared targets and this core's counters.
#[derive(Debug)]
pub struct Webhooks {
    targets: Arc<[Target]>,
    stats: Vec<Stats>,
}

/// One webhook on one core, for metrics.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub name: String,
    /// Records acknowledged by the receiver.
    pub events: u64,
    /// POSTs that got no 2xx (error, timeout, other status).
    pub failures: u64,
    /// Bytes of the log past the cursor.
    pub backlog_bytes: u64,
    /// Milliseconds since the epoch of the last 2xx; 0: none yet.
    pub last_success_ms: u64,
}

impl Webhooks {
    pub fn new(targets: Arc<[Target]>) -> Webhooks {
        let stats = targets.iter().map(|_| Stats::default()).collect();
        Webhooks { targets, stats }
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn report(&self) -> Vec<Report> {
        self.targets
            .iter()
            .zip(&self.stats)
            .map(|(t, s)| Report {
                name: t.cfg.name.clone(),
                events: s.events.get(),
                failures: s.failures.get(),
                backlog_bytes: s.backlog_bytes.get(),
                last_success_ms: s.last_success_ms.get(),
            })
            .collect()
    }
}
