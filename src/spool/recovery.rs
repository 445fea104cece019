//! Recovery at start: read every segment, repair torn tails, report corrupt
//! records, and rebuild a handle for every message that still has
//! recipients to deliver.
//!
//! Runs once, before the cores start, with plain blocking I/O: nothing else
//! is running yet. It never deletes a segment that holds records; it hands
//! each segment's book to the core that wrote it, whose reclaimer decides,
//! and the spare files the last run kept to the cores to reuse.

use super::segment::{map_segment, parse_spare_file_name};
use super::{SegmentBook, Stored};
use crate::message::{MessageHandle, Recipient, Recipients, SegmentMap};
use spool_format::{
    parse_segment_file_name, Damage, FormatError, Layout, MessageView, RecordKind, ScanItem,
    Scanner, SegmentHeader, StateRecord, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
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
    /// Reclaimed segments' files a run kept to reuse, found again.
    pub spares: usize,
    pub truncated: Vec<PathBuf>,
    /// Message records found twice (a move forward cut short by a crash).
    pub duplicates: usize,
}

pub struct Recovered {
    /// One more than the largest segment id in the spool.
    pub next_segment_id: u64,
    /// Messages with recipients still to deliver; each lists only those.
    pub messages: Vec<MessageHandle>,
    /// Every segment's book, with the core that wrote it.
    pub books: Vec<(u32, SegmentBook)>,
    /// Spare files (`spare-<id>.spl`), with the id in their name: any core
    /// may reuse them, or remove them.
    pub spares: Vec<(u64, PathBuf)>,
    pub report: RecoveryReport,
}

/// What the scan found, before it is resolved into books and handles.
#[derive(Default)]
struct Scan {
    books: Vec<(u32, SegmentBook)>,
    /// Message records: book index, offset, id, decoded fields.
    messages: Vec<(usize, usize, u64, Found)>,
    /// State records: book index, offset, record length, message id.
    states: Vec<(usize, usize, usize, u64)>,
    /// What each state record says of its recipient: (message id,
    /// recipient, note).
    notes: Vec<(u64, u32, Note)>,
}

/// What a state record says of one recipient.
#[derive(Debug, Clone, Copy)]
enum Note {
    /// Delivered, bounced or expired.
    Final,
    /// Attempt number `.0` failed; the next is due at `.1` (ms).
    Attempt(u32, u64),
}

/// What recovery keeps of a message record while it scans: no addresses
/// (the engine reads those from the mapping), only counts and places.
struct Found {
    recipient_count: u32,
    record_len: usize,
    body_start: usize,
    body_len: usize,
}

/// The segments in `dir`, sorted by id.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, RecoveryError> {
    list_named(dir, parse_segment_file_name)
}

/// The spare files a run left (`spare-<id>.spl`: reclaimed segments kept
/// to be written over), sorted by id. Everything in them was moved forward
/// or finished before they were renamed.
fn find_spares(dir: &Path) -> Result<Vec<(u64, PathBuf)>, RecoveryError> {
    list_named(dir, parse_spare_file_name)
}

/// The files in `dir` whose names `parse` gives an id, sorted by id.
fn list_named(
    dir: &Path,
    parse: fn(&str) -> Option<u64>,
) -> Result<Vec<(u64, PathBuf)>, RecoveryError> {
    let io = |source| RecoveryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(id) = entry.file_name().to_str().and_then(parse) {
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
    let mut scan = Scan::default();
    for (id, path) in list_segments(dir)? {
        next_segment_id = next_segment_id.max(id + 1);
        let Some((header, map)) = open_segment(&path, id, &mut report)? else {
            continue;
        };
        report.segments += 1;
        scan.books
            .push((header.core, SegmentBook::new(Arc::new(map))));
        scan_segment(&mut scan, header.layout(), &mut report)?;
    }
    let spares = find_spares(dir)?;
    report.spares = spares.len();
    // A spare holds records of its own id's tag and older ones (and, if a
    // reuse was cut short, the header of a later id, but no record of it):
    // ids handed out from now on are above all of them.
    for (id, path) in &spares {
        let named = header_id(path).unwrap_or(0);
        next_segment_id = next_segment_id.max(id + 1).max(named + 1);
    }
    // Message ids take their prefix from the segment id space too: never
    // hand out a number below one already used for either.
    let max_prefix = scan.messages.iter().map(|m| m.2 >> 32).max().unwrap_or(0);
    let messages = resolve(&mut scan, &mut report);
    Ok(Recovered {
        next_segment_id: next_segment_id.max(max_prefix + 1),
        messages,
        books: scan.books,
        spares,
        report,
    })
}

/// Gives every message one [`Stored`] place (the first copy found: a
/// compaction cut short leaves two), enters messages and state records in
/// their segments' books, and returns handles for the unfinished, in the
/// order their records were found.
///
/// Records are matched by message id with sorted lists, not hash tables: at
/// a million queued messages, random probes into tables that size were
/// most of the time to ready.
fn resolve(scan: &mut Scan, report: &mut RecoveryReport) -> Vec<MessageHandle> {
    let messages = std::mem::take(&mut scan.messages);
    let mut notes = std::mem::take(&mut scan.notes);
    notes.sort_unstable_by_key(|&(id, recipient, _)| (id, recipient));
    let mut by_id: Vec<(u64, u32)> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.2, i as u32))
        .collect();
    // Stable: of two copies of one record, the one found first is kept.
    by_id.sort_by_key(|&(id, _)| id);
    // Per message in scan order: its place, if it is the copy kept.
    let mut kept: Vec<Option<Arc<Stored>>> = vec![None; messages.len()];
    let mut handles: Vec<Option<MessageHandle>> = vec![None; messages.len()];
    let mut stored_by_id: Vec<(u64, Arc<Stored>)> = Vec::with_capacity(messages.len());
    let mut cursor = 0;
    for &(id, i) in &by_id {
        if stored_by_id.last().is_some_and(|(last, _)| *last == id) {
            report.duplicates += 1;
            continue;
        }
        while notes.get(cursor).is_some_and(|n| n.0 < id) {
            cursor += 1;
        }
        let start = cursor;
        while notes.get(cursor).is_some_and(|n| n.0 == id) {
            cursor += 1;
        }
        let (_, _, _, found) = &messages[i as usize];
        let recipients = unfinished(found.recipient_count, &notes[start..cursor]);
        let stored = Stored::new(
            id,
            found.record_len,
            found.body_start,
            found.body_len,
            recipients.len() as u32,
        );
        report.pending_recipients += recipients.len();
        if !recipients.is_empty() {
            handles[i as usize] = Some(MessageHandle {
                id,
                stored: stored.clone(),
                recipients,
            });
        }
        kept[i as usize] = Some(stored.clone());
        stored_by_id.push((id, stored));
    }
    drop((notes, by_id));
    for ((book, offset, _, _), stored) in messages.iter().zip(kept) {
        if let Some(stored) = stored {
            let book = &mut scan.books[*book].1;
            stored.place(&book.map, *offset as u64);
            book.add_homed(stored);
        }
    }
    attach_states(scan, &stored_by_id);
    handles.into_iter().flatten().collect()
}

/// The recipients of a message with `count` recipients that no final state
/// record names, each with its latest attempt; `notes` are the message's
/// own, sorted by recipient.
fn unfinished(count: u32, notes: &[(u64, u32, Note)]) -> Recipients {
    let mut out = Recipients::new();
    let mut at = 0;
    for index in 0..count {
        let (mut finished, mut attempts, mut next_attempt_ms) = (false, 0, 0);
        while notes.get(at).is_some_and(|n| n.1 < index) {
            at += 1;
        }
        while let Some(&(_, r, note)) = notes.get(at).filter(|n| n.1 == index) {
            debug_assert_eq!(r, index);
            match note {
                Note::Final => finished = true,
                Note::Attempt(attempt, next_ms) if attempt >= attempts => {
                    (attempts, next_attempt_ms) = (attempt, next_ms);
                }
                Note::Attempt(..) => {}
            }
            at += 1;
        }
        if !finished {
            out.push(Recipient {
                index,
                attempts,
                next_attempt_ms,
            });
        }
    }
    out
}

/// Enters each state record in its segment's book, in the order found,
/// with the place of the message it names. A state record naming no
/// message is left over from a message whose segment was reclaimed: it
/// matters no more. `stored_by_id` is sorted by id.
fn attach_states(scan: &mut Scan, stored_by_id: &[(u64, Arc<Stored>)]) {
    let states = std::mem::take(&mut scan.states);
    let mut by_id: Vec<(u64, u32)> = states
        .iter()
        .enumerate()
        .map(|(i, s)| (s.3, i as u32))
        .collect();
    by_id.sort_unstable_by_key(|&(id, _)| id);
    let mut named: Vec<Option<Arc<Stored>>> = vec![None; states.len()];
    let mut cursor = 0;
    for (id, i) in by_id {
        while stored_by_id.get(cursor).is_some_and(|s| s.0 < id) {
            cursor += 1;
        }
        if let Some((_, stored)) = stored_by_id.get(cursor).filter(|s| s.0 == id) {
            named[i as usize] = Some(stored.clone());
        }
    }
    for ((book, offset, len, _), stored) in states.into_iter().zip(named) {
        if let Some(stored) = stored {
            scan.books[book].1.add_state(offset, len, stored);
        }
    }
}

/// Maps a segment and checks its header. A file whose header was never
/// written (a crash while the segment was being created) holds no records
/// and is removed.
fn open_segment(
    path: &Path,
    id: u64,
    report: &mut RecoveryReport,
) -> Result<Option<(SegmentHeader, SegmentMap)>, RecoveryError> {
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
    Ok(Some((header, map)))
}

/// The segment id a file's header names, if it has a readable header.
fn header_id(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut head = [0u8; SEGMENT_HEADER_BYTES];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    SegmentHeader::decode(&head).ok().map(|h| h.segment_id)
}

fn scan_segment(
    scan: &mut Scan,
    layout: Layout,
    report: &mut RecoveryReport,
) -> Result<(), RecoveryError> {
    let book = scan.books.len() - 1;
    let map = scan.books[book].1.map.clone();
    for item in Scanner::new(&map.map, layout) {
        match item {
            ScanItem::Record {
                offset,
                header,
                payload,
            } => {
                report.records += 1;
                let ok = if header.kind == RecordKind::Message {
                    MessageView::decode(payload).map(|view| {
                        report.messages += 1;
                        let found = found(&view, header.record_bytes());
                        scan.messages.push((book, offset, header.message_id, found));
                    })
                } else {
                    StateRecord::decode(header.kind, payload).map(|state| {
                        let id = header.message_id;
                        scan.states.push((book, offset, header.record_bytes(), id));
                        let note = match state {
                            _ if state.is_final() => Some(Note::Final),
                            StateRecord::Attempt {
                                attempt, next_ms, ..
                            } => Some(Note::Attempt(attempt, next_ms)),
                            _ => None,
                        };
                        if let Some(note) = note {
                            scan.notes.push((id, state.recipient(), note));
                        }
                    })
                };
                if ok.is_err() {
                    report.corrupt.push((
                        map.path.clone(),
                        Damage::Corrupt {
                            offset,
                            len: header.record_bytes(),
                        },
                    ));
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

fn found(view: &MessageView<'_>, record_len: usize) -> Found {
    Found {
        recipient_count: view.recipient_count,
        record_len,
        body_start: RECORD_HEADER_BYTES + view.body_offset,
        body_len: view.body.len(),
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
