//! Recovery at start: read every segment, repair torn tails, report corrupt
//! records, and rebuild a handle for every message that still has
//! recipients to deliver.
//!
//! Runs once, before the cores start, with plain blocking I/O: nothing else
//! is running yet. It never deletes a segment that holds records.

use super::segment::map_segment;
use crate::message::{MessageHandle, Recipient, SegmentMap};
use spool_format::{
    parse_segment_file_name, Damage, FormatError, MessageView, RecordKind, ScanItem, Scanner,
    SegmentHeader, StateRecord, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {error}")]
    Format { path: PathBuf, error: FormatError },
}

/// What recovery found, for the start-up log.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: usize,
    pub messages: usize,
    pub pending_recipients: usize,
    pub torn_tails: Vec<(PathBuf, Damage)>,
    pub corrupt: Vec<(PathBuf, Damage)>,
    pub removed_empty: Vec<PathBuf>,
    pub truncated: Vec<PathBuf>,
}

pub struct Recovered {
    /// One more than the largest segment id in the spool.
    pub next_segment_id: u64,
    /// Messages with recipients still to deliver; each lists only those.
    pub messages: Vec<MessageHandle>,
    pub report: RecoveryReport,
}

/// The segments in `dir`, sorted by id.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, RecoveryError> {
    let io = |source| RecoveryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            out.push((id, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Recovers the spool in `dir`, creating the directory if it is missing.
pub fn recover(dir: &Path) -> Result<Recovered, RecoveryError> {
    std::fs::create_dir_all(dir).map_err(|source| RecoveryError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut report = RecoveryReport::default();
    let mut next_segment_id = 1;
    let mut found = Vec::new();
    let mut finished = HashSet::new();
    let mut attempts: HashMap<(u64, u32), (u32, u64)> = HashMap::new();
    for (id, path) in list_segments(dir)? {
        next_segment_id = next_segment_id.max(id + 1);
        let Some(map) = open_segment(&path, id, &mut report)? else {
            continue;
        };
        let map = Arc::new(map);
        report.segments += 1;
        scan_segment(&map, &mut found, &mut finished, &mut attempts, &mut report)?;
    }
    // Message ids take their prefix from the segment id space too: never
    // hand out a number below one already used for either.
    let max_prefix = messages_max_prefix(&found);
    let messages: Vec<MessageHandle> = found
        .into_iter()
        .filter_map(|mut m: MessageHandle| {
            m.recipients
                .retain(|r| !finished.contains(&(m.id, r.index)));
            for r in &mut m.recipients {
                if let Some(&(attempt, next_ms)) = attempts.get(&(m.id, r.index)) {
                    r.attempts = attempt;
                    r.next_attempt_ms = next_ms;
                }
            }
            report.pending_recipients += m.recipients.len();
            (!m.recipients.is_empty()).then_some(m)
        })
        .collect();
    Ok(Recovered {
        next_segment_id: next_segment_id.max(max_prefix + 1),
        messages,
        report,
    })
}

fn messages_max_prefix(messages: &[MessageHandle]) -> u64 {
    messages.iter().map(|m| m.id >> 32).max().unwrap_or(0)
}

/// Maps a segment and checks its header. A file whose header was never
/// written (a crash while the segment was being created) holds no records
/// and is removed.
fn open_segment(
    path: &Path,
    id: u64,
    report: &mut RecoveryReport,
) -> Result<Option<SegmentMap>, RecoveryError> {
    let map = map_segment(path.to_path_buf(), id).map_err(|source| RecoveryError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let head = &map.map[..SEGMENT_HEADER_BYTES.min(map.map.len())];
    if head.len() < SEGMENT_HEADER_BYTES || head.iter().all(|&b| b == 0) {
        std::fs::remove_file(path).map_err(|source| RecoveryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        report.removed_empty.push(path.to_path_buf());
        return Ok(None);
    }
    let header = SegmentHeader::decode(head).map_err(|error| RecoveryError::Format {
        path: path.to_path_buf(),
        error,
    })?;
    if header.segment_id != id {
        return Err(RecoveryError::Format {
            path: path.to_path_buf(),
            error: FormatError::Invalid("segment id in header (file renamed?)"),
        });
    }
    if header.segment_bytes != map.map.len() as u64 {
        eprintln!(
            "spate: {}: truncated to {} of {} bytes; reading the records that remain",
            path.display(),
            map.map.len(),
            header.segment_bytes
        );
        report.truncated.push(path.to_path_buf());
    }
    Ok(Some(map))
}

fn scan_segment(
    map: &Arc<SegmentMap>,
    found: &mut Vec<MessageHandle>,
    finished: &mut HashSet<(u64, u32)>,
    attempts: &mut HashMap<(u64, u32), (u32, u64)>,
    report: &mut RecoveryReport,
) -> Result<(), RecoveryError> {
    for item in Scanner::new(&map.map) {
        match item {
            ScanItem::Record {
                offset,
                header,
                payload,
            } => {
                report.records += 1;
                if header.kind == RecordKind::Message {
                    match MessageView::decode(payload) {
                        Ok(view) => {
                            report.messages += 1;
                            found.push(handle(map, offset, header.message_id, &view));
                        }
                        Err(_) => report.corrupt.push((
                            map.path.clone(),
                            Damage::Corrupt {
                                offset,
                                len: header.record_bytes(),
                            },
                        )),
                    }
                } else {
                    match StateRecord::decode(header.kind, payload) {
                        Ok(state) if state.is_final() => {
                            finished.insert((header.message_id, state.recipient()));
                        }
                        Ok(StateRecord::Attempt {
                            recipient,
                            attempt,
                            next_ms,
                            ..
                        }) => {
                            let seen = attempts.entry((header.message_id, recipient)).or_default();
                            if attempt >= seen.0 {
                                *seen = (attempt, next_ms);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => report.corrupt.push((
                            map.path.clone(),
                            Damage::Corrupt {
                                offset,
                                len: header.record_bytes(),
                            },
                        )),
                    }
                }
            }
            ScanItem::Damage(d @ Damage::Corrupt { offset, len }) => {
                eprintln!(
                    "spate: {}: corrupt record at offset {offset} ({len} bytes) skipped",
                    map.path.display()
                );
                report.corrupt.push((map.path.clone(), d));
            }
            ScanItem::Damage(d @ Damage::TornTail { offset, len }) => {
                cut_torn_tail(&map.path, offset, len)?;
                report.torn_tails.push((map.path.clone(), d));
            }
        }
    }
    Ok(())
}

fn handle(map: &Arc<SegmentMap>, offset: usize, id: u64, view: &MessageView<'_>) -> MessageHandle {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    MessageHandle {
        id,
        received_ms: view.received_ms,
        flags: view.flags,
        segment: map.clone(),
        body_offset: offset + RECORD_HEADER_BYTES + view.body_offset,
        body_len: view.body.len(),
        sender: text(view.sender).into(),
        recipients: view
            .recipients()
            .enumerate()
            .map(|(i, r)| Recipient {
                index: i as u32,
                address: text(r).into(),
                attempts: 0,
                next_attempt_ms: 0,
            })
            .collect(),
    }
}

/// Zeroes a torn tail so the segment reads clean from now on.
fn cut_torn_tail(path: &Path, offset: usize, len: usize) -> Result<(), RecoveryError> {
    let io = |source| RecoveryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    file.write_all_at(&vec![0u8; len], offset as u64)
        .map_err(io)?;
    file.sync_data().map_err(io)?;
    eprintln!(
        "spate: {}: torn tail of {len} bytes at offset {offset} cut off",
        path.display()
    );
    Ok(())
}
