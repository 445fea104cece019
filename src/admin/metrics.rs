//! `GET /metrics`: every core's [`CoreMetrics`], gathered over the control
//! mesh at each scrape and encoded by prometheus-client (OpenMetrics text,
//! `spate_` prefix, `_total` counters, base units). Labels: `core` on
//! per-core series, `destination` for each core's deepest
//! [`TOP_DESTINATIONS`], `tenant`, `provider`, `source`.
//!
//! Nothing is kept between scrapes: each one is a fresh registry of
//! plain values, so the cores keep plain cells, not atomics.

use super::http::{full, Answer, ApiError};
use super::Admin;
use crate::control::report::{CoreMetrics, TOP_DESTINATIONS};
use crate::control::{Reply, Request};
use crate::delivery_log::Kind;
use crate::meter::Snapshot;
use hyper::StatusCode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::rc::Rc;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
enum Point {
    Counter(u64),
    Gauge(f64),
    Histogram(Snapshot),
}

/// One metric family: its points, each with its labels.
#[derive(Debug)]
struct Series {
    kind: MetricType,
    points: Vec<(Labels, Point)>,
}

impl Series {
    fn new(kind: MetricType) -> Series {
        Series {
            kind,
            points: Vec::new(),
        }
    }

    fn add(&mut self, labels: Labels, point: Point) -> &mut Series {
        self.points.push((labels, point));
        self
    }
}

impl EncodeMetric for Series {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, point) in &self.points {
            let mut e = encoder.encode_family(labels)?;
            match point {
                Point::Counter(v) => e.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                Point::Gauge(v) => e.encode_gauge(v)?,
                Point::Histogram(h) => {
                    e.encode_histogram::<NoLabelSet>(h.sum, h.count(), &h.buckets(), None)?
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

fn core(c: &CoreMetrics) -> Labels {
    vec![("core", c.core.to_string())]
}

fn kind(k: Kind) -> usize {
    Kind::ALL.iter().position(|x| *x == k).expect("in ALL")
}

pub async fn render(admin: &Rc<Admin>) -> Answer {
    let mut cores = Vec::new();
    for reply in admin.control.ask_all(|| Request::Metrics).await {
        match reply {
            Reply::Metrics(m) => cores.push(*m),
            Reply::Unavailable(c) => return Err(ApiError::unavailable(c)),
            _ => unreachable!(),
        }
    }
    let mut registry = Registry::with_prefix("spate");
    messages(&mut registry, &cores);
    queues(&mut registry, &cores);
    spool(&mut registry, &cores);
    latency(&mut registry, &cores);
    dns(&mut registry, &cores);
    shaping(&mut registry, &cores);
    webhooks(&mut registry, &cores);
    process(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics did not encode"))?;
    Ok(full(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        text,
    ))
}

/// A counter per core of `f`.
fn per_core(cores: &[CoreMetrics], f: impl Fn(&CoreMetrics) -> u64) -> Series {
    let mut s = Series::new(MetricType::Counter);
    for c in cores {
        s.add(core(c), Point::Counter(f(c)));
    }
    s
}

fn gauge_per_core(cores: &[CoreMetrics], f: impl Fn(&CoreMetrics) -> f64) -> Series {
    let mut s = Series::new(MetricType::Gauge);
    for c in cores {
        s.add(core(c), Point::Gauge(f(c)));
    }
    s
}

fn messages(r: &mut Registry, cores: &[CoreMetrics]) {
    let count = |k: Kind| move |c: &CoreMetrics| c.records[kind(k)];
    r.register(
        "messages_received",
        "Messages accepted and made durable",
        per_core(cores, count(Kind::Reception)),
    );
    r.register(
        "recipients_delivered",
        "Recipients delivered (one per delivery record)",
        per_core(cores, count(Kind::Delivery)),
    );
    r.register(
        "recipients_deferred",
        "Delivery attempts deferred (transient failures)",
        per_core(cores, count(Kind::TransientFailure)),
    );
    r.register(
        "recipients_bounced",
        "Recipients bounced (permanent failures)",
        per_core(cores, count(Kind::Bounce)),
    );
    r.register(
        "recipients_expired",
        "Recipients that expired in the queue",
        per_core(cores, count(Kind::Expiration)),
    );
    let mut tenants = Series::new(MetricType::Counter);
    let mut totals: std::collections::BTreeMap<(String, usize), u64> = Default::default();
    for c in cores {
        for (t, counts) in &c.by_tenant {
            for k in Kind::ALL {
                *totals.entry((t.clone(), kind(k))).or_default() += counts[kind(k)];
            }
        }
    }
    for ((t, k), v) in totals {
        tenants.add(
            vec![("tenant", t), ("kind", Kind::ALL[k].name().to_string())],
            Point::Counter(v),
        );
    }
    r.register(
        "tenant_records",
        "Delivery-log records by tenant and kind",
        tenants,
    );
}

fn queues(r: &mut Registry, cores: &[CoreMetrics]) {
    let mut depth = Series::new(MetricType::Gauge);
    for c in cores {
        let ready = c.summary.ready.saturating_sub(c.summary.suspended);
        for (state, v) in [
            ("ready", ready),
            ("waiting", c.summary.waiting),
            ("suspended", c.summary.suspended),
        ] {
            let mut l = core(c);
            l.push(("state", state.to_string()));
            depth.add(l, Point::Gauge(v as f64));
        }
    }
    r.register(
        "queue_entries",
        "Queue entries (a message's recipients in one domain) by state",
        depth,
    );
    let mut top = Series::new(MetricType::Gauge);
    for c in cores {
        for (d, ready, waiting) in c.top.iter().take(TOP_DESTINATIONS) {
            for (state, v) in [("ready", ready), ("waiting", waiting)] {
                let l = vec![
                    ("core", c.core.to_string()),
                    ("destination", d.clone()),
                    ("state", state.to_string()),
                ];
                top.add(l, Point::Gauge(*v as f64));
            }
        }
    }
    r.register(
        "destination_queue_entries",
        "Queue entries of each core's deepest destinations",
        top,
    );
    let mut conns = Series::new(MetricType::Gauge);
    for c in cores {
        for (dir, v) in [
            ("in", c.summary.connections_in),
            ("out", c.summary.connections_out),
        ] {
            let mut l = core(c);
            l.push(("direction", dir.to_string()));
            conns.add(l, Point::Gauge(v as f64));
        }
    }
    r.register(
        "connections",
        "SMTP connections open, inbound sessions and delivery connections",
        conns,
    );
    r.register(
        "queue_destinations",
        "Destination domains with queued mail or connections",
        gauge_per_core(cores, |c| c.summary.domains as f64),
    );
}

fn spool(r: &mut Registry, cores: &[CoreMetrics]) {
    r.register(
        "spool_records",
        "Records appended to the spool",
        per_core(cores, |c| c.spool_records),
    );
    r.register(
        "spool_syncs",
        "fdatasync calls of the spool",
        per_core(cores, |c| c.spool_syncs),
    );
    r.register(
        "spool_failed_syncs",
        "Spool writes or syncs that failed",
        per_core(cores, |c| c.spool_failed_syncs),
    );
    r.register(
        "spool_segments",
        "Spool segments held",
        gauge_per_core(cores, |c| c.spool_segments as f64),
    );
    r.register(
        "spool_segments_recycled",
        "Spool segments made of a reclaimed segment's file instead of a new one",
        per_core(cores, |c| c.spool_segments_recycled),
    );
    r.register(
        "spool_spares",
        "Reclaimed segment files kept to be reused",
        gauge_per_core(cores, |c| c.spool_spares as f64),
    );
    r.register_with_unit(
        "spool_used",
        "Bytes of spool segments held",
        Unit::Bytes,
        gauge_per_core(cores, |c| c.spool_bytes as f64),
    );
    let free = cores.iter().map(|c| c.spool_free_bytes).max().unwrap_or(0);
    let mut s = Series::new(MetricType::Gauge);
    s.add(Vec::new(), Point::Gauge(free as f64));
    r.register_with_unit(
        "spool_free",
        "Bytes free to spate on the spool's file system",
        Unit::Bytes,
        s,
    );
    let mut batch = Series::new(MetricType::Histogram);
    for c in cores {
        batch.add(core(c), Point::Histogram(c.batch_records.clone()));
    }
    r.register(
        "spool_commit_batch_records",
        "Records made durable by each fdatasync (group commit)",
        batch,
    );
}

fn latency(r: &mut Registry, cores: &[CoreMetrics]) {
    let mut sync = Series::new(MetricType::Histogram);
    let mut dot = Series::new(MetricType::Histogram);
    for c in cores {
        sync.add(core(c), Point::Histogram(c.sync_seconds.clone()));
        dot.add(core(c), Point::Histogram(c.final_dot_seconds.clone()));
    }
    r.register_with_unit(
        "spool_fdatasync",
        "Time each spool fdatasync took",
        Unit::Seconds,
        sync,
    );
    r.register_with_unit(
        "smtp_final_dot",
        "Time from a message's final dot to its reply",
        Unit::Seconds,
        dot,
    );
}

fn dns(r: &mut Registry, cores: &[CoreMetrics]) {
    r.register(
        "dns_queries",
        "DNS questions sent to the servers",
        per_core(cores, |c| c.dns_queries),
    );
    r.register(
        "dns_cache_hits",
        "DNS questions answered from the cache",
        per_core(cores, |c| c.dns_cache_hits),
    );
    r.register(
        "dns_cache_entries",
        "Answers in the DNS cache",
        gauge_per_core(cores, |c| c.dns_cache_entries as f64),
    );
}

fn shaping(r: &mut Registry, cores: &[CoreMetrics]) {
    let mut held = Series::new(MetricType::Gauge);
    for c in cores {
        for (state, v) in [
            ("suspended", c.destinations_suspended),
            ("throttled", c.destinations_throttled),
        ] {
            let mut l = core(c);
            l.push(("state", state.to_string()));
            held.add(l, Point::Gauge(v as f64));
        }
    }
    r.register(
        "shaping_destinations",
        "Destinations under a reply rule's suspension or throttle",
        held,
    );
    let first = cores.iter().find(|c| c.core == 0);
    let mut suspended = Series::new(MetricType::Gauge);
    let mut share = Series::new(MetricType::Gauge);
    for p in first.map_or(&[][..], |c| &c.providers[..]) {
        let l = || vec![("provider", p.name.clone())];
        suspended.add(l(), Point::Gauge(f64::from(u8::from(p.suspended))));
        share.add(l(), Point::Gauge(p.scale));
    }
    r.register(
        "shaping_provider_suspended",
        "1 while a provider is suspended by a reply rule",
        suspended,
    );
    r.register(
        "shaping_provider_share",
        "Share of a provider's limits in use (throttle, adaptive mode)",
        share,
    );
    let mut day = Series::new(MetricType::Gauge);
    let mut sent = Series::new(MetricType::Gauge);
    for w in first.map_or(&[][..], |c| &c.warmups[..]) {
        let l = || {
            vec![
                ("source", w.source.clone()),
                ("provider", w.provider.clone()),
            ]
        };
        day.add(l(), Point::Gauge(f64::from(w.day)));
        sent.add(l(), Point::Gauge(f64::from(w.sent_today)));
    }
    r.register(
        "warmup_day",
        "The warm-up plan's day of each source with each provider",
        day,
    );
    r.register(
        "warmup_sent_today",
        "Messages a warming source sent a provider today",
        sent,
    );
    let actions = first.map_or(0, |c| c.actions);
    let mut a = Series::new(MetricType::Gauge);
    a.add(Vec::new(), Point::Gauge(actions as f64));
    r.register(
        "operator_actions",
        "Operator actions in force (suspensions, reroutes, overrides)",
        a,
    );
    r.register(
        "event_subscribers",
        "Live event streams subscribed",
        gauge_per_core(cores, |c| c.event_subscribers as f64),
    );
    r.register(
        "suppression_entries",
        "Entries of the suppression lists (every core holds them all)",
        gauge_per_core(cores, |c| c.suppression_entries as f64),
    );
}

/// Per webhook and core: `webhook_events_total`, `webhook_failures_total`,
/// `webhook_backlog_bytes`, `webhook_last_success_timestamp_seconds`.
fn webhooks(r: &mut Registry, cores: &[CoreMetrics]) {
    let mut events = Series::new(MetricType::Counter);
    let mut failures = Series::new(MetricType::Counter);
    let mut backlog = Series::new(MetricType::Gauge);
    let mut last = Series::new(MetricType::Gauge);
    for c in cores {
        for w in &c.webhooks {
            let l = || vec![("webhook", w.name.clone()), ("core", c.core.to_string())];
            events.add(l(), Point::Counter(w.events));
            failures.add(l(), Point::Counter(w.failures));
            backlog.add(l(), Point::Gauge(w.backlog_bytes as f64));
            last.add(l(), Point::Gauge(w.last_success_ms as f64 / 1000.0));
        }
    }
    r.register(
        "webhook_events",
        "Delivery-log records a webhook's receiver acknowledged (2xx)",
        events,
    );
    r.register(
        "webhook_failures",
        "Webhook POSTs that got no 2xx (error, timeout or other status)",
        failures,
    );
    r.register_with_unit(
        "webhook_backlog",
        "Bytes of the core's delivery log past the webhook's cursor",
        Unit::Bytes,
        backlog,
    );
    r.register_with_unit(
        "webhook_last_success_timestamp",
        "When the receiver last acknowledged a batch (0: not since start)",
        Unit::Seconds,
        last,
    );
}

fn process(r: &mut Registry) {
    let (cpu, rss) = usage();
    r.register_with_unit(
        "process_cpu",
        "CPU time of the whole process (user and system)",
        Unit::Seconds,
        CpuSeconds(cpu),
    );
    let mut m = Series::new(MetricType::Gauge);
    m.add(Vec::new(), Point::Gauge(rss as f64));
    r.register_with_unit(
        "process_resident_memory",
        "Resident memory of the process",
        Unit::Bytes,
        m,
    );
}

/// A counter of seconds, which is a float.
#[derive(Debug)]
struct CpuSeconds(f64);

impl EncodeMetric for CpuSeconds {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, f64>(&self.0, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// The process's CPU seconds and resident bytes, from /proc/self.
fn usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end at ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at 3.
    let hz = 100.0; // USER_HZ, fixed at 100 on Linux for /proc
    let cpu = (ticks(11) + ticks(12)) as f64 / hz;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    (cpu, rss_kib * 1024)
}
