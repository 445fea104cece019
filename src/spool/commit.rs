//! The committer: one task per core that turns queued records into durable
//! ones, many per `fdatasync` (group commit). It stamps each record with the
//! tag of the segment it lands in and zeroes the record header after the
//! last one it writes, so that the segment's written part ends there even
//! over a recycled file's old bytes. It also rolls to the next segment,
//! which a background task prepares (a recycled spare, or a new file
//! zero-filled) once the active one is half full, and enters what each
//! durable record is about in its segment's book for the reclaimer.
//!
//! It must never answer `Ok` for a record before the sync that covers it has
//! returned success, and never write to a segment after a failed write or
//! sync on it.

use super::reclaim::{self, SegmentBook};
use super::segment::{self, write_all_at, ActiveSegment, Spare};
use super::{About, Placement, Request, Spool, SpoolError, BATCH_BYTES_MAX};
use crate::message::SegmentMap;
use spool_format::RECORD_HEADER_BYTES;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

pub(super) async fn run(spool: Rc<Spool>) {
    let mut active: Option<ActiveSegment> = None;
    loop {
        let batch = take_batch(&spool);
        if batch.is_empty() {
            if spool.closed.get() {
                spool.drained.notify();
                return;
            }
            spool.kick.notified().await;
            continue;
        }
        commit(&spool, &mut active, batch).await;
    }
}

fn take_batch(spool: &Spool) -> Vec<Request> {
    let mut queue = spool.requests.borrow_mut();
    let mut bytes = 0;
    let mut batch = Vec::new();
    while let Some(req) = queue.front() {
        if !batch.is_empty() && bytes + req.record.len() > BATCH_BYTES_MAX {
            break;
        }
        bytes += req.record.len();
        batch.push(queue.pop_front().unwrap());
    }
    batch
}

async fn commit(spool: &Rc<Spool>, active: &mut Option<ActiveSegment>, batch: Vec<Request>) {
    let mut buf = Vec::with_capacity(batch.iter().map(|r| r.record.len()).sum());
    let mut placed: Vec<(Request, u64)> = Vec::with_capacity(batch.len());
    for req in batch {
        let len = req.record.len() as u64;
        if active.as_ref().is_none_or(|a| a.room() < len) {
            flush(
                spool,
                active,
                std::mem::take(&mut buf),
                std::mem::take(&mut placed),
            )
            .await;
            match roll(spool).await {
                Ok(seg) if seg.room() < len => {
                    *active = Some(seg);
                    req.answer(Err(SpoolError::Io(format!(
                        "a {len}-byte record does not fit in a segment"
                    ))));
                    continue;
                }
                Ok(seg) => *active = Some(seg),
                Err(e) => {
                    *active = None;
                    spool.active.set(None);
                    req.answer(Err(e));
                    continue;
                }
            }
        }
        let seg = active.as_mut().expect("rolled above");
        placed.push((req, seg.tail));
        seg.tail += len;
        let at = buf.len();
        buf.extend_from_slice(&placed.last().unwrap().0.record);
        spool_format::stamp(&mut buf[at..], seg.tag);
    }
    flush(spool, active, buf, placed).await;
}

/// Writes `buf` where its first record was placed, syncs, and answers.
async fn flush(
    spool: &Rc<Spool>,
    active: &mut Option<ActiveSegment>,
    mut buf: Vec<u8>,
    placed: Vec<(Request, u64)>,
) {
    let Some(&(_, start)) = placed.first() else {
        return;
    };
    let seg = active
        .as_ref()
        .expect("records were placed in the active segment");
    let bytes = buf.len() as u64;
    if seg.tail + RECORD_HEADER_BYTES as u64 <= seg.segment_bytes {
        buf.resize(buf.len() + RECORD_HEADER_BYTES, 0); // the end mark
    }
    let needs_sync = placed.iter().any(|(req, _)| req.done.is_some());
    let result = async {
        write_all_at(&seg.file, buf, start).await?;
        if !needs_sync {
            return Ok(());
        }
        spool.faults.before_sync().await?;
        let began = std::time::Instant::now();
        seg.file.fdatasync().await.map_err(std::io::Error::from)?;
        spool.stats.sync_seconds.observe_duration(began.elapsed());
        spool.stats.batch_records.observe(placed.len() as f64);
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            spool.active_room.set(seg.room());
            prepare_spare(spool, seg);
            spool
                .stats
                .syncs
                .set(spool.stats.syncs.get() + u64::from(needs_sync));
            spool
                .stats
                .records
                .set(spool.stats.records.get() + placed.len() as u64);
            spool.stats.bytes.set(spool.stats.bytes.get() + bytes);
            let mut books = spool.books.borrow_mut();
            let book = books
                .get_mut(&seg.map.segment_id)
                .expect("the active segment has a book");
            for (mut req, offset) in placed {
                let about = std::mem::replace(&mut req.about, About::Nothing);
                reclaim::enter(book, offset, &req.record, about);
                req.answer(Ok(Placement {
                    segment: seg.map.clone(),
                    offset,
                }));
            }
        }
        Err(e) => {
            spool
                .stats
                .failed_syncs
                .set(spool.stats.failed_syncs.get() + 1);
            eprintln!(
                "spate: core {}: spool write/sync failed on {}: {e}; segment retired",
                spool.core,
                seg.map.path.display()
            );
            *active = None;
            spool.active.set(None);
            let err = SpoolError::from_io(&e);
            for (req, _) in placed {
                req.answer(Err(err.clone()));
            }
        }
    }
}

/// Makes the next segment active: the one made at start or the spare
/// prepared in the background if there is one (waiting for it if it is not
/// ready yet), else one created now, preallocated but not zero-filled, to
/// be quick.
async fn roll(spool: &Rc<Spool>) -> Result<ActiveSegment, SpoolError> {
    let prepared = spool.prepared.take();
    let ready = match prepared {
        Some(seg) => Some(Ok(seg)),
        None => {
            // Bound first: the borrow must not be held across the await.
            let spare = spool.spare.take();
            match spare {
                Some(task) => task.await,
                None => None,
            }
        }
    };
    let seg = match ready {
        Some(Ok(seg)) => seg,
        // No spare, or it failed (a full disk, say): try once more now, and
        // let the appenders hear why if that fails too.
        _ => create(spool, false).await?,
    };
    let id = seg.map.segment_id;
    spool.stats.segments.set(spool.stats.segments.get() + 1);
    spool
        .books
        .borrow_mut()
        .insert(id, SegmentBook::new(seg.map.clone()));
    spool.active.set(Some(id));
    Ok(seg)
}

/// Once the active segment is half full, starts preparing the next one in
/// the background (created, preallocated, zero-filled, synced), so that a
/// roll under load waits for none of that. A spool that never fills half a
/// segment (a test, a quiet day) never makes one.
fn prepare_spare(spool: &Rc<Spool>, active: &ActiveSegment) {
    let half_full = active.tail > active.segment_bytes / 2;
    if !half_full || spool.closed.get() || spool.spare.borrow().is_some() {
        return;
    }
    let next = spool.clone();
    let task = glommio::spawn_local(async move { create(&next, true).await }).detach();
    *spool.spare.borrow_mut() = Some(task);
}

/// The next segment: a recycled spare if one is free to be written over,
/// else a new file (zero-filled when `zero`, at the pace of the appends).
pub(super) async fn create(spool: &Spool, zero: bool) -> Result<ActiveSegment, SpoolError> {
    let id = spool.ids.borrow_mut().take();
    if let Some(seg) = recycle(spool, id).await {
        return Ok(seg);
    }
    let pace = zero.then_some(segment::Pace {
        active_room: &spool.active_room,
        hurry_below: spool.segment_bytes / 4,
    });
    segment::create(
        &spool.dir,
        &spool.dir_path,
        id,
        spool.core,
        spool.segment_bytes,
        pace,
    )
    .await
    .map_err(|e| {
        eprintln!(
            "spate: core {}: cannot create spool segment {id:016x}: {e}",
            spool.core
        );
        SpoolError::from_io(&e)
    })
}

/// Makes segment `id` of the first spare that nobody reads any more (its
/// mapping has no other holder) and whose records' tag differs from the
/// new one's. A spare that fails to become a segment is deleted.
async fn recycle(spool: &Spool, id: u64) -> Option<ActiveSegment> {
    let (old, path) = take_free_spare(spool, spool_format::tag_for(id))?;
    let made = segment::recycle(&spool.dir, &spool.dir_path, old, &path, id, spool.core).await;
    match made {
        Ok(seg) => {
            spool
                .stats
                .segments_recycled
                .set(spool.stats.segments_recycled.get() + 1);
            Some(seg)
        }
        Err(e) => {
            eprintln!(
                "spate: core {}: cannot reuse {} as segment {id:016x}: {e}; removing it",
                spool.core,
                path.display()
            );
            let _ = glommio::executor()
                .spawn_blocking(move || std::fs::remove_file(path))
                .await;
            None
        }
    }
}

/// Takes the first spare whose mapping has no other holder and whose tag is
/// not `tag`, with the mapping and the spare's path.
fn take_free_spare(spool: &Spool, tag: u64) -> Option<(SegmentMap, PathBuf)> {
    let mut spares = spool.spares.borrow_mut();
    let at = spares
        .iter()
        .position(|s| s.old_tag != tag && Arc::strong_count(&s.map) == 1)?;
    let Spare { map, path, old_tag } = spares.remove(at)?;
    match Arc::try_unwrap(map) {
        Ok(old) => Some((old, path)),
        Err(map) => {
            spares.push_back(Spare { map, path, old_tag });
            None
        }
    }
}
