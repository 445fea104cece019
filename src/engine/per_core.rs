//! One core: what it owns ([`Core`]: listeners, spool, queues, its end of
//! the mesh, delivery log, resolver) and how it runs, from the spool's open
//! to the shutdown report. Lives on its own executor's thread; the only way
//! in from another core is the mesh.
//!
//! Must never block the thread (no blocking syscalls, no locks shared with
//! other cores) or touch another core's state.

use super::STOP_POLL;
use crate::bounce::{self, Failure};
use crate::config::Config;
use crate::delivery::Egress;
use crate::delivery_log::{self, DeliveryLog, Kind, Record};
use crate::dkim::Signers;
use crate::dns::Resolver;
use crate::local::StopSignal;
use crate::mesh::{self, Mesh};
use crate::message::{MessageHandle, Recipient, Stored};
use crate::queue::Queues;
use crate::router::split_by_owner;
use crate::shaping::{Published, Shaper};
use crate::spool::SpoolError;
use crate::spool::{self, Faults, IdSpace, SegmentBook, Spool};
use crate::{delivery, listener};
use futures_rustls::TlsAcceptor;
use glommio::{Latency, Shares, Task, TaskQueueHandle};
use spool_format::{MessageBuilder, FLAG_8BITMIME, FLAG_SMTPUTF8};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything one core owns. Lives on that core's thread only.
pub struct Core {
    pub index: usize,
    pub cores: usize,
    pub cfg: Arc<Config>,
    pub spool: Rc<Spool>,
    pub queues: Rc<Queues>,
    pub mesh: Mesh,
    pub tls: Option<TlsAcceptor>,
    pub stop: StopSignal,
    /// The listener's sessions and the memory their DATA holds.
    pub inbound: Rc<listener::Inbound>,
    pub resolver: Resolver,
    /// Numbers this core's delivery connections, for the log.
    pub connections_made: Cell<u64>,
    pub log: Rc<DeliveryLog>,
    /// What delivery needs from outside the core: TLS client settings,
    /// this host's own addresses.
    pub egress: Arc<Egress>,
    /// The shaping rules as this core last saw them, and the rate state of
    /// the destinations it owns.
    pub shaper: Shaper,
    /// DKIM keys, shared read-only by every core.
    pub dkim: Arc<Signers>,
    /// This core's copy of the suppression lists.
    pub suppression: Rc<crate::suppression::Suppression>,
    /// The bounce classes of failures, shared read-only by every core.
    pub classes: Arc<crate::classify::Classifier>,
    /// The webhooks this core feeds from its delivery log, and their counters.
    pub webhooks: crate::webhook::Webhooks,
}

/// A message whose record is sealed and about to be appended.
pub struct Accepted {
    pub id: u64,
    pub received_ms: u64,
    pub flags: u32,
    pub sender: String,
    pub recipients: Vec<String>,
    /// Where the body starts in the record, and its length.
    pub body_start: usize,
    pub body_len: usize,
    /// The message's Message-ID (without angle brackets), for the log.
    pub message_id: Option<String>,
}

impl Accepted {
    /// How the spool tracks the message once its `record_len`-byte record
    /// is appended.
    pub fn stored(&self, record_len: usize) -> Arc<Stored> {
        Stored::new(
            self.id,
            record_len,
            self.body_start,
            self.body_len,
            self.recipients.len() as u32,
        )
    }
}

impl Core {
    /// Makes a sealed message record durable, logs its reception and hands
    /// it to the cores that own its recipients. `Ok` means durable.
    pub async fn accept(&self, a: Accepted, record: Vec<u8>) -> Result<(), SpoolError> {
        let stored = a.stored(record.len());
        self.spool.append_message(record, stored.clone()).await?;
        self.accepted(a, stored).await;
        Ok(())
    }

    /// Logs the reception of a message whose record is durable and hands
    /// it to the cores that own its recipients.
    pub async fn accepted(&self, a: Accepted, stored: Arc<Stored>) {
        let handle = MessageHandle {
            id: a.id,
            stored,
            recipients: Recipient::first_attempts(a.recipients.len()),
        };
        let first = &a.recipients[0];
        let envelope = handle.envelope();
        let (tenant, campaign) = envelope.tags();
        self.log.write(&Record {
            kind: Kind::Reception,
            time_ms: a.received_ms,
            id: handle.id_text(),
            sender: &a.sender,
            recipient: first,
            domain: crate::message::domain_of(first),
            mx_host: None,
            mx_ip: None,
            connection: None,
            source: None,
            response: "",
            attempt: 0,
            size: a.body_len,
            queue_time_ms: 0,
            core: self.index,
            tenant: &tenant,
            campaign: &campaign,
            by: None,
            reason: None,
            class: None,
            message_id: a.message_id.as_deref(),
        });
        drop(envelope);
        self.hand_off(handle).await;
    }

    /// Spools a DSN about `failures` of `original` to its sender.
    pub async fn send_dsn(
        &self,
        original: &MessageHandle,
        failures: &[Failure],
    ) -> Result<(), SpoolError> {
        let id = self.spool.next_message_id();
        let now = chrono::Utc::now();
        let to = original.envelope().sender().into_owned();
        let dsn = bounce::build(
            &self.cfg.hostname,
            &format!("{id:016x}"),
            original,
            &to,
            failures,
            now,
        );
        let mut flags = if to.is_ascii() { 0 } else { FLAG_SMTPUTF8 };
        if !dsn.is_ascii() {
            flags |= FLAG_8BITMIME;
        }
        let received_ms = delivery_log::now_ms();
        let mut b = MessageBuilder::new(
            Vec::with_capacity(dsn.len() + 256),
            received_ms,
            flags,
            b"",
            &[to.as_bytes()],
        );
        let received = format!(
            "Received: by {} (spate) id {id:016x};\r\n\t{}\r\n",
            self.cfg.hostname,
            now.to_rfc2822()
        );
        b.body_mut().extend_from_slice(received.as_bytes());
        b.body_mut().extend_from_slice(&dsn);
        if let Err(why) = self.dkim.sign_record(&mut b) {
            // A DSN goes out unsigned rather than not at all.
            eprintln!("spate: core {}: DSN {id:016x}: {why}", self.index);
        }
        let (body_start, body_len) = (b.body_start(), b.body_len());
        let accepted = Accepted {
            id,
            received_ms,
            flags,
            sender: String::new(),
            recipients: vec![to],
            body_start,
            body_len,
            message_id: None,
        };
        self.accept(accepted, b.finish(id)).await
    }

    /// Gives each owning core its share of a durable message's recipients.
    pub async fn hand_off(&self, handle: MessageHandle) {
        for (owner, part) in split_by_owner(handle, self.cores) {
            if owner == self.index {
                self.queues.enqueue(part);
            } else if let Err(part) = self.mesh.send(owner, part).await {
                // The owner is gone (shutting down). The message is durable
                // and recovery requeues it at the next start.
                let id = part.map_or_else(|| "?".into(), |p| p.id_text());
                eprintln!(
                    "spate: core {}: core {owner} is gone; message {id} stays in the spool",
                    self.index
                );
            }
        }
    }
}

/// What the main thread gives each core.
pub(super) struct CoreStart {
    pub(super) index: usize,
    pub(super) cores: usize,
    pub(super) cfg: Arc<Config>,
    pub(super) tls: Option<TlsAcceptor>,
    pub(super) egress: Arc<Egress>,
    pub(super) shaping: Arc<Published>,
    pub(super) dkim: Arc<Signers>,
    pub(super) webhooks: Arc<[crate::webhook::Target]>,
    pub(super) recovered: Vec<MessageHandle>,
    /// The books of the segments this core wrote (or inherits).
    pub(super) books: Vec<SegmentBook>,
    /// Spare segment files found at start (id in the name, path).
    pub(super) spares: Vec<(u64, std::path::PathBuf)>,
    pub(super) next_segment_id: u64,
    pub(super) mesh: mesh::Builder,
    pub(super) control: crate::control::Builder,
    pub(super) admin: Option<super::AdminStart>,
    /// The suppression lists as journaled, read before the cores start.
    /// And the journal generation the cores write into.
    pub(super) suppressed: Arc<(crate::suppression::lists::Lists, u64)>,
    pub(super) classes: Arc<crate::classify::Classifier>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) ready: crossbeam::channel::Sender<Result<(), String>>,
}

pub(super) async fn run_core(s: CoreStart) {
    let queues = Rc::new(Queues::new(s.index));
    let recovered = s.recovered.len();
    for m in s.recovered {
        queues.enqueue(m);
    }
    if recovered > 0 {
        release_free_memory();
    }
    let mesh = Mesh::join(s.mesh, queues.clone()).await;
    // glommio numbers mesh peers in executor order, which is core order.
    assert_eq!(mesh.core(), s.index, "mesh peer id matches the core index");
    let control = crate::control::join(s.control).await;
    let ids = IdSpace::new(s.next_segment_id, s.index, s.cores);
    let settings = spool::Settings {
        segment_bytes: s.cfg.segment_bytes,
        reclaim: spool::Reclaim {
            interval: s.cfg.reclaim_interval,
            compact_below_percent: s.cfg.compact_below_percent,
        },
    };
    let work = WorkQueues::new(s.cfg.inbound_latency);
    // The committer and reclaimer are spawned into the queue Spool::open
    // runs in: the committer is on the way to every 250.
    let open = Spool::open(
        s.cfg.spool_dir.clone(),
        settings,
        s.index,
        ids,
        s.books,
        Faults::from_env(),
    );
    let spool = match work.inbound(open).await {
        Ok(spool) => spool,
        Err(e) => return fail(&s.ready, &s.stop, format!("core {}: spool: {e}", s.index)).await,
    };
    // The first appends must not wait for their segment to be made (of a
    // spare the last run left, if there is one).
    spool.adopt_spares(s.spares);
    spool.prepare().await;
    let mut listeners = Vec::new();
    for addr in &s.cfg.listen {
        match listener::bind(*addr) {
            Ok(l) => listeners.push(l),
            Err(e) => return fail(&s.ready, &s.stop, format!("listen {addr}: {e}")).await,
        }
    }
    let mut admin_listeners = Vec::new();
    let platform = &s.cfg.platform.inject.listen;
    let addresses = s.cfg.admin.listen.iter().map(|a| (a, false));
    for (addr, inject) in addresses.chain(platform.iter().map(|a| (a, true))) {
        match listener::bind(*addr) {
            Ok(l) => admin_listeners.push((l, inject)),
            Err(e) => return fail(&s.ready, &s.stop, format!("listen {addr}: {e}")).await,
        }
    }
    let log = match DeliveryLog::open(&s.cfg.log_dir, s.index).await {
        Ok(log) => log,
        Err(e) => {
            return fail(
                &s.ready,
                &s.stop,
                format!(
                    "core {}: delivery log in {}: {e}",
                    s.index,
                    s.cfg.log_dir.display()
                ),
            )
            .await
        }
    };
    let (lists, generation) = &*s.suppressed;
    let journal =
        match crate::suppression::journal::Journal::open(&s.cfg.spool_dir, s.index, *generation)
            .await
        {
            Ok(j) => j,
            Err(e) => {
                return fail(
                    &s.ready,
                    &s.stop,
                    format!("core {}: suppression journal: {e}", s.index),
                )
                .await
            }
        };
    let suppression = Rc::new(crate::suppression::Suppression::new(
        s.index,
        s.cores,
        lists.clone(),
        journal,
        log.clone(),
    ));
    drop(s.suppressed);
    let dns = &s.cfg.dns;
    let servers = if dns.servers.is_empty() {
        crate::dns::system_servers()
    } else {
        dns.servers.clone()
    };
    let core = Rc::new(Core {
        index: s.index,
        cores: s.cores,
        cfg: s.cfg.clone(),
        spool: spool.clone(),
        queues: queues.clone(),
        mesh,
        tls: s.tls,
        stop: StopSignal::default(),
        inbound: Rc::new(listener::Inbound::new(
            s.cfg.max_data_bytes_in_flight_per_core,
        )),
        connections_made: Cell::new(0),
        resolver: Resolver::new(servers, dns.timeout, dns.attempts, dns.cache_entries_max),
        log,
        egress: s.egress,
        shaper: Shaper::new(s.shaping),
        dkim: s.dkim,
        suppression,
        classes: s.classes,
        webhooks: crate::webhook::Webhooks::new(s.webhooks),
    });
    let control = control.serve(core.clone());
    core.suppression.attach(&control);
    if let Some(a) = &s.admin {
        let beyond_loopback = s.cfg.admin.listen.iter().any(|l| !l.ip().is_loopback());
        let admin = crate::admin::Admin::new(
            control.clone(),
            a.tokens.clone(),
            beyond_loopback,
            a.tls.clone(),
            None,
        );
        let injector = crate::inject::Injector::new(&s.cfg.platform.inject);
        let inject = crate::admin::Admin::new(
            control,
            a.tokens.clone(),
            false,
            a.tls.clone(),
            Some(injector),
        );
        for (l, injection) in admin_listeners {
            let server = if injection { &inject } else { &admin };
            glommio::spawn_local(crate::admin::accept_loop(l, server.clone())).detach();
        }
    }
    work.outbound(delivery::run(core.clone())).detach();
    for which in 0..core.webhooks.len() {
        work.background(crate::webhook::run(core.clone(), which))
            .detach();
    }
    for l in listeners {
        work.inbound(listener::accept_loop(l, core.clone()))
            .detach();
    }
    let _ = s.ready.send(Ok(()));
    while !s.stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(STOP_POLL).await;
        // New shaping rules (SIGHUP): every domain with mail is looked at
        // again under them, not only when its next timer fires.
        if core.shaper.reloaded() || core.shaper.actions_ended() {
            core.queues.mark_all_dirty();
        }
    }
    shut_down(&core).await;
}

/// Hands the heap memory that recovery used and freed (its scan tables, the
/// recovered handles' vector) back to the kernel, so that a restarted queue
/// costs what a live one does rather than what the scan peaked at.
fn release_free_memory() {
    // SAFETY: malloc_trim only returns free pages of glibc's heaps (every
    // thread's arena) to the kernel; it has no preconditions and touches no
    // memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The core's task queues. Tasks spawned by a task stay in its queue,
/// so sessions run where their accept loop runs, and delivery connections
/// where the delivery driver runs. Webhooks run in a third, with a tenth
/// of the others' shares: they yield to mail when the core is busy.
struct WorkQueues {
    inbound: Option<TaskQueueHandle>,
    outbound: Option<TaskQueueHandle>,
    background: Option<TaskQueueHandle>,
}

/// Shares of the background queue (the others have glommio's default, 1000).
const BACKGROUND_SHARES: usize = 100;

impl WorkQueues {
    /// `latency`: how soon inbound work may interrupt delivery work; with
    /// `None` everything shares the executor's default queue.
    fn new(latency: Option<Duration>) -> WorkQueues {
        let Some(latency) = latency else {
            return WorkQueues {
                inbound: None,
                outbound: None,
                background: None,
            };
        };
        let ex = glommio::executor();
        WorkQueues {
            inbound: Some(ex.create_task_queue(
                Shares::default(),
                Latency::Matters(latency),
                "inbound",
            )),
            outbound: Some(ex.create_task_queue(
                Shares::default(),
                Latency::NotImportant,
                "outbound",
            )),
            background: Some(ex.create_task_queue(
                Shares::Static(BACKGROUND_SHARES),
                Latency::NotImportant,
                "background",
            )),
        }
    }

    fn inbound<T: 'static>(&self, f: impl std::future::Future<Output = T> + 'static) -> Task<T> {
        spawn_in(self.inbound, f)
    }

    fn outbound<T: 'static>(&self, f: impl std::future::Future<Output = T> + 'static) -> Task<T> {
        spawn_in(self.outbound, f)
    }

    fn background<T: 'static>(&self, f: impl std::future::Future<Output = T> + 'static) -> Task<T> {
        spawn_in(self.background, f)
    }
}

fn spawn_in<T: 'static>(
    queue: Option<TaskQueueHandle>,
    f: impl std::future::Future<Output = T> + 'static,
) -> Task<T> {
    match queue {
        // Only fails for a queue of another executor, never for ours.
        Some(q) => glommio::spawn_local_into(f, q).expect("a task queue of this executor"),
        None => glommio::spawn_local(f),
    }
}

async fn fail(
    ready: &crossbeam::channel::Sender<Result<(), String>>,
    stop: &AtomicBool,
    why: String,
) {
    let _ = ready.send(Err(why));
    while !stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(STOP_POLL).await;
    }
}

/// Stops accepting, lets open transactions (inbound and outbound) finish
/// within the grace time, then reports what this core holds.
async fn shut_down(core: &Rc<Core>) {
    core.stop.stop();
    let deadline = Instant::now() + core.cfg.shutdown_grace;
    while (core.inbound.sessions() > 0 || core.queues.open_connections() > 0)
        && Instant::now() < deadline
    {
        glommio::timer::sleep(STOP_POLL).await;
    }
    core.spool.close(Duration::from_secs(10)).await;
    core.mesh.close();
    core.log.flush().await;
    let q = core.queues.summary();
    let st = &core.spool.stats;
    eprintln!(
        "spate: core {}: {} records in {} syncs; {} messages ({} recipients) queued since start; left in the queue: {} domains, {} entries ready and {} waiting to retry; {} sessions cut at shutdown",
        core.index, st.records.get(), st.syncs.get(), q.messages_enqueued, q.recipients_enqueued, q.domains, q.ready, q.scheduled, core.inbound.sessions()
    );
}
