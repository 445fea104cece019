//! The engine: one glommio executor per configured CPU, pinned to it, each
//! running a whole [`Core`]: listeners, spool, queues and its end of the
//! mesh. The main thread only recovers the spool, starts the cores, waits for
//! them to report ready, relays SIGTERM/SIGINT and joins them.
//!
//! No state is shared between cores except read-only values (the config,
//! the TLS config, segment mappings) and the mesh channels.

use crate::bounce::{self, Failure};
use crate::config::Config;
use crate::delivery::TlsClients;
use crate::delivery_log::{self, DeliveryLog, Kind, Record};
use crate::dns::Resolver;
use crate::local::StopSignal;
use crate::mesh::{self, Mesh};
use crate::message::Recipient;
use crate::message::{MessageHandle, Stored};
use crate::queue::Queues;
use crate::router::split_by_owner;
use crate::spool::recovery::{self, Recovered};
use crate::spool::SpoolError;
use crate::spool::{self, Faults, IdSpace, SegmentBook, Spool};
use crate::{delivery, listener, tls};
use futures_rustls::TlsAcceptor;
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, Task, TaskQueueHandle};
use spool_format::{MessageBuilder, FLAG_8BITMIME, FLAG_SMTPUTF8};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a core looks at the process-wide stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cores: {0}")]
    Cores(String),
    #[error("spool: {0}")]
    Recovery(#[from] recovery::RecoveryError),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("log dir {0}: {1}")]
    LogDir(String, std::io::Error),
    #[error("core {0}: {1}")]
    Start(usize, String),
    #[error("{0}")]
    Failed(String),
}

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
    pub sessions: Cell<usize>,
    /// Open sessions per client address on this core.
    pub sessions_per_ip: std::cell::RefCell<std::collections::HashMap<std::net::IpAddr, u32>>,
    pub resolver: Resolver,
    /// Numbers this core's delivery connections, for the log.
    pub connections_made: Cell<u64>,
    pub log: Rc<DeliveryLog>,
    pub tls_clients: Arc<TlsClients>,
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
}

impl Core {
    /// Makes a sealed message record durable, logs its reception and hands
    /// it to the cores that own its recipients. `Ok` means durable.
    pub async fn accept(&self, a: Accepted, record: Vec<u8>) -> Result<(), SpoolError> {
        let stored = Stored::new(
            a.id,
            record.len(),
            a.body_start,
            a.body_len,
            a.recipients.len() as u32,
        );
        self.spool.append_message(record, stored.clone()).await?;
        let handle = MessageHandle {
            id: a.id,
            received_ms: a.received_ms,
            flags: a.flags,
            stored,
            body_len: a.body_len,
            sender: a.sender.into(),
            recipients: a
                .recipients
                .into_iter()
                .enumerate()
                .map(|(i, address)| Recipient {
                    index: i as u32,
                    address: address.into(),
                    attempts: 0,
                    next_attempt_ms: 0,
                })
                .collect(),
        };
        let first = &handle.recipients[0].address;
        self.log.write(&Record {
            kind: Kind::Reception,
            time_ms: a.received_ms,
            id: handle.id_text(),
            sender: &handle.sender,
            recipient: first,
            domain: crate::message::domain_of(first),
            mx_host: None,
            mx_ip: None,
            connection: None,
            response: "",
            attempt: 0,
            size: handle.body_len,
            queue_time_ms: 0,
            core: self.index,
        });
        self.hand_off(handle).await;
        Ok(())
    }

    /// Spools a DSN about `failures` of `original` to its sender.
    pub async fn send_dsn(
        &self,
        original: &MessageHandle,
        failures: &[Failure],
    ) -> Result<(), SpoolError> {
        let id = self.spool.next_message_id();
        let now = chrono::Utc::now();
        let dsn = bounce::build(
            &self.cfg.hostname,
            &format!("{id:016x}"),
            original,
            failures,
            now,
        );
        let to = original.sender.to_string();
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
        let (body_start, body_len) = (b.body_start(), b.body_len());
        let accepted = Accepted {
            id,
            received_ms,
            flags,
            sender: String::new(),
            recipients: vec![to],
            body_start,
            body_len,
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
struct CoreStart {
    index: usize,
    cores: usize,
    cfg: Arc<Config>,
    tls: Option<TlsAcceptor>,
    tls_clients: Arc<TlsClients>,
    recovered: Vec<MessageHandle>,
    /// The books of the segments this core wrote (or inherits).
    books: Vec<SegmentBook>,
    next_segment_id: u64,
    mesh: mesh::Builder,
    stop: Arc<AtomicBool>,
    ready: crossbeam::channel::Sender<Result<(), String>>,
}

/// Runs the engine until SIGTERM/SIGINT. Returns once every core has
/// finished its open transactions (or the grace time ran out).
pub fn serve(mut cfg: Config) -> Result<(), EngineError> {
    let online: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let cpus = cfg.cores.resolve(&online).map_err(EngineError::Cores)?;
    std::fs::create_dir_all(&cfg.log_dir)
        .map_err(|e| EngineError::LogDir(cfg.log_dir.display().to_string(), e))?;
    let tls = cfg
        .tls
        .as_ref()
        .map(tls::server_config)
        .transpose()?
        .map(TlsAcceptor::from);
    let tls_clients = Arc::new(
        TlsClients::new(cfg.delivery.tls_ca_file.as_deref()).map_err(EngineError::Failed)?,
    );
    // Held until the engine returns: one engine per spool.
    let _lock = lock_spool(&cfg.spool_dir)?;
    let Recovered {
        next_segment_id,
        messages,
        books,
        report,
    } = recovery::recover(&cfg.spool_dir)?;
    // Absolute from here on: glommio opens the directory by path.
    cfg.spool_dir =
        std::fs::canonicalize(&cfg.spool_dir).map_err(|source| recovery::RecoveryError::Io {
            path: cfg.spool_dir.clone(),
            source,
        })?;
    eprintln!(
        "spate: spool {}: {} segments, {} records, {} messages, {} recipients to deliver, {} torn tails cut, {} corrupt records skipped, {} truncated segments",
        cfg.spool_dir.display(), report.segments, report.records, report.messages, report.pending_recipients, report.torn_tails.len(), report.corrupt.len(), report.truncated.len()
    );
    let n = cpus.len();
    let mut per_core: Vec<Vec<MessageHandle>> = (0..n).map(|_| Vec::new()).collect();
    for m in messages {
        for (owner, part) in split_by_owner(m, n) {
            per_core[owner].push(part);
        }
    }
    // A segment stays with the core that wrote it; those of cores that no
    // longer run go round the others.
    let mut per_core_books: Vec<Vec<SegmentBook>> = (0..n).map(|_| Vec::new()).collect();
    for (core, book) in books {
        per_core_books[core as usize % n].push(book);
    }
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let cfg = Arc::new(cfg);
    let mesh = mesh::builder(n);
    let (ready_tx, ready_rx) = crossbeam::channel::unbounded();
    let mut joins = Vec::new();
    let mut per_core_books = per_core_books.into_iter();
    for (index, (cpu, recovered)) in cpus.iter().zip(per_core).enumerate() {
        let start = CoreStart {
            index,
            cores: n,
            cfg: cfg.clone(),
            tls: tls.clone(),
            tls_clients: tls_clients.clone(),
            recovered,
            books: per_core_books.next().unwrap_or_default(),
            next_segment_id,
            mesh: mesh.clone(),
            stop: stop.clone(),
            ready: ready_tx.clone(),
        };
        let join = LocalExecutorBuilder::new(Placement::Fixed(*cpu))
            .name(&format!("spate-core-{index}"))
            .spin_before_park(cfg.spin_before_park)
            .spawn(move || run_core(start))
            .map_err(|e| EngineError::Start(index, e.to_string()))?;
        joins.push(join);
    }
    drop(ready_tx);
    let failure = wait_ready(&ready_rx, n, &stop);
    if failure.is_none() {
        let addrs: Vec<String> = cfg.listen.iter().map(|a| a.to_string()).collect();
        eprintln!(
            "spate: ready: {n} cores on CPUs {cpus:?}, listening on {}",
            addrs.join(", ")
        );
    } else {
        stop.store(true, Ordering::SeqCst);
    }
    for j in joins {
        let _ = j.join();
    }
    match failure {
        Some(e) => Err(EngineError::Failed(e)),
        None => {
            eprintln!("spate: stopped");
            Ok(())
        }
    }
}

/// How long the cores may take to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits for every core's ready report; the first failure, if any. A core
/// that never reports (its thread died, or it hangs) must not hang the
/// start: past the timeout, or on a signal, the process exits.
fn wait_ready(
    ready: &crossbeam::channel::Receiver<Result<(), String>>,
    n: usize,
    stop: &AtomicBool,
) -> Option<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut failure = None;
    let mut reported = 0;
    while reported < n {
        match ready.recv_timeout(STOP_POLL) {
            Ok(Ok(())) => reported += 1,
            Ok(Err(e)) => {
                reported += 1;
                failure.get_or_insert(e);
            }
            Err(crossbeam::channel::RecvTimeoutError::Timeout)
                if Instant::now() < deadline && !stop.load(Ordering::SeqCst) => {}
            Err(_) => {
                eprintln!(
                    "spate: {} of {n} cores did not start; exiting",
                    n - reported
                );
                std::process::exit(1);
            }
        }
    }
    failure
}

/// Takes the spool's lock file, so that two engines never share a spool.
fn lock_spool(dir: &std::path::Path) -> Result<std::fs::File, EngineError> {
    let io = |source| recovery::RecoveryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(EngineError::Failed(format!(
            "spool {} is in use by another spate (lock {} held)",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e).into()),
    }
}

/// SIGTERM or SIGINT asks every core to stop; a second one exits at once.
fn watch_signals(stop: Arc<AtomicBool>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).expect("signal handlers install");
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("spate: second signal {sig}: exiting now");
                std::process::exit(1);
            }
            eprintln!("spate: signal {sig}: stopping (finishing open transactions)");
        }
    });
}

async fn run_core(s: CoreStart) {
    let queues = Rc::new(Queues::new(s.index));
    for m in s.recovered {
        queues.enqueue(m);
    }
    let mesh = Mesh::join(s.mesh, queues.clone()).await;
    // glommio numbers mesh peers in executor order, which is core order.
    assert_eq!(mesh.core(), s.index, "mesh peer id matches the core index");
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
    let mut listeners = Vec::new();
    for addr in &s.cfg.listen {
        match glommio::net::TcpListener::bind(addr) {
            Ok(l) => listeners.push(l),
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
        sessions: Cell::new(0),
        sessions_per_ip: Default::default(),
        connections_made: Cell::new(0),
        resolver: Resolver::new(servers, dns.timeout, dns.attempts, dns.cache_entries_max),
        log,
        tls_clients: s.tls_clients,
    });
    work.outbound(delivery::run(core.clone())).detach();
    for l in listeners {
        work.inbound(listener::accept_loop(l, core.clone()))
            .detach();
    }
    let _ = s.ready.send(Ok(()));
    while !s.stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    shut_down(&core).await;
}

/// The core's two task queues. Tasks spawned by a task stay in its queue,
/// so sessions run where their accept loop runs, and delivery connections
/// where the delivery driver runs.
struct WorkQueues {
    inbound: Option<TaskQueueHandle>,
    outbound: Option<TaskQueueHandle>,
}

impl WorkQueues {
    /// `latency`: how soon inbound work may interrupt delivery work; with
    /// `None` everything shares the executor's default queue.
    fn new(latency: Option<Duration>) -> WorkQueues {
        let Some(latency) = latency else {
            return WorkQueues {
                inbound: None,
                outbound: None,
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
        }
    }

    fn inbound<T: 'static>(&self, f: impl std::future::Future<Output = T> + 'static) -> Task<T> {
        spawn_in(self.inbound, f)
    }

    fn outbound<T: 'static>(&self, f: impl std::future::Future<Output = T> + 'static) -> Task<T> {
        spawn_in(self.outbound, f)
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
    while (core.sessions.get() > 0 || core.queues.open_connections() > 0)
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
        "spate: core {}: {} records in {} syncs; queued {} messages, {} recipients, {} domains ({} ready, {} waiting to retry); {} sessions cut at shutdown",
        core.index, st.records.get(), st.syncs.get(), q.messages, q.recipients, q.domains, q.ready, q.scheduled, core.sessions.get()
    );
}
