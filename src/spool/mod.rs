//! Each core's spool: append-only segments, group commit, and the recovery
//! that rebuilds the queues from them at start.
//!
//! A core owns one [`Spool`]. Sessions and delivery hand it sealed records
//! (built with the `spool-format` crate); one committer task per core writes
//! every record queued since its last round with one io_uring write, covers
//! them with one `fdatasync`, and only then answers each appender with where
//! its record now lives. So an appender that got `Ok` holds a durable record,
//! and SMTP replies 250 only after that. After a failed write or sync the
//! segment is retired and the records it covered are answered `Err`: a
//! failed sync is never retried as if it had succeeded. State records
//! (delivery outcomes) ride along without waiting (`append_lazy`).
//!
//! The spool never copies a record after it is written: readers get slices of
//! the segment's shared read-only mapping.

mod commit;
mod faults;
pub mod recovery;
mod segment;

pub use faults::Faults;
pub use segment::map_segment;

use crate::local::Notify;
use crate::message::SegmentMap;
use futures_channel::oneshot;
use glommio::io::Directory;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

/// Most bytes one commit round writes; the rest waits for the next round.
pub const BATCH_BYTES_MAX: usize = 8 << 20;

/// Why a record could not be made durable. The caller picks the SMTP reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("spool disk is full")]
    Full,
    #[error("spool I/O error: {0}")]
    Io(String),
    #[error("spool is shutting down")]
    Closed,
}

impl SpoolError {
    fn from_io(e: &std::io::Error) -> SpoolError {
        // glommio's errors keep the kind but not always the errno.
        let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            || matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            );
        if full {
            SpoolError::Full
        } else {
            SpoolError::Io(e.to_string())
        }
    }
}

/// Where a durable record lives.
#[derive(Debug, Clone)]
pub struct Placement {
    pub segment: Arc<SegmentMap>,
    pub offset: u64,
}

struct Request {
    record: Vec<u8>,
    /// `None`: the appender does not wait (state records).
    done: Option<oneshot::Sender<Result<Placement, SpoolError>>>,
}

impl Request {
    /// Tells a waiting appender how its record fared.
    fn answer(self, result: Result<Placement, SpoolError>) {
        if let Some(done) = self.done {
            let _ = done.send(result);
        }
    }
}

/// Hands out numbers unique in the spool: segment ids and message-id
/// prefixes. Core `c` of `n` takes `base + c`, `base + c + n`, ...
#[derive(Debug)]
pub struct IdSpace {
    next: u64,
    stride: u64,
}

impl IdSpace {
    /// `base` is one more than the largest segment id already in the spool.
    pub fn new(base: u64, core: usize, cores: usize) -> IdSpace {
        IdSpace {
            next: base + core as u64,
            stride: cores as u64,
        }
    }

    pub fn take(&mut self) -> u64 {
        let id = self.next;
        self.next += self.stride;
        id
    }
}

/// Counters of one core's spool, for logs and tests.
#[derive(Debug, Default)]
pub struct SpoolStats {
    pub records: Cell<u64>,
    pub bytes: Cell<u64>,
    pub syncs: Cell<u64>,
    pub failed_syncs: Cell<u64>,
    pub segments: Cell<u64>,
}

/// One core's spool.
pub struct Spool {
    core: u32,
    dir_path: PathBuf,
    dir: Directory,
    segment_bytes: u64,
    ids: RefCell<IdSpace>,
    message_prefix: Cell<u64>,
    message_seq: Cell<u32>,
    requests: RefCell<VecDeque<Request>>,
    kick: Notify,
    closed: Cell<bool>,
    /// Notified when the committer has written everything and ended.
    drained: Notify,
    faults: Faults,
    pub stats: SpoolStats,
}

impl Spool {
    /// Opens this core's spool in `dir` (which must exist) and starts its
    /// committer task on the current executor.
    pub async fn open(
        dir_path: PathBuf,
        segment_bytes: u64,
        core: usize,
        mut ids: IdSpace,
        faults: Faults,
    ) -> std::io::Result<Rc<Spool>> {
        let dir = Directory::open(&dir_path)
            .await
            .map_err(std::io::Error::from)?;
        let prefix = ids.take();
        let spool = Rc::new(Spool {
            core: core as u32,
            dir_path,
            dir,
            segment_bytes,
            ids: RefCell::new(ids),
            message_prefix: Cell::new(prefix),
            message_seq: Cell::new(0),
            requests: RefCell::new(VecDeque::new()),
            kick: Notify::default(),
            closed: Cell::new(false),
            drained: Notify::default(),
            faults,
            stats: SpoolStats::default(),
        });
        glommio::spawn_local(commit::run(spool.clone())).detach();
        Ok(spool)
    }

    /// A new message id, unique in the spool.
    pub fn next_message_id(&self) -> u64 {
        let seq = self.message_seq.get();
        if seq == u32::MAX {
            self.message_prefix.set(self.ids.borrow_mut().take());
            self.message_seq.set(0);
        } else {
            self.message_seq.set(seq + 1);
        }
        (self.message_prefix.get() << 32) | self.message_seq.get() as u64
    }

    /// Appends a sealed record and returns once it is durable.
    pub async fn append(&self, record: Vec<u8>) -> Result<Placement, SpoolError> {
        if self.closed.get() {
            return Err(SpoolError::Closed);
        }
        debug_assert_eq!(record.len() % spool_format::RECORD_ALIGN, 0);
        let (done, wait) = oneshot::channel();
        self.requests.borrow_mut().push_back(Request {
            record,
            done: Some(done),
        });
        self.kick.notify();
        wait.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Appends sealed state records without waiting. They are written in
    /// order with the next round and made durable by the next sync of their
    /// segment; a round of nothing but such records is not synced. Losing
    /// one to a power cut repeats an attempt; it never loses a message.
    pub fn append_lazy(&self, records: Vec<u8>) {
        debug_assert_eq!(records.len() % spool_format::RECORD_ALIGN, 0);
        if self.closed.get() {
            return;
        }
        self.requests.borrow_mut().push_back(Request {
            record: records,
            done: None,
        });
        self.kick.notify();
    }

    /// Refuses new appends; the committer finishes what was queued, then
    /// ends. Returns once it has (or after `limit`).
    pub async fn close(&self, limit: std::time::Duration) {
        self.closed.set(true);
        self.kick.notify();
        futures_lite::future::or(self.drained.notified(), glommio::timer::sleep(limit)).await;
    }
}

#[cfg(test)]
mod tests;
