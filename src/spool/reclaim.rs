//! Reclaiming disk: each core deletes its own closed segments once nothing
//! in them still matters, moving forward what does.
//!
//! A closed segment can go when
//! - every message homed in it is finished, or its record was moved (copied
//!   to this core's active segment and synced) because few live ones were
//!   left: "compaction"; and
//! - every state record in it that still matters was copied forward and
//!   synced. A state record matters while the record of the message it
//!   names exists somewhere (deleting it first would make recovery deliver
//!   that recipient again). State records of other cores' messages sit here
//!   too (a recipient's owner writes its outcome), so "exists" is read from
//!   the message's shared [`Stored`].
//!
//! Only then is the file unlinked, or renamed to a spare (kept to be written
//! over as a later segment, see `segment::Spare`), and the directory
//! synced, and only after that do other cores see it as deleted. A crash at
//! any step leaves a spool that recovers to the same state: at worst a
//! message record is in two segments (recovery keeps one) or a state record
//! is repeated.
//!
//! It must never delete the active segment, never delete before the copies
//! are durable, and never hold a mapping of a deleted segment past the last
//! reader, except a spare's, which the committer reuses once it is the
//! last.

use super::{segment, About, Spool, SpoolError, Stored, SPARES_MAX};
use crate::message::SegmentMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Most bytes of state records copied forward in one append.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// When and how hard to reclaim.
#[derive(Debug, Clone)]
pub struct Reclaim {
    /// How often the reclaimer looks at closed segments; `None`: only when
    /// asked ([`Spool::reclaim_now`]), as tests do.
    pub interval: Option<Duration>,
    /// Compact a closed segment once the records of its unfinished messages
    /// fill at most this percentage of it.
    pub compact_below_percent: u8,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimReport {
    pub deleted: usize,
    pub moved_messages: usize,
    pub copied_states: usize,
}

/// What one segment holds that still matters, kept by the core that writes
/// it. Rebuilt by recovery for segments found at start.
pub struct SegmentBook {
    pub map: Arc<SegmentMap>,
    /// Messages whose record was placed here (some may have moved since).
    homed: Vec<Arc<Stored>>,
    /// State records here: offset, length, and the message each names.
    states: Vec<(u32, u32, Arc<Stored>)>,
}

impl SegmentBook {
    pub fn new(map: Arc<SegmentMap>) -> SegmentBook {
        SegmentBook {
            map,
            homed: Vec::new(),
            states: Vec::new(),
        }
    }

    pub fn id(&self) -> u64 {
        self.map.segment_id
    }

    pub fn add_homed(&mut self, stored: Arc<Stored>) {
        self.homed.push(stored);
    }

    pub fn add_state(&mut self, offset: usize, len: usize, stored: Arc<Stored>) {
        self.states.push((offset as u32, len as u32, stored));
    }

    /// Worth a pass: nothing live, or little enough to move.
    fn reclaimable(&self, compact_below_percent: u8) -> bool {
        let life = &self.map.life;
        life.live() == 0
            || life.live_bytes() * 100
                <= self.map.map.len() as u64 * u64::from(compact_below_percent)
    }
}

/// Enters what a durable request's records are about in the book of the
/// segment they were written to, at `offset`.
pub(super) fn enter(book: &mut SegmentBook, offset: u64, record: &[u8], about: About) {
    match about {
        About::Nothing => {}
        About::Message(stored) => {
            stored.place(&book.map, offset);
            book.add_homed(stored);
        }
        About::States(messages) => {
            let mut at = 0;
            for stored in messages {
                let Ok((header, _)) = spool_format::decode_record(&record[at..]) else {
                    debug_assert!(false, "state records are sealed by this process");
                    return;
                };
                let len = header.record_bytes();
                book.add_state(offset as usize + at, len, stored);
                at += len;
            }
        }
    }
}

/// The tag of the records in a segment (0 for format version 1).
fn old_tag(map: &SegmentMap) -> u64 {
    match spool_format::SegmentHeader::decode(&map.map).map(|h| h.layout()) {
        Ok(spool_format::Layout::V2 { tag }) => tag,
        _ => 0,
    }
}

/// Takes a segment file out of the spool: renames it to `spare`, or else
/// unlinks it and returns it still open for writing, so that `release` can
/// free its blocks gradually (`None` if it could be unlinked but not
/// opened, or was renamed). Runs off the core's thread.
fn take_out(
    path: &std::path::Path,
    spare: Option<std::path::PathBuf>,
) -> std::io::Result<Option<std::fs::File>> {
    if let Some(to) = spare {
        return std::fs::rename(path, to).map(|()| None);
    }
    let held = std::fs::OpenOptions::new().write(true).open(path);
    std::fs::remove_file(path)?;
    Ok(held.ok())
}

/// The reclaimer task: a pass every `interval` until the spool closes.
pub(super) async fn run(spool: Rc<Spool>) {
    let Some(every) = spool.reclaim.interval else {
        return;
    };
    loop {
        glommio::timer::sleep(every).await;
        if spool.closed.get() {
            return;
        }
        spool.reclaim_now().await;
    }
}

impl Spool {
    /// One pass over this core's closed segments, oldest first.
    pub async fn reclaim_now(&self) -> ReclaimReport {
        let mut report = ReclaimReport::default();
        let percent = self.reclaim.compact_below_percent;
        let ready: Vec<u64> = self
            .books
            .borrow()
            .values()
            .filter(|b| Some(b.id()) != self.active.get() && b.reclaimable(percent))
            .map(|b| b.id())
            .collect();
        for id in ready {
            if self.closed.get() {
                break;
            }
            let Some(book) = self.books.borrow_mut().remove(&id) else {
                continue;
            };
            let path = book.map.path.clone();
            if let Err((book, e)) = self.empty_and_delete(book, &mut report).await {
                eprintln!(
                    "spate: core {}: cannot reclaim {}: {e}; will try again",
                    self.core,
                    path.display()
                );
                self.books.borrow_mut().insert(id, book);
                break;
            }
            report.deleted += 1;
        }
        report
    }

    /// Moves forward what still matters in `book`'s segment, then deletes
    /// it. On error the book comes back, to be tried again.
    async fn empty_and_delete(
        &self,
        book: SegmentBook,
        report: &mut ReclaimReport,
    ) -> Result<(), (SegmentBook, SpoolError)> {
        let id = book.id();
        if let Err(e) = self.move_messages(&book, report).await {
            return Err((book, e));
        }
        if let Err(e) = self.copy_states(&book, report).await {
            return Err((book, e));
        }
        let spare = self.wants_spare(book.map.map.len() as u64).then(|| {
            let name = segment::spare_file_name(id);
            (book.map.path.with_file_name(name), old_tag(&book.map))
        });
        let to = spare.as_ref().map(|(to, _)| to.clone());
        let path = book.map.path.clone();
        let held = match glommio::executor()
            .spawn_blocking(move || take_out(&path, to))
            .await
        {
            Ok(held) => held,
            // Gone already: an earlier pass unlinked or renamed it and then
            // failed to sync the directory.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err((book, SpoolError::from_io(&e))),
        };
        if let Err(e) = self.dir.sync().await {
            return Err((book, SpoolError::from_io(&e.into())));
        }
        book.map.life.mark_deleted();
        self.stats
            .segments_deleted
            .set(self.stats.segments_deleted.get() + 1);
        debug_assert!(self.active.get() != Some(id));
        let SegmentBook { map, .. } = book;
        if let Some((path, old_tag)) = spare {
            self.spares
                .borrow_mut()
                .push_back(segment::Spare { map, path, old_tag });
            return Ok(());
        }
        // The pages and blocks go once the last mapping does (usually this
        // one): that too happens off the core's thread.
        let to_free = glommio::executor()
            .spawn_blocking(move || segment::release(map, held))
            .await;
        if let Some((file, len)) = to_free {
            segment::free_paced(file, len).await;
        }
        Ok(())
    }

    /// Takes over spare files a run left (from recovery, with the id in
    /// their names), up to [`SPARES_MAX`]; a file of another size than
    /// this spool's segments, or one that cannot be mapped, is removed.
    pub fn adopt_spares(&self, found: Vec<(u64, std::path::PathBuf)>) {
        for (id, path) in found {
            let map = segment::map_segment(path.clone(), id);
            match map {
                Ok(map) if self.wants_spare(map.map.len() as u64) => {
                    self.spares.borrow_mut().push_back(segment::Spare {
                        map: Arc::new(map),
                        path,
                        old_tag: spool_format::tag_for(id),
                    });
                }
                _ => {
                    if let Err(e) = std::fs::remove_file(&path) {
                        eprintln!("spate: cannot remove {}: {e}", path.display());
                    }
                }
            }
        }
    }

    /// Whether a file of `file_bytes` should be kept as a spare rather than
    /// deleted: while this core keeps fewer than [`SPARES_MAX`] and the file
    /// has the size a new segment would have.
    fn wants_spare(&self, file_bytes: u64) -> bool {
        self.spares.borrow().len() < SPARES_MAX
            && file_bytes == self.segment_bytes
            && !self.closed.get()
    }

    /// Copies the records of messages homed here and still unfinished to
    /// the active segment, all in one round.
    async fn move_messages(
        &self,
        book: &SegmentBook,
        report: &mut ReclaimReport,
    ) -> Result<(), SpoolError> {
        let id = book.id();
        let waits: Vec<_> = book
            .homed
            .iter()
            .filter(|s| s.home_id() == Some(id))
            .filter_map(|s| {
                let mut record = s.record()?.to_vec();
                spool_format::unstamp(&mut record);
                Some(self.queue(record, About::Message(s.clone())))
            })
            .collect();
        for wait in waits {
            wait.await?;
            report.moved_messages += 1;
            self.stats
                .records_moved
                .set(self.stats.records_moved.get() + 1);
        }
        Ok(())
    }

    /// Copies the state records whose message's record lives on elsewhere.
    async fn copy_states(
        &self,
        book: &SegmentBook,
        report: &mut ReclaimReport,
    ) -> Result<(), SpoolError> {
        let id = book.id();
        let mut waits = Vec::new();
        let (mut buf, mut about) = (Vec::new(), Vec::new());
        for (offset, len, stored) in &book.states {
            if stored.home_id() == Some(id) || !stored.record_exists() {
                continue;
            }
            let (offset, len) = (*offset as usize, *len as usize);
            let at = buf.len();
            buf.extend_from_slice(&book.map.map[offset..offset + len]);
            spool_format::unstamp(&mut buf[at..]);
            about.push(stored.clone());
            if buf.len() >= COPY_CHUNK_BYTES {
                let chunk = std::mem::take(&mut buf);
                let names = std::mem::take(&mut about);
                report.copied_states += names.len();
                waits.push(self.queue(chunk, About::States(names)));
            }
        }
        if !buf.is_empty() {
            report.copied_states += about.len();
            waits.push(self.queue(buf, About::States(about)));
        }
        for wait in waits {
            wait.await?;
        }
        Ok(())
    }
}
