//! One webhook's task on one core: gather a batch from the core's delivery
//! log past the cursor, POST it until the receiver answers 2xx (backing
//! off from [`BACKOFF_FIRST`], doubling, with jitter, to `backoff_max_ms`),
//! then save the cursor past it. Only then is the next batch gathered, so
//! batches reach the receiver in log order.
//!
//! Must never skip a record it did not get a 2xx for, and never wait on
//! anything but its own file reads, timers and the receiver.

use super::batch::{Batch, LINE_BYTES_MAX};
use super::cursor::{Cursor, CursorFile};
use super::post::{Client, Post};
use super::{Stats, Target};
use crate::engine::Core;
use glommio::io::{BufferedFile, OpenOptions};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// How often the log's size is looked at while a batch gathers: the log
/// is written every [`crate::delivery_log::FLUSH_INTERVAL`].
pub const POLL_INTERVAL: Duration = crate::delivery_log::FLUSH_INTERVAL;
/// The usual read from the log; a line longer than this gets one read of
/// [`LINE_BYTES_MAX`] before it is judged not a record.
pub const READ_BYTES: usize = 64 << 10;
/// After a file error (the log unreadable, the cursor unsaveable), the
/// task starts again from the saved cursor this much later.
pub const RESTART_WAIT: Duration = Duration::from_secs(5);

/// Runs webhook `which` of this core for as long as the core runs.
pub async fn run(core: Rc<Core>, which: usize) {
    loop {
        let Err(e) = run_from_cursor(&core, which).await;
        let name = &core.webhooks.targets[which].cfg.name;
        eprintln!(
            "spate: core {}: webhook {name}: {e}; starting again from its cursor in {RESTART_WAIT:?}",
            core.index
        );
        glommio::timer::sleep(RESTART_WAIT).await;
    }
}

async fn run_from_cursor(core: &Core, which: usize) -> std::io::Result<std::convert::Infallible> {
    let t = &core.webhooks.targets[which];
    let stats = &core.webhooks.stats[which];
    let path = crate::delivery_log::file_path(&core.cfg.log_dir, core.index);
    let log = OpenOptions::new().read(true).buffered_open(&path).await?;
    // fstat of an open descriptor reads the inode in memory: no disk wait.
    let inode = nix::sys::stat::fstat(log.as_raw_fd())?.st_ino;
    let cursors = CursorFile::open(
        &super::cursor_dir(&core.cfg.spool_dir, &t.cfg.name),
        core.index,
    )
    .await?;
    let saved = cursors.load().await?;
    let start = Cursor::start_in(saved, inode, log.file_size().await?);
    if saved.is_some_and(|c| c.offset != start) {
        eprintln!(
            "spate: core {}: webhook {}: the cursor names another log file; starting from its beginning",
            core.index, t.cfg.name
        );
    }
    let mut batch = Batch::new(start);
    let mut client = Client::new(t.tls.clone());
    loop {
        gather(&log, &mut batch, t, stats, core.index).await?;
        if !batch.is_empty() {
            deliver(core, &mut client, t, stats, &batch, &log).await;
        }
        cursors
            .save(Cursor {
                inode,
                offset: batch.end,
            })
            .await?;
        stats.events.set(stats.events.get() + batch.len() as u64);
        batch = batch.next();
    }
}

/// Fills `batch` from the log: returns once it is full, or once
/// `interval_ms` has passed with something read.
async fn gather(
    log: &BufferedFile,
    batch: &mut Batch,
    t: &Target,
    stats: &Stats,
    core: usize,
) -> std::io::Result<()> {
    let w = &t.cfg;
    let mut deadline = Instant::now() + w.interval;
    loop {
        let size = log.file_size().await?;
        stats.backlog_bytes.set(size.saturating_sub(batch.start));
        let mut read = READ_BYTES;
        while batch.end < size && !batch.is_full(w.batch_max) {
            let want = (size - batch.end).min(read as u64) as usize;
            let bytes = log.read_at(batch.end, want).await?;
            let before = batch.end;
            let garbage = batch.feed(&bytes, &w.kinds, w.batch_max);
            if garbage > 0 {
                eprintln!(
                    "spate: core {core}: webhook {}: {garbage} lines of the delivery log before offset {} are not records (a crash's torn line?); skipped",
                    w.name, batch.end
                );
            }
            if batch.end == before {
                if want < read || read == LINE_BYTES_MAX {
                    break; // Only part of a line is there yet.
                }
                read = LINE_BYTES_MAX;
            }
        }
        let now = Instant::now();
        if batch.is_full(w.batch_max) || (now >= deadline && batch.end > batch.start) {
            return Ok(());
        }
        if now >= deadline {
            deadline = now + w.interval;
        }
        glommio::timer::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// POSTs `batch` until the receiver answers 2xx.
async fn deliver(
    core: &Core,
    client: &mut Client,
    t: &Target,
    stats: &Stats,
    batch: &Batch,
    log: &BufferedFile,
) {
    let w = &t.cfg;
    let post = Post::new(
        batch.body(&w.name, core.index),
        &t.secret,
        batch.id(core.index),
    );
    let mut delay = BACKOFF_FIRST;
    loop {
        let why = match client.post(w, &core.resolver, &post).await {
            Ok(status) if status.is_success() => {
                stats.last_success_ms.set(crate::delivery_log::now_ms());
                return;
            }
            Ok(status) => format!("answered {status}"),
            Err(e) => e.to_string(),
        };
        stats.failures.set(stats.failures.get() + 1);
        let wait = delay / 2 + delay.mul_f64(fastrand::f64() / 2.0);
        eprintln!(
            "spate: core {}: webhook {}: batch {}: {why}; again in {} ms",
            core.index,
            w.name,
            post.batch_id,
            wait.as_millis()
        );
        glommio::timer::sleep(wait).await;
        delay = (delay * 2).min(w.backoff_max);
        if let Ok(size) = log.file_size().await {
            stats.backlog_bytes.set(size.saturating_sub(batch.start));
        }
    }
}
