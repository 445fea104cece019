//! A durable message's place in the spool, shared by every core that holds
//! part of it: which segment holds its record now (compaction moves it), and
//! how many of its recipients are still unfinished.
//!
//! It is the one piece of spool state that cores share. Each core touches it
//! once per recipient it finishes and the home core once per move, under a
//! mutex held for a few instructions, never across an await. It must never
//! keep a segment's mapping alive once the message is finished: a deleted
//! segment's disk space comes back only when its last mapping is dropped.

use crate::message::SegmentMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the reclaimer needs to know of one segment, shared by the cores
/// whose messages or state records point at it.
#[derive(Debug)]
pub struct SegmentLife {
    pub id: u64,
    /// Messages homed here with recipients still unfinished.
    live: AtomicU64,
    /// Record bytes of those messages.
    live_bytes: AtomicU64,
    /// Set once the file is unlinked and the directory synced.
    deleted: AtomicBool,
}

impl SegmentLife {
    pub fn new(id: u64) -> SegmentLife {
        SegmentLife {
            id,
            live: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
        }
    }

    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Acquire)
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::Acquire)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(super) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    fn add(&self, bytes: u64) {
        self.live.fetch_add(1, Ordering::AcqRel);
        self.live_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    fn remove(&self, bytes: u64) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.live_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// A message record's place, and its unfinished recipients.
#[derive(Debug)]
pub struct Stored {
    pub id: u64,
    /// Record lengths are below a segment's size, which is below 4 GiB.
    record_len: u32,
    /// Where the body starts, counted from the start of the record.
    body_start: u32,
    body_len: u32,
    place: Mutex<Place>,
}

#[derive(Debug)]
struct Place {
    /// The segment holding the record; `None` until the committer placed it.
    home: Option<Arc<SegmentLife>>,
    /// Its mapping, while the message still has recipients to deliver.
    map: Option<Arc<SegmentMap>>,
    /// Below a segment's size, which is below 4 GiB.
    record_offset: u32,
    unfinished: u32,
}

/// A message body: a slice of a segment mapping that it keeps alive.
pub struct Body {
    map: Arc<SegmentMap>,
    start: usize,
    len: usize,
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map.map[self.start..self.start + self.len]
    }
}

impl Stored {
    /// A message about to be appended, with `recipients` unfinished.
    pub fn new(
        id: u64,
        record_len: usize,
        body_start: usize,
        body_len: usize,
        recipients: u32,
    ) -> Arc<Stored> {
        Arc::new(Stored {
            id,
            record_len: u32::try_from(record_len).expect("a record fits in a segment"),
            body_start: u32::try_from(body_start).expect("a record fits in a segment"),
            body_len: u32::try_from(body_len).expect("a record fits in a segment"),
            place: Mutex::new(Place {
                home: None,
                map: None,
                record_offset: 0,
                unfinished: recipients,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Place> {
        // A panic while holding this lock leaves counters that are at worst
        // too high: a segment kept, never one deleted too early.
        self.place.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records where the record now lives: its first placement, or a move by
    /// compaction. The live counts follow it.
    pub fn place(&self, map: &Arc<SegmentMap>, record_offset: u64) {
        let mut p = self.lock();
        if p.unfinished > 0 {
            if let Some(old) = &p.home {
                old.remove(self.record_len.into());
            }
            map.life.add(self.record_len.into());
            p.map = Some(map.clone());
        }
        p.home = Some(map.life.clone());
        p.record_offset = u32::try_from(record_offset).expect("segments are below 4 GiB");
    }

    /// Marks `n` recipients finished (a final state record was appended for
    /// each). The last one releases the segment and the mapping.
    pub fn finish(&self, n: u32) {
        let mut p = self.lock();
        if p.unfinished == 0 {
            return;
        }
        p.unfinished = p.unfinished.saturating_sub(n);
        if p.unfinished == 0 {
            if let Some(home) = &p.home {
                home.remove(self.record_len.into());
            }
            p.map = None;
        }
    }

    pub fn unfinished(&self) -> u32 {
        self.lock().unfinished
    }

    /// The body, while the message has recipients to deliver.
    pub fn body(&self) -> Option<Body> {
        let p = self.lock();
        let map = p.map.clone()?;
        let start = p.record_offset as usize + self.body_start as usize;
        Some(Body {
            map,
            start,
            len: self.body_len as usize,
        })
    }

    pub fn body_len(&self) -> usize {
        self.body_len as usize
    }

    /// The id of the segment holding the record.
    pub fn home_id(&self) -> Option<u64> {
        self.lock().home.as_ref().map(|h| h.id)
    }

    /// True while some segment still holds the record: state records that
    /// name it are needed until then.
    pub fn record_exists(&self) -> bool {
        self.lock().home.as_ref().is_some_and(|h| !h.is_deleted())
    }

    /// The record up to its body (header, envelope), while the message has
    /// recipients to deliver.
    pub fn envelope(&self) -> Option<crate::message::Envelope> {
        let p = self.lock();
        let map = p.map.clone()?;
        Some(crate::message::Envelope::new(Body {
            map,
            start: p.record_offset as usize,
            len: self.body_start as usize,
        }))
    }

    /// The whole record, for compaction: `None` once finished.
    pub fn record(&self) -> Option<Body> {
        let p = self.lock();
        let map = p.map.clone()?;
        Some(Body {
            map,
            start: p.record_offset as usize,
            len: self.record_len as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(id: u64) -> Arc<SegmentMap> {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &[7u8; 8192]).unwrap();
        // SAFETY: a private temporary file nobody else writes.
        let map = unsafe { memmap2::Mmap::map(&f).unwrap() };
        Arc::new(SegmentMap {
            segment_id: id,
            path: format!("/nonexistent/{id}").into(),
            map,
            life: Arc::new(SegmentLife::new(id)),
        })
    }

    #[test]
    fn live_counts_follow_the_record_and_end_with_the_last_recipient() {
        let (a, b) = (map(1), map(2));
        let s = Stored::new(9, 100, 40, 60, 2);
        s.place(&a, 4096);
        assert_eq!((a.life.live(), a.life.live_bytes()), (1, 100));
        assert_eq!(s.body().unwrap().len(), 60);
        s.place(&b, 8000 - 100);
        assert_eq!((a.life.live(), b.life.live()), (0, 1));
        assert_eq!(s.home_id(), Some(2));
        s.finish(1);
        assert_eq!(b.life.live(), 1);
        s.finish(1);
        assert_eq!((b.life.live(), b.life.live_bytes()), (0, 0));
        assert!(s.body().is_none(), "a finished message keeps no mapping");
        assert!(s.record_exists());
        b.life.mark_deleted();
        assert!(!s.record_exists());
        s.finish(1);
        assert_eq!(b.life.live(), 0, "finishing twice never goes below zero");
    }

    #[test]
    fn a_finished_message_moved_keeps_counts_at_zero() {
        let (a, b) = (map(1), map(2));
        let s = Stored::new(9, 100, 40, 60, 1);
        s.place(&a, 4096);
        s.finish(1);
        s.place(&b, 4096);
        assert_eq!((a.life.live(), b.life.live()), (0, 0));
        assert_eq!(s.home_id(), Some(2));
    }
}
