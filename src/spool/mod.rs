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
//! The spool never copies a record to read it: readers get slices of the
//! segment's shared read-only mapping. It copies a record only to move it
//! forward, when the reclaimer (`reclaim`) empties an old segment so it can
//! be deleted or its file reused for a later segment (format version 2).

mod commit;
mod faults;
mod reclaim;
pub mod recovery;
mod segment;
mod stored;

pub use faults::Faults;
pub use reclaim::{Reclaim, ReclaimReport, SegmentBook};
pub use segment::map_segment;
pub use stored::{Body, SegmentLife, Stored};

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

/// Most reclaimed segment files a core keeps to reuse. Two cover a spool of
/// steady size (one being prepared as the next segment while another waits
/// for its last reader); beyond that, reclaimed files are deleted, so that
/// the disk a peak took comes back.
pub const SPARES_MAX: usize = 2;

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
    /// What the record is about, for the segment's book.
    about: About,
}

/// The messages a request's records name, so that the committer can enter
/// them in the book of the segment they land in, in the same step that
/// writes them (no reclaim can run in between).
enum About {
    /// A record nobody tracks (tests, tools).
    Nothing,
    /// A `Message` record, first placed or moved forward.
    Message(Arc<Stored>),
    /// State records, one message each, in order.
    States(Vec<Arc<Stored>>),
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

/// Counters of one core's spool, for logs, metrics and tests.
pub struct SpoolStats {
    pub records: Cell<u64>,
    pub bytes: Cell<u64>,
    pub syncs: Cell<u64>,
    pub failed_syncs: Cell<u64>,
    pub segments: Cell<u64>,
    pub segments_deleted: Cell<u64>,
    /// Segments made of a reclaimed segment's file rather than a new one.
    pub segments_recycled: Cell<u64>,
    pub records_moved: Cell<u64>,
    /// Records made durable by each fdatasync (group commit).
    pub batch_records: crate::meter::Histogram,
    /// How long each fdatasync took.
    pub sync_seconds: crate::meter::Histogram,
}

impl Default for SpoolStats {
    fn default() -> SpoolStats {
        SpoolStats {
            records: Cell::default(),
            bytes: Cell::default(),
            syncs: Cell::default(),
            failed_syncs: Cell::default(),
            segments: Cell::default(),
            segments_deleted: Cell::default(),
            segments_recycled: Cell::default(),
            records_moved: Cell::default(),
            batch_records: crate::meter::Histogram::new(crate::meter::BATCH_BOUNDS),
            sync_seconds: crate::meter::Histogram::new(crate::meter::LATENCY_BOUNDS),
        }
    }
}

impl Spool {
    /// Segments this core holds now, and their bytes on disk.
    pub fn segments_held(&self) -> (usize, u64) {
        let n = self.books.borrow().len();
        (n, n as u64 * self.segment_bytes)
    }

    /// Reclaimed segment files kept to be reused (each `segment_bytes` on
    /// disk).
    pub fn spares_held(&self) -> usize {
        self.spares.borrow().len()
    }

    pub fn dir_path(&self) -> &std::path::Path {
        &self.dir_path
    }
}

/// How a core's spool is laid out and cleaned.
#[derive(Debug, Clone)]
pub struct Settings {
    pub segment_bytes: u64,
    pub reclaim: Reclaim,
}

impl Settings {
    /// Segments of `segment_bytes`, reclaimed only when asked (tests,
    /// benchmarks).
    pub fn manual(segment_bytes: u64) -> Settings {
        Settings {
            segment_bytes,
            reclaim: Reclaim {
                interval: None,
                compact_below_percent: 25,
            },
        }
    }
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
    /// This core's segments, by id: what each holds that still matters.
    books: RefCell<std::collections::BTreeMap<u64, SegmentBook>>,
    /// The segment the committer appends to now; never reclaimed.
    active: Cell<Option<u64>>,
    /// A segment made before it was needed ([`Spool::prepare`]), taken by
    /// the first roll.
    prepared: RefCell<Option<segment::ActiveSegment>>,
    /// Reclaimed segments' files kept to be written over as later segments
    /// (or left by the last run), oldest first; at most [`SPARES_MAX`].
    spares: RefCell<VecDeque<segment::Spare>>,
    /// The next segment, being prepared in the background.
    spare: RefCell<Option<glommio::task::JoinHandle<Result<segment::ActiveSegment, SpoolError>>>>,
    /// Bytes still free in the active segment, as of the last commit: the
    /// spare's zero-fill paces itself by it.
    active_room: Cell<u64>,
    reclaim: Reclaim,
    kick: Notify,
    closed: Cell<bool>,
    /// Notified when the committer has written everything and ended.
    drained: Notify,
    faults: Faults,
    pub stats: SpoolStats,
}

impl Spool {
    /// Opens this core's spool in `dir` (which must exist), taking over the
    /// books of the segments recovery gave this core, and starts its
    /// committer and reclaimer tasks on the current executor.
    pub async fn open(
        dir_path: PathBuf,
        settings: Settings,
        core: usize,
        mut ids: IdSpace,
        books: Vec<SegmentBook>,
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
            segment_bytes: settings.segment_bytes,
            ids: RefCell::new(ids),
            message_prefix: Cell::new(prefix),
            message_seq: Cell::new(0),
            requests: RefCell::new(VecDeque::new()),
            books: RefCell::new(books.into_iter().map(|b| (b.id(), b)).collect()),
            active: Cell::new(None),
            prepared: RefCell::new(None),
            spares: RefCell::new(VecDeque::new()),
            spare: RefCell::new(None),
            active_room: Cell::new(0),
            reclaim: settings.reclaim,
            kick: Notify::default(),
            closed: Cell::new(false),
            drained: Notify::default(),
            faults,
            stats: SpoolStats::default(),
        });
        glommio::spawn_local(commit::run(spool.clone())).detach();
        if spool.reclaim.interval.is_some() {
            glommio::spawn_local(reclaim::run(spool.clone())).detach();
        }
        Ok(spool)
    }

    /// Makes the segment the first appends will go to, so that they do not
    /// wait for its creation (preallocation, header, two syncs: a 64 MiB
    /// segment on tmpfs took 20 ms, on a filesystem that zeroes on
    /// preallocation more). The engine calls it before a core says it is
    /// ready. A failure is reported and left to the first append, which
    /// tries again and answers its appender with the error.
    pub async fn prepare(&self) {
        if self.prepared.borrow().is_some() || self.active.get().is_some() {
            return;
        }
        if let Ok(seg) = commit::create(self, false).await {
            *self.prepared.borrow_mut() = Some(seg);
        }
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

    /// Appends a sealed record nobody tracks and returns once it is durable.
    pub async fn append(&self, record: Vec<u8>) -> Result<Placement, SpoolError> {
        self.append_about(record, About::Nothing).await
    }

    /// Appends a sealed `Message` record and returns once it is durable; by
    /// then `stored` knows where it lives and counts towards its segment.
    pub async fn append_message(
        &self,
        record: Vec<u8>,
        stored: Arc<Stored>,
    ) -> Result<Placement, SpoolError> {
        self.append_about(record, About::Message(stored)).await
    }

    /// Appends sealed `Message` records, every one queued before any is
    /// awaited (so they share syncs); each one's result, in order.
    pub async fn append_messages(
        &self,
        batch: Vec<(Vec<u8>, Arc<Stored>)>,
    ) -> Vec<Result<Placement, SpoolError>> {
        let waits: Vec<_> = batch
            .into_iter()
            .map(|(record, stored)| self.queue(record, About::Message(stored)))
            .collect();
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(w.await);
        }
        out
    }

    async fn append_about(&self, record: Vec<u8>, about: About) -> Result<Placement, SpoolError> {
        self.queue(record, about).await
    }

    /// Queues a record for the next round; the returned future says how it
    /// fared. Queue several before awaiting any and they share one sync.
    fn queue(
        &self,
        record: Vec<u8>,
        about: About,
    ) -> impl std::future::Future<Output = Result<Placement, SpoolError>> {
        let wait = if self.closed.get() {
            None
        } else {
            debug_assert_eq!(record.len() % spool_format::RECORD_ALIGN, 0);
            let (done, wait) = oneshot::channel();
            self.requests.borrow_mut().push_back(Request {
                record,
                done: Some(done),
                about,
            });
            self.kick.notify();
            Some(wait)
        };
        async move {
            match wait {
                Some(wait) => wait.await.unwrap_or(Err(SpoolError::Closed)),
                None => Err(SpoolError::Closed),
            }
        }
    }

    /// Appends sealed state records without waiting, one for each message
    /// of `about`, in order. They are written with the next round and made
    /// durable by the next sync of their segment; a round of nothing but
    /// such records is not synced. Losing one to a power cut repeats an
    /// attempt; it never loses a message.
    pub fn append_lazy(&self, records: Vec<u8>, about: Vec<Arc<Stored>>) {
        debug_assert_eq!(records.len() % spool_format::RECORD_ALIGN, 0);
        if self.closed.get() {
            return;
        }
        self.requests.borrow_mut().push_back(Request {
            record: records,
            done: None,
            about: About::States(about),
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
mod lifecycle_tests;
#[cfg(test)]
mod tests;
