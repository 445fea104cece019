//! What a core reports to the control plane: plain values, made on the
//! core from its own state, sent over the mesh and turned into JSON or
//! metrics by the admin server. Field meanings are the API's
//! (`src/admin/openapi.json`).

use crate::delivery_log::tally::Counts;
use crate::meter::Snapshot;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Ready,
    Deferred,
    Age,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        match s {
            "ready" => Some(Sort::Ready),
            "deferred" => Some(Sort::Deferred),
            "age" => Some(Sort::Age),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sort::Ready => "ready",
            Sort::Deferred => "deferred",
            Sort::Age => "age",
        }
    }

    /// Orders rows best first.
    pub fn order(self, rows: &mut [QueueRow]) {
        match self {
            Sort::Ready => rows.sort_by(|a, b| {
                (b.ready + b.suspended, b.waiting).cmp(&(a.ready + a.suspended, a.waiting))
            }),
            Sort::Deferred => rows.sort_by_key(|r| std::cmp::Reverse(r.deferred)),
            Sort::Age => rows.sort_by(|a, b| b.oldest_age_s.total_cmp(&a.oldest_age_s)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplySeen {
    pub time_ms: u64,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitsView {
    pub connections: u32,
    pub message_rate: Option<String>,
    pub connection_rate: Option<String>,
    /// Which rule set them: "default", "destination D", "provider P".
    pub rule: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueRow {
    pub domain: String,
    pub core: usize,
    /// Entries that may go now.
    pub ready: usize,
    /// Entries waiting for a retry.
    pub waiting: usize,
    /// Ready entries held by a suspension (the destination's, its
    /// provider's, a tenant's or campaign's).
    pub suspended: usize,
    pub suspended_until_ms: Option<u64>,
    pub oldest_age_s: f64,
    pub connections: u32,
    /// Transient failures since start.
    pub deferred: u64,
    pub last_reply: Option<ReplySeen>,
    pub limits: LimitsView,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueDetail {
    #[serde(flatten)]
    pub row: QueueRow,
    pub replies: Vec<ReplySeen>,
}

/// One queued recipient, for "where is my mail".
#[derive(Debug, Clone, Serialize)]
pub struct Queued {
    pub id: String,
    pub recipient: String,
    pub domain: String,
    pub core: usize,
    /// "ready" or "waiting".
    pub state: &'static str,
    pub attempts: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreSummary {
    pub received: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub bounced: u64,
    pub expired: u64,
    /// Ready entries, those held by a suspension included.
    pub ready: u64,
    pub waiting: u64,
    /// Ready entries held by a suspension.
    pub suspended: u64,
    pub connections_in: u64,
    pub connections_out: u64,
    pub domains: u64,
}

impl CoreSummary {
    pub fn add(&mut self, o: &CoreSummary) {
        self.received += o.received;
        self.delivered += o.delivered;
        self.deferred += o.deferred;
        self.bounced += o.bounced;
        self.expired += o.expired;
        self.ready += o.ready;
        self.waiting += o.waiting;
        self.suspended += o.suspended;
        self.connections_in += o.connections_in;
        self.connections_out += o.connections_out;
        self.domains += o.domains;
    }
}

/// A provider's shared shaping state (the same on every core).
#[derive(Debug, Clone)]
pub struct ProviderState {
    pub name: String,
    pub suspended: bool,
    /// The share of its limits in use (1: all; less when throttled or
    /// adaptive mode cut it).
    pub scale: f64,
}

/// A warming source's day with a provider.
#[derive(Debug, Clone)]
pub struct WarmupState {
    pub source: String,
    pub provider: String,
    pub day: u32,
    pub sent_today: u32,
}

/// Everything `/metrics` shows of one core.
#[derive(Debug, Clone, Default)]
pub struct CoreMetrics {
    pub core: usize,
    pub records: Counts,
    pub by_tenant: Vec<(String, Counts)>,
    pub summary: CoreSummary,
    /// The core's deepest destinations: (domain, ready, waiting).
    pub top: Vec<(String, u64, u64)>,
    /// Destinations of this core under a suspension, and under a throttle.
    pub destinations_suspended: u64,
    pub destinations_throttled: u64,
    pub batch_records: Snapshot,
    pub sync_seconds: Snapshot,
    pub final_dot_seconds: Snapshot,
    pub dns_queries: u64,
    pub dns_cache_hits: u64,
    pub dns_cache_entries: u64,
    pub spool_segments: u64,
    pub spool_bytes: u64,
    pub spool_free_bytes: u64,
    pub spool_records: u64,
    pub spool_syncs: u64,
    pub spool_failed_syncs: u64,
    /// Segments made of a reclaimed segment's file, and such files kept.
    pub spool_segments_recycled: u64,
    pub spool_spares: u64,
    pub event_subscribers: u64,
    pub actions: u64,
    /// Filled by core 0 only: the state shared by all cores.
    pub providers: Vec<ProviderState>,
    pub warmups: Vec<WarmupState>,
    /// Each webhook's counters on this core.
    pub webhooks: Vec<crate::webhook::Report>,
    /// Entries of this core's copy of the suppression lists.
    pub suppression_entries: u64,
}

/// Destinations per core that metrics label by name.
pub const TOP_DESTINATIONS: usize = 20;
