//! `spate spool verify` and `spate spool dump`: read a spool directory
//! offline (the engine should not be running on it) and report on it.
//! Neither ever writes to the spool.

use crate::spool::map_segment;
use crate::spool::recovery::list_segments;
use serde_json::json;
use spool_format::{
    Damage, MessageView, RecordKind, ScanItem, Scanner, SegmentHeader, StateRecord,
};
use std::io::Write;
use std::path::Path;

/// Totals of a verify run.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: usize,
    pub problems: Vec<String>,
}

/// Checks every segment header and every record. Problems are listed; the
/// caller exits 1 if there are any.
pub fn verify(dir: &Path) -> Result<VerifyReport, String> {
    let mut report = VerifyReport::default();
    for (id, path) in list_segments(dir).map_err(|e| e.to_string())? {
        let map = map_segment(path.clone(), id).map_err(|e| format!("{}: {e}", path.display()))?;
        report.segments += 1;
        let header = match SegmentHeader::decode(&map.map) {
            Err(e) => {
                report
                    .problems
                    .push(format!("{}: header: {e}", path.display()));
                continue;
            }
            Ok(h) => h,
        };
        if header.segment_bytes != map.map.len() as u64 {
            report.problems.push(format!(
                "{}: truncated to {} of {} bytes",
                path.display(),
                map.map.len(),
                header.segment_bytes
            ));
        }
        for item in Scanner::new(&map.map, header.layout()) {
            match item {
                ScanItem::Record {
                    offset,
                    header,
                    payload,
                } => {
                    report.records += 1;
                    let ok = match header.kind {
                        RecordKind::Message => MessageView::decode(payload).is_ok(),
                        kind => StateRecord::decode(kind, payload).is_ok(),
                    };
                    if !ok {
                        report.problems.push(format!(
                            "{}: offset {offset}: {} payload does not decode",
                            path.display(),
                            header.kind.name()
                        ));
                    }
                }
                ScanItem::Damage(Damage::Corrupt { offset, len }) => {
                    report.problems.push(format!(
                        "{}: offset {offset}: {len} corrupt bytes",
                        path.display()
                    ));
                }
                ScanItem::Damage(Damage::TornTail { offset, len }) => {
                    report.problems.push(format!(
                        "{}: offset {offset}: torn tail of {len} bytes",
                        path.display()
                    ));
                }
            }
        }
    }
    Ok(report)
}

/// Writes one JSON object per record (and per damaged range) to `out`.
pub fn dump(dir: &Path, out: &mut impl Write) -> Result<(), String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for (id, path) in list_segments(dir).map_err(|e| e.to_string())? {
        let map = map_segment(path.clone(), id).map_err(|e| format!("{}: {e}", path.display()))?;
        let seg = format!("{id:016x}");
        let header = match SegmentHeader::decode(&map.map) {
            Ok(h) => h,
            Err(e) => {
                writeln!(out, "{}", json!({"segment": seg, "error": e.to_string()}))
                    .map_err(|e| e.to_string())?;
                continue;
            }
        };
        for item in Scanner::new(&map.map, header.layout()) {
            let line = match item {
                ScanItem::Record {
                    offset,
                    header,
                    payload,
                } => {
                    let id = format!("{:016x}", header.message_id);
                    match header.kind {
                        RecordKind::Message => match MessageView::decode(payload) {
                            Ok(m) => json!({
                                "segment": seg, "offset": offset, "kind": "Message", "id": id,
                                "received_ms": m.received_ms, "flags": m.flags, "sender": text(m.sender),
                                "tenant": text(m.tenant), "campaign": text(m.campaign),
                                "recipients": m.recipients().map(text).collect::<Vec<_>>(), "body_bytes": m.body.len(),
                            }),
                            Err(e) => {
                                json!({"segment": seg, "offset": offset, "kind": "Message", "id": id, "error": e.to_string()})
                            }
                        },
                        kind => match StateRecord::decode(kind, payload) {
                            Ok(s) => state_json(&seg, offset, &id, &s),
                            Err(e) => {
                                json!({"segment": seg, "offset": offset, "kind": kind.name(), "id": id, "error": e.to_string()})
                            }
                        },
                    }
                }
                ScanItem::Damage(d) => json!({"segment": seg, "damage": format!("{d:?}")}),
            };
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn state_json(seg: &str, offset: usize, id: &str, s: &StateRecord<'_>) -> serde_json::Value {
    let mut v = json!({"segment": seg, "offset": offset, "kind": s.kind().name(), "id": id, "recipient": s.recipient()});
    match *s {
        StateRecord::Delivered { time_ms, .. } | StateRecord::Expired { time_ms, .. } => {
            v["time_ms"] = json!(time_ms)
        }
        StateRecord::Bounced {
            time_ms, reason, ..
        } => {
            v["time_ms"] = json!(time_ms);
            v["reason"] = json!(reason);
        }
        StateRecord::Attempt {
            time_ms,
            attempt,
            next_ms,
            reason,
            ..
        } => {
            v["time_ms"] = json!(time_ms);
            v["attempt"] = json!(attempt);
            v["next_ms"] = json!(next_ms);
            v["reason"] = json!(reason);
        }
    }
    v
}
