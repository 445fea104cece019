//! Decodes the golden segments kept beside SPEC.md. They were written once by
//! `SPOOL_FORMAT_WRITE_GOLDEN=1 cargo test -p spool-format --test golden` and
//! are committed; a change that breaks them changes the format and needs a new
//! version.

use spool_format::*;
use std::path::PathBuf;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name)
}

/// The content the golden segment `v1-basic.spl` holds.
fn write_basic() -> Vec<u8> {
    let header = SegmentHeader {
        segment_id: 3,
        core: 1,
        segment_bytes: 65536,
        created_unix_secs: 1_764_000_000,
        version: 1,
    };
    let mut seg = vec![0u8; 65536];
    seg[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
    let records = basic_records();
    seg[RECORDS_OFFSET..RECORDS_OFFSET + records.len()].copy_from_slice(&records);
    seg
}

/// The records of `v1-basic.spl`: a message and two state records.
fn basic_records() -> Vec<u8> {
    let mut b = MessageBuilder::new(
        Vec::new(),
        1_764_000_000_123,
        FLAG_8BITMIME,
        b"sender@example.org",
        &[b"a@example.com", b"b@example.net"],
    );
    b.body_mut().extend_from_slice(
        b"Received: from x\r\nSubject: golden\r\n\r\n.leading dot was unstuffed\r\n",
    );
    let mut records = b.finish((3 << 32) | 1);
    let mut states = Vec::new();
    encode_state(
        &mut states,
        (3 << 32) | 1,
        &StateRecord::Delivered {
            recipient: 0,
            time_ms: 1_764_000_001_000,
        },
    );
    encode_state(
        &mut states,
        (3 << 32) | 1,
        &StateRecord::Attempt {
            recipient: 1,
            time_ms: 1_764_000_001_000,
            attempt: 1,
            next_ms: 1_764_000_301_000,
            reason: "451 4.7.1 try later",
        },
    );
    records.extend_from_slice(&states);
    records
}

/// The content of `v2-recycled.spl`: a version 2 segment (id and tag
/// 9 << 32 | 7) holding the basic records, written over a file whose
/// earlier use (tag 8 << 32 | 7: the same low 32 bits) left the same
/// records behind, repeated, 64 bytes further on.
fn write_recycled() -> Vec<u8> {
    let header = SegmentHeader::new((9 << 32) | 7, 0, 65536, 1_764_000_000);
    assert_eq!(header.layout(), Layout::V2 { tag: (9 << 32) | 7 });
    let mut seg = vec![0u8; 65536];
    seg[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
    let mut stale = basic_records();
    stamp(&mut stale, (8 << 32) | 7);
    let mut at = RECORDS_OFFSET + 64;
    while at + stale.len() <= 32768 {
        seg[at..at + stale.len()].copy_from_slice(&stale);
        at += stale.len();
    }
    let mut fresh = basic_records();
    stamp(&mut fresh, (9 << 32) | 7);
    let end = RECORDS_OFFSET + fresh.len();
    seg[RECORDS_OFFSET..end].copy_from_slice(&fresh);
    seg[end..end + RECORD_HEADER_BYTES].fill(0);
    seg
}

#[test]
fn basic_segment_decodes() {
    if std::env::var_os("SPOOL_FORMAT_WRITE_GOLDEN").is_some() {
        std::fs::write(golden("v1-basic.spl"), write_basic()).unwrap();
        std::fs::write(golden("v3-header.spl"), {
            let mut s = write_basic();
            s[8..12].copy_from_slice(&3u32.to_le_bytes());
            s
        })
        .unwrap();
        std::fs::write(golden("v2-recycled.spl"), write_recycled()).unwrap();
    }
    let seg = std::fs::read(golden("v1-basic.spl")).unwrap();
    let header = SegmentHeader::decode(&seg).unwrap();
    assert_eq!(
        (header.segment_id, header.core, header.segment_bytes),
        (3, 1, 65536)
    );
    let items: Vec<_> = Scanner::new(&seg, header.layout()).collect();
    assert_eq!(items.len(), 3);
    let ScanItem::Record {
        header: h,
        payload,
        offset,
    } = &items[0]
    else {
        panic!("{:?}", items[0])
    };
    assert_eq!(
        (*offset, h.kind, h.message_id),
        (RECORDS_OFFSET, RecordKind::Message, (3 << 32) | 1)
    );
    let m = MessageView::decode(payload).unwrap();
    assert_eq!(m.sender, b"sender@example.org");
    assert_eq!(
        m.recipients().collect::<Vec<_>>(),
        [&b"a@example.com"[..], b"b@example.net"]
    );
    assert_eq!(
        m.body,
        b"Received: from x\r\nSubject: golden\r\n\r\n.leading dot was unstuffed\r\n"
    );
    let ScanItem::Record {
        header: h, payload, ..
    } = &items[2]
    else {
        panic!()
    };
    assert_eq!(
        StateRecord::decode(h.kind, payload).unwrap(),
        StateRecord::Attempt {
            recipient: 1,
            time_ms: 1_764_000_001_000,
            attempt: 1,
            next_ms: 1_764_000_301_000,
            reason: "451 4.7.1 try later"
        }
    );
    assert_eq!(
        seg,
        write_basic(),
        "the encoder no longer writes the golden bytes"
    );
}

#[test]
fn newer_version_is_refused() {
    let seg = std::fs::read(golden("v3-header.spl")).unwrap();
    assert_eq!(
        SegmentHeader::decode(&seg),
        Err(FormatError::UnknownVersion(3))
    );
}

#[test]
fn recycled_segment_reads_only_its_own_records() {
    let seg = std::fs::read(golden("v2-recycled.spl")).unwrap();
    assert_eq!(
        seg,
        write_recycled(),
        "the encoder no longer writes the golden bytes"
    );
    let header = SegmentHeader::decode(&seg).unwrap();
    assert_eq!(header.layout(), Layout::V2 { tag: (9 << 32) | 7 });
    let mut scan = Scanner::new(&seg, header.layout());
    let kinds: Vec<_> = scan
        .by_ref()
        .map(|item| match item {
            ScanItem::Record { header, .. } => header.kind,
            ScanItem::Damage(d) => panic!("{d:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            RecordKind::Message,
            RecordKind::Delivered,
            RecordKind::Attempt
        ]
    );
    assert_eq!(scan.end(), RECORDS_OFFSET + basic_records().len());
    let v1 = std::fs::read(golden("v1-basic.spl")).unwrap();
    let mut unstamped = seg[RECORDS_OFFSET..scan.end()].to_vec();
    unstamp(&mut unstamped);
    assert_eq!(
        unstamped,
        v1[RECORDS_OFFSET..scan.end()],
        "the same records as version 1 once unstamped"
    );
}
