//! The committer: one task per core that turns queued records into durable
//! ones, many per `fdatasync` (group commit).
//!
//! It must never answer `Ok` for a record before the sync that covers it has
//! returned success, and never write to a segment after a failed write or
//! sync on it.

use super::reclaim::{self, SegmentBook};
use super::segment::{self, write_all_at, ActiveSegment};
use super::{About, Placement, Request, Spool, SpoolError, BATCH_BYTES_MAX};
use std::rc::Rc;

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

async fn commit(spool: &Spool, active: &mut Option<ActiveSegment>, batch: Vec<Request>) {
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
        buf.extend_from_slice(&placed.last().unwrap().0.record);
    }
    flush(spool, active, buf, placed).await;
}

/// Writes `buf` where its first record was placed, syncs, and answers.
async fn flush(
    spool: &Spool,
    active: &mut Option<ActiveSegment>,
    buf: Vec<u8>,
    placed: Vec<(Request, u64)>,
) {
    let Some(&(_, start)) = placed.first() else {
        return;
    };
    let seg = active
        .as_ref()
        .expect("records were placed in the active segment");
    let bytes = buf.len() as u64;
    let needs_sync = placed.iter().any(|(req, _)| req.done.is_some());
    let result = async {
        write_all_at(&seg.file, buf, start).await?;
        if !needs_sync {
            return Ok(());
        }
        spool.faults.before_sync().await?;
        seg.file.fdatasync().await.map_err(std::io::Error::from)
    }
    .await;
    match result {
        Ok(()) => {
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

async fn roll(spool: &Spool) -> Result<ActiveSegment, SpoolError> {
    let id = spool.ids.borrow_mut().take();
    let seg = segment::create(
        &spool.dir,
        &spool.dir_path,
        id,
        spool.core,
        spool.segment_bytes,
    )
    .await
    .map_err(|e| {
        eprintln!(
            "spate: core {}: cannot create spool segment {id:016x}: {e}",
            spool.core
        );
        SpoolError::from_io(&e)
    })?;
    spool.stats.segments.set(spool.stats.segments.get() + 1);
    spool
        .books
        .borrow_mut()
        .insert(id, SegmentBook::new(seg.map.clone()));
    spool.active.set(Some(id));
    Ok(seg)
}
