//! Creating, recycling and mapping segment files. The only place that maps
//! a file.

use super::stored::SegmentLife;
use crate::message::SegmentMap;
use glommio::io::{BufferedFile, Directory, OpenOptions};
use memmap2::Mmap;
use spool_format::{
    segment_file_name, tag_for, SegmentHeader, RECORDS_OFFSET, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A segment this core appends to.
pub struct ActiveSegment {
    pub file: BufferedFile,
    pub map: Arc<SegmentMap>,
    /// Where the next record goes.
    pub tail: u64,
    pub segment_bytes: u64,
    /// The tag every record written here carries (format version 2).
    pub tag: u64,
}

impl ActiveSegment {
    pub fn room(&self) -> u64 {
        self.segment_bytes - self.tail
    }
}

/// How a spare segment's zero-fill shares the disk with the appends to the
/// active segment: after each chunk it pauses as long as the chunk took
/// (half the disk's time, at most, goes to zeros), until the active segment
/// has less than `hurry_below` bytes free; then it writes at full speed, so
/// that the roll does not wait for it.
pub struct Pace<'a> {
    pub active_room: &'a Cell<u64>,
    pub hurry_below: u64,
}

/// Creates, preallocates (with a `pace`, also zero-fills) and maps a new
/// segment, then makes its directory entry durable. On failure nothing is
/// left behind.
pub async fn create(
    dir: &Directory,
    dir_path: &Path,
    segment_id: u64,
    core: u32,
    segment_bytes: u64,
    zero: Option<Pace<'_>>,
) -> io::Result<ActiveSegment> {
    let path = dir_path.join(segment_file_name(segment_id));
    match create_at(dir, &path, segment_id, core, segment_bytes, zero).await {
        Ok(seg) => Ok(seg),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

async fn create_at(
    dir: &Directory,
    path: &Path,
    segment_id: u64,
    core: u32,
    segment_bytes: u64,
    zero: Option<Pace<'_>>,
) -> io::Result<ActiveSegment> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .buffered_open(path)
        .await?;
    // Preallocate the whole segment before it is mapped or appended to: no
    // later write can hit ENOSPC and no read through the mapping can SIGBUS.
    // A spare is allocated as it is zero-filled, a MiB at a time.
    match zero {
        Some(pace) => zero_fill(&file, segment_bytes, pace).await?,
        None => file.pre_allocate(segment_bytes, false).await?,
    }
    let header = SegmentHeader::new(segment_id, core, segment_bytes, now_secs());
    write_all_at(&file, header_block(&header), 0).await?;
    file.fdatasync().await?;
    dir.sync().await?;
    let map = Arc::new(map_segment(path.to_path_buf(), segment_id)?);
    Ok(ActiveSegment {
        file,
        map,
        tail: RECORDS_OFFSET as u64,
        segment_bytes,
        tag: tag_for(segment_id),
    })
}

/// A segment's first bytes: its header, zeros up to the records, and a
/// zeroed first record header, which marks the end of the (empty) written
/// part over whatever a recycled file held before.
fn header_block(header: &SegmentHeader) -> Vec<u8> {
    let mut block = vec![0u8; RECORDS_OFFSET + RECORD_HEADER_BYTES];
    block[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
    block
}

/// A reclaimed segment's file, renamed out of the spool's segments
/// (`spare-<old id>.spl`) and kept, mapped, to be written over as a later
/// segment: neither zero-filling a new file nor freeing the old one's
/// blocks then happens while the spool runs, and both slowed the syncs of
/// the appends beside them (`perf/results/2026-12-04-tail.md`, section 5).
pub struct Spare {
    pub map: Arc<SegmentMap>,
    pub path: PathBuf,
    /// The tag its records carry (0: format version 1).
    pub old_tag: u64,
}

/// The name a reclaimed segment's file takes while it waits to be reused.
/// Nothing in such a file matters any more; recovery hands the ones a run
/// left to the next run.
pub fn spare_file_name(old_id: u64) -> String {
    format!("spare-{old_id:016x}.spl")
}

/// The id a spare file's name holds, or `None` if it is no spare.
pub fn parse_spare_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("spare-")?.strip_suffix(".spl")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
}

/// Turns the spare at `spare_path`, mapped by `old`, into a new segment
/// `segment_id`. The header, with a zeroed first record header after it,
/// is written and synced while the file still has its spare name; only then
/// is it renamed and the directory synced. So a crash leaves either a spare
/// or an empty segment. The mapping is kept: it is the same file.
///
/// `old` must have been the last reference to the mapping (no reader can
/// see its bytes change), and the tag of its records must differ from the
/// new segment's.
pub async fn recycle(
    dir: &Directory,
    dir_path: &Path,
    old: SegmentMap,
    spare_path: &Path,
    segment_id: u64,
    core: u32,
) -> io::Result<ActiveSegment> {
    let header = SegmentHeader::new(segment_id, core, old.map.len() as u64, now_secs());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .buffered_open(spare_path)
        .await?;
    write_all_at(&file, header_block(&header), 0).await?;
    file.fdatasync().await?;
    let path = dir_path.join(segment_file_name(segment_id));
    let (from, to) = (spare_path.to_path_buf(), path.clone());
    glommio::executor()
        .spawn_blocking(move || std::fs::rename(from, to))
        .await?;
    dir.sync().await?;
    let map = Arc::new(SegmentMap {
        segment_id,
        path,
        map: old.map,
        life: Arc::new(SegmentLife::new(segment_id)),
    });
    Ok(ActiveSegment {
        file,
        map,
        tail: RECORDS_OFFSET as u64,
        segment_bytes: header.segment_bytes,
        tag: tag_for(segment_id),
    })
}

/// Writes zeros over the records area. On ext4 and XFS a preallocated range
/// stays "unwritten" until written, and the first write into it changes
/// extent metadata, so each fdatasync after such a write also commits the
/// journal. Zeros written once, off the commit path, leave the appends'
/// syncs with data alone: at 3,500 msgs/s this halved the median final-dot
/// latency (`perf/results/2026-11-28-latency-experiments.md`).
///
/// Each chunk is allocated, written and synced before the next, and the
/// fill pauses as `pace` says. Written in one burst and synced at the end,
/// the 64 MiB of a segment held the appends' syncs behind them, and the
/// final-dot p99.9 at 3,000 msgs/s was 23 ms instead of 11; allocated in
/// one call, a spare on tmpfs (which zeroes pages as it allocates them)
/// held the active segment's next write for 15-18 ms
/// (`perf/results/2026-12-04-engine-round-2.md`, `2026-12-04-tail.md`).
async fn zero_fill(file: &BufferedFile, segment_bytes: u64, pace: Pace<'_>) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut pos = RECORDS_OFFSET as u64;
    while pos < segment_bytes {
        let started = Instant::now();
        let len = CHUNK.min(segment_bytes - pos) as usize;
        file.pre_allocate(pos + len as u64, false).await?;
        write_all_at(file, vec![0u8; len], pos).await?;
        file.fdatasync().await?;
        pos += len as u64;
        if pace.active_room.get() >= pace.hurry_below {
            glommio::timer::sleep(started.elapsed()).await;
        }
    }
    Ok(())
}

/// Writes all of `buf` at `pos`. A short write is an error: the segment
/// is preallocated, so one only happens when the device is failing, and the
/// records in it are then not acknowledged.
pub async fn write_all_at(file: &BufferedFile, buf: Vec<u8>, pos: u64) -> io::Result<()> {
    let len = buf.len();
    let n = file.write_at(buf, pos).await.map_err(io::Error::from)?;
    if n != len {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {n} of {len} bytes"),
        ));
    }
    Ok(())
}

/// Maps a whole segment file read-only.
pub fn map_segment(path: PathBuf, segment_id: u64) -> io::Result<SegmentMap> {
    let file = std::fs::File::open(&path)?;
    // SAFETY: spate owns the spool directory. A segment's bytes are only ever
    // written through this process's own appends, each to a range no reader
    // has been handed yet (readers get slices of durable records only); a
    // recycled file is written over only once its mapping has no other
    // holder (`recycle`); and segment files are preallocated to their full
    // mapped length, so the mapping is never truncated under a reader.
    let map = unsafe { Mmap::map(&file)? };
    Ok(SegmentMap {
        segment_id,
        path,
        map,
        life: Arc::new(SegmentLife::new(segment_id)),
    })
}

/// Drops a deleted segment's mapping, given `file`, the unlinked segment
/// held open, and hands the file back with the length to free when the
/// mapping was the last reference (see [`free_paced`]).
///
/// When this is the last reference, the pages are let go a MiB at a time
/// first: `MADV_DONTNEED` takes the address space's lock shared, so the
/// cores' page faults go on meanwhile, and the final `munmap`, which takes
/// it exclusively, finds nothing left to tear down. Unmapped at once, 64 MiB
/// of mapped pages held that lock for 6 ms, and every core that touched any
/// mapping waited (`perf/results/2026-12-04-engine-round-2.md`). Runs off
/// the cores.
pub fn release(map: Arc<SegmentMap>, file: Option<std::fs::File>) -> Option<(std::fs::File, u64)> {
    let Ok(segment) = Arc::try_unwrap(map) else {
        return None; // another holder drops it later, and the blocks go then
    };
    let len = segment.map.len();
    for offset in (0..len).step_by(FREE_STEP as usize) {
        // SAFETY: this is the only reference to the mapping, and its file
        // is unlinked: no reader is left to see the pages go (they would
        // read back from the file anyway: it is a shared file mapping).
        let _ = unsafe {
            segment.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                offset,
                (FREE_STEP as usize).min(len - offset),
            )
        };
    }
    file.map(|file| (file, len as u64))
}

/// How much of a deleted segment is let go at a time.
const FREE_STEP: u64 = 1 << 20;

/// Frees the blocks of an unlinked segment a MiB at a time, by punching
/// holes from the end, each step on the core's blocking thread, pausing as
/// long as it took. Freed at once when the last reference went, 64 MiB on
/// an ext4 mounted with `discard` became one large discard, and every
/// core's next fdatasync waited 25-60 ms behind it
/// (`perf/results/2026-12-04-tail.md`). A filesystem that cannot punch
/// holes frees the rest when the file is closed.
pub async fn free_paced(mut file: std::fs::File, len: u64) {
    let mut end = len;
    while end > 0 {
        let started = Instant::now();
        let start = end.saturating_sub(FREE_STEP);
        let (back, punched) = glommio::executor()
            .spawn_blocking(move || {
                let punched = punch_hole(&file, start, end - start);
                (file, punched)
            })
            .await;
        if !punched {
            return;
        }
        file = back;
        end = start;
        glommio::timer::sleep(started.elapsed()).await;
    }
}

pub(super) fn punch_hole(file: &std::fs::File, start: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a descriptor `file` holds open; the file is
    // unlinked and no mapping of it is left.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            start as i64,
            len as i64,
        )
    };
    rc == 0
}

fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}
