//! The engine: one glommio executor per configured CPU, pinned to it, each
//! running a whole [`Core`]: listeners, spool, queues and its end of the
//! mesh. The main thread only recovers the spool, starts the cores, waits for
//! them to report ready, relays SIGTERM/SIGINT and joins them.
//!
//! No state is shared between cores except read-only values (the config,
//! the TLS config, segment mappings) and the mesh channels.

mod per_core;

pub use self::per_core::{Accepted, Core};

use self::per_core::{run_core, CoreStart};
use crate::config::Config;
use crate::delivery::Egress;
use crate::mesh;
use crate::message::MessageHandle;
use crate::router::split_by_owner;
use crate::shaping::{self, Published};
use crate::spool::recovery::{self, Recovered};
use crate::spool::SegmentBook;
use crate::tls;
use futures_rustls::TlsAcceptor;
use glommio::{LocalExecutorBuilder, Placement};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a core looks at the process-wide stop flag.
pub(crate) const STOP_POLL: Duration = Duration::from_millis(50);

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
    Dkim(#[from] crate::dkim::DkimError),
    #[error("{0}")]
    Failed(String),
}

/// Runs the engine until SIGTERM/SIGINT. Returns once every core has
/// finished its open transactions (or the grace time ran out).
pub fn serve(mut cfg: Config) -> Result<(), EngineError> {
    let shaping_rules = cfg
        .delivery
        .shaping_file
        .as_deref()
        .map(shaping::load)
        .transpose()
        .map_err(|e| EngineError::Failed(format!("shaping file {e}")))?;
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
    let egress = Arc::new(Egress::new(&cfg).map_err(EngineError::Failed)?);
    let dkim = Arc::new(crate::dkim::Signers::load(&cfg.dkim)?);
    let webhooks = crate::webhook::load(&cfg).map_err(EngineError::Failed)?;
    // Held until the engine returns: one engine per spool.
    let _lock = lock_spool(&cfg.spool_dir)?;
    let admin = admin_start(&cfg)?;
    let classes = Arc::new(match &cfg.platform.bounce_rules_file {
        Some(path) => crate::classify::Classifier::with_file(path)
            .map_err(|e| EngineError::Failed(format!("bounces.rules_file {e}")))?,
        None => crate::classify::Classifier::shipped(),
    });
    let (suppressed, generation) =
        crate::suppression::load::load(&cfg.spool_dir, cfg.platform.suppression_entries_max)
            .map_err(|e| EngineError::Failed(format!("suppression journal: {e}")))?;
    let suppressed = Arc::new((suppressed, generation));
    let Recovered {
        next_segment_id,
        messages,
        books,
        spares,
        report,
    } = recovery::recover(&cfg.spool_dir)?;
    // Absolute from here on: glommio opens the directory by path.
    cfg.spool_dir =
        std::fs::canonicalize(&cfg.spool_dir).map_err(|source| recovery::RecoveryError::Io {
            path: cfg.spool_dir.clone(),
            source,
        })?;
    eprintln!(
        "spate: spool {}: {} segments, {} records, {} messages, {} recipients to deliver, {} torn tails cut, {} corrupt records skipped, {} truncated segments, {} spare segment files",
        cfg.spool_dir.display(), report.segments, report.records, report.messages, report.pending_recipients, report.torn_tails.len(), report.corrupt.len(), report.truncated.len(), report.spares
    );
    make_dirs(&cfg)?;
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
    // Spare files go round the cores, each taking what it can reuse.
    let mut per_core_spares: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
    for (i, spare) in spares.into_iter().enumerate() {
        per_core_spares[i % n].push(spare);
    }
    let mut per_core_spares = per_core_spares.into_iter();
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = Arc::new(cfg);
    let warmups = Arc::new(
        shaping::warmup::Warmups::open(
            Some(cfg.spool_dir.join("warmup.json")),
            cfg.delivery.warmup_clock_manual,
        )
        .map_err(EngineError::Failed)?,
    );
    let shaping = Arc::new(Published::new(cfg.clone(), shaping_rules, warmups.clone()));
    watch_signals(stop.clone(), shaping.clone());
    let keeper = keep_warmups(warmups.clone(), stop.clone());
    let mesh = mesh::builder(n);
    let control = crate::control::builder(n);
    let (ready_tx, ready_rx) = crossbeam::channel::unbounded();
    let mut joins = Vec::new();
    let mut per_core_books = per_core_books.into_iter();
    for (index, (cpu, recovered)) in cpus.iter().zip(per_core).enumerate() {
        let start = CoreStart {
            index,
            cores: n,
            cfg: cfg.clone(),
            tls: tls.clone(),
            egress: egress.clone(),
            shaping: shaping.clone(),
            dkim: dkim.clone(),
            webhooks: webhooks.clone(),
            recovered,
            books: per_core_books.next().unwrap_or_default(),
            spares: per_core_spares.next().unwrap_or_default(),
            next_segment_id,
            mesh: mesh.clone(),
            control: control.clone(),
            admin: admin.clone(),
            suppressed: suppressed.clone(),
            classes: classes.clone(),
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
        let admin: Vec<String> = cfg.admin.listen.iter().map(|a| a.to_string()).collect();
        let admin = if admin.is_empty() {
            "no admin server".to_string()
        } else {
            format!("admin on {}", admin.join(", "))
        };
        let inject: Vec<String> = cfg
            .platform
            .inject
            .listen
            .iter()
            .map(|a| a.to_string())
            .collect();
        let inject = if inject.is_empty() {
            String::new()
        } else {
            format!("; HTTP injection on {}", inject.join(", "))
        };
        eprintln!(
            "spate: ready: {n} cores on CPUs {cpus:?}, listening on {}; {admin}{inject}",
            addrs.join(", ")
        );
    } else {
        stop.store(true, Ordering::SeqCst);
    }
    for j in joins {
        let _ = j.join();
    }
    let _ = keeper.join();
    if let Err(e) = warmups.save() {
        eprintln!("spate: warm-up state not saved: {e}");
    }
    match failure {
        Some(e) => Err(EngineError::Failed(e)),
        None => {
            eprintln!("spate: stopped");
            Ok(())
        }
    }
}

/// The directories the cores write files into, made (and the spool
/// directory synced, so they last) before the cores start.
fn make_dirs(cfg: &Config) -> Result<(), EngineError> {
    let mut dirs = vec![crate::suppression::load::dir(&cfg.spool_dir)];
    if !cfg.platform.feedback_addresses.is_empty() {
        dirs.push(crate::complaints::dir(&cfg.spool_dir));
    }
    let failed = |d: &std::path::Path, e: std::io::Error| {
        EngineError::Failed(format!("{}: {e}", d.display()))
    };
    for d in &dirs {
        std::fs::create_dir_all(d).map_err(|e| failed(d, e))?;
    }
    std::fs::File::open(&cfg.spool_dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| failed(&cfg.spool_dir, e))
}

/// What every core's admin and injection servers share: the tokens and
/// TLS settings.
#[derive(Clone)]
pub(crate) struct AdminStart {
    pub(crate) tokens: Arc<crate::admin::Tokens>,
    pub(crate) tls: Option<TlsAcceptor>,
}

/// Loads (or makes) the admin tokens and TLS settings, and makes sure no
/// other process serves the admin addresses: the cores bind them with
/// SO_REUSEPORT, which would silently share them with another spate.
fn admin_start(cfg: &Config) -> Result<Option<AdminStart>, EngineError> {
    let inject = &cfg.platform.inject.listen;
    if cfg.admin.listen.is_empty() && inject.is_empty() {
        return Ok(None);
    }
    let keyed = cfg.admin.listen.iter().map(|a| ("admin.listen", a));
    for (key, addr) in keyed.chain(inject.iter().map(|a| ("inject.listen", a))) {
        probe_exclusive(*addr).map_err(|e| EngineError::Failed(format!("{key} {addr}: {e}")))?;
    }
    let tokens =
        crate::admin::Tokens::load_or_make(cfg.admin.token_file.as_deref(), &cfg.spool_dir)
            .map_err(EngineError::Failed)?;
    let tls = cfg
        .admin
        .tls
        .as_ref()
        .map(tls::server_config)
        .transpose()?
        .map(TlsAcceptor::from);
    Ok(Some(AdminStart {
        tokens: Arc::new(tokens),
        tls,
    }))
}

/// How long a listening socket of a process that just died may keep its
/// address: io_uring tears a dead process's ring down after the process is
/// gone, and a pending accept holds the socket until then.
const ADDRESS_RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Binds `addr` without SO_REUSEPORT and lets it go, to learn that no
/// other process listens there. "In use" is asked again for a moment: right
/// after a crash, the last run's sockets outlive it briefly.
fn probe_exclusive(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let deadline = Instant::now() + ADDRESS_RELEASE_WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
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

/// Writes the warm-up progress every few seconds until the engine stops
/// (off the cores: the write is a blocking file write and fsync).
fn keep_warmups(
    warmups: Arc<shaping::warmup::Warmups>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(STOP_POLL);
            if last.elapsed() >= shaping::warmup::SAVE_INTERVAL {
                last = Instant::now();
                if let Err(e) = warmups.save() {
                    eprintln!("spate: warm-up state not saved: {e}");
                }
            }
        }
    })
}

/// SIGTERM and SIGINT stop the engine (a second one exits at once);
/// SIGHUP reloads the shaping file; SIGUSR2 ends the warm-up day when
/// `delivery.warmup_clock` is "manual".
fn watch_signals(stop: Arc<AtomicBool>, shaping: Arc<Published>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR2])
        .expect("signal handlers install");
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == SIGUSR2 {
                match shaping.end_warmup_day() {
                    Some(day) => eprintln!("spate: SIGUSR2: warm-up day {day} begins"),
                    None => eprintln!(
                        "spate: SIGUSR2: ignored (warm-up days follow UTC; delivery.warmup_clock is not \"manual\")"
                    ),
                }
                continue;
            }
            if sig == SIGHUP {
                match shaping.reload() {
                    Ok(Some(n)) => {
                        eprintln!("spate: SIGHUP: shaping rules reloaded ({n} destination rules)")
                    }
                    Ok(None) => eprintln!("spate: SIGHUP: no shaping file to reload"),
                    Err(e) => {
                        eprintln!("spate: SIGHUP: shaping file {e}; the old rules stay in force")
                    }
                }
                continue;
            }
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("spate: second signal {sig}: exiting now");
                std::process::exit(1);
            }
            eprintln!("spate: signal {sig}: stopping (finishing open transactions)");
        }
    });
}
