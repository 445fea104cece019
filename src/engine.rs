//! The engine: one glommio executor per configured CPU, pinned to it, each
//! running a whole [`Core`]: listeners, spool, queues and its end of the
//! mesh. The main thread only recovers the spool, starts the cores, waits for
//! them to report ready, relays SIGTERM/SIGINT and joins them.
//!
//! No state is shared between cores except read-only values (the config,
//! the TLS config, segment mappings) and the mesh channels.

use crate::config::Config;
use crate::local::{Notify, StopSignal};
use crate::mesh::{self, Mesh};
use crate::message::MessageHandle;
use crate::queue::Queues;
use crate::router::split_by_owner;
use crate::spool::recovery::{self, Recovered};
use crate::spool::{Faults, IdSpace, Spool};
use crate::{listener, tls};
use futures_rustls::TlsAcceptor;
use glommio::{LocalExecutorBuilder, Placement};
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
    pub session_ended: Notify,
}

impl Core {
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
    recovered: Vec<MessageHandle>,
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
    let Recovered {
        next_segment_id,
        messages,
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
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let cfg = Arc::new(cfg);
    let mesh = mesh::builder(n);
    let (ready_tx, ready_rx) = crossbeam::channel::unbounded();
    let mut joins = Vec::new();
    for (index, (cpu, recovered)) in cpus.iter().zip(per_core).enumerate() {
        let start = CoreStart {
            index,
            cores: n,
            cfg: cfg.clone(),
            tls: tls.clone(),
            recovered,
            next_segment_id,
            mesh: mesh.clone(),
            stop: stop.clone(),
            ready: ready_tx.clone(),
        };
        let join = LocalExecutorBuilder::new(Placement::Fixed(*cpu))
            .name(&format!("spate-core-{index}"))
            .spawn(move || run_core(start))
            .map_err(|e| EngineError::Start(index, e.to_string()))?;
        joins.push(join);
    }
    let mut failure = None;
    for _ in 0..n {
        if let Ok(Err(e)) | Err(e) = ready_rx.recv().map_err(|e| e.to_string()) {
            failure.get_or_insert(e);
        }
    }
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
    let ids = IdSpace::new(s.next_segment_id, s.index, s.cores);
    let spool = match Spool::open(
        s.cfg.spool_dir.clone(),
        s.cfg.segment_bytes,
        s.index,
        ids,
        Faults::from_env(),
    )
    .await
    {
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
        session_ended: Notify::default(),
    });
    for l in listeners {
        glommio::spawn_local(listener::accept_loop(l, core.clone())).detach();
    }
    let _ = s.ready.send(Ok(()));
    while !s.stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(STOP_POLL).await;
    }
    shut_down(&core).await;
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

/// Stops accepting, lets open transactions finish within the grace time,
/// then reports what this core holds.
async fn shut_down(core: &Rc<Core>) {
    core.stop.stop();
    let deadline = Instant::now() + core.cfg.shutdown_grace;
    while core.sessions.get() > 0 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        futures_lite::future::or(core.session_ended.notified(), glommio::timer::sleep(left)).await;
    }
    core.spool.close();
    core.mesh.close();
    let q = core.queues.summary();
    let st = &core.spool.stats;
    eprintln!(
        "spate: core {}: {} records in {} syncs; queued {} messages, {} recipients, {} domains; {} sessions cut at shutdown",
        core.index, st.records.get(), st.syncs.get(), q.messages, q.recipients, q.domains, core.sessions.get()
    );
}
