//! Creating and mapping segment files. The only place that maps a file.

use super::stored::SegmentLife;
use crate::message::SegmentMap;
use glommio::io::{BufferedFile, Directory, OpenOptions};
use memmap2::Mmap;
use spool_format::{segment_file_name, SegmentHeader, RECORDS_OFFSET, SEGMENT_HEADER_BYTES};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment this core appends to.
pub struct ActiveSegment {
    pub file: BufferedFile,
    pub map: Arc<SegmentMap>,
    /// Where the next record goes.
    pub tail: u64,
    pub segment_bytes: u64,
}

impl ActiveSegment {
    pub fn room(&self) -> u64 {
        self.segment_bytes - self.tail
    }
}

/// Creates, preallocates (with `zero`, also zero-fills) and maps a new
/// segment, then makes its directory entry durable. On failure nothing is
/// left behind.
pub async fn create(
    dir: &Directory,
    dir_path: &Path,
    segment_id: u64,
    core: u32,
    segment_bytes: u64,
    zero: bool,
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
    zero: bool,
) -> io::Result<ActiveSegment> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .buffered_open(path)
        .await?;
    // Preallocate the whole segment: no later write can hit ENOSPC and no
    // read through the mapping can SIGBUS.
    file.pre_allocate(segment_bytes, false).await?;
    if zero {
        zero_fill(&file, segment_bytes).await?;
    }
    let header = SegmentHeader {
        segment_id,
        core,
        segment_bytes,
        created_unix_secs: now_secs(),
    };
    let mut block = vec![0u8; RECORDS_OFFSET];
    block[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
    write_all_at(&file, block, 0).await?;
    file.fdatasync().await?;
    dir.sync().await?;
    let map = Arc::new(map_segment(path.to_path_buf(), segment_id)?);
    Ok(ActiveSegment {
        file,
        map,
        tail: RECORDS_OFFSET as u64,
        segment_bytes,
    })
}

/// Writes zeros over the records area. On ext4 and XFS a preallocated range
/// stays "unwritten" until written, and the first write into it changes
/// extent metadata, so each fdatasync after such a write also commits the
/// journal. Zeros written once, off the commit path, leave the appends'
/// syncs with data alone: at 3,500 msgs/s this halved the median final-dot
/// latency (`perf/results/2026-11-28-latency-experiments.md`).
async fn zero_fill(file: &BufferedFile, segment_bytes: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut pos = RECORDS_OFFSET as u64;
    while pos < segment_bytes {
        let len = CHUNK.min(segment_bytes - pos) as usize;
        write_all_at(file, vec![0u8; len], pos).await?;
        pos += len as u64;
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
    // has been handed yet (readers get slices of durable records only), and
    // segment files are preallocated to their full mapped length, so the
    // mapping is never truncated under a reader.
    let map = unsafe { Mmap::map(&file)? };
    Ok(SegmentMap {
        segment_id,
        path,
        map,
        life: Arc::new(SegmentLife::new(segment_id)),
    })
}

fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}
