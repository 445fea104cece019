//! The walk over one segment's records, telling good records from damage.
//!
//! The rules are SPEC.md's "Durability and recovery": a bad record followed by
//! a good one is corruption (reported, skipped, the rest kept); a bad record
//! followed by nothing good is a torn tail. In version 2 "good" means of
//! this segment's tag: records left from an earlier use of a recycled file
//! count as damage, never as records.

use crate::{
    decode_record_in, FormatError, Layout, RecordHeader, RecordKind, RECORDS_OFFSET, RECORD_ALIGN,
    RECORD_HEADER_BYTES,
};

/// Bytes that could not be read as records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Unreadable bytes with good records after them.
    Corrupt { offset: usize, len: usize },
    /// Unreadable bytes at the end of the written part: a cut-short write.
    /// In version 2, `len` is the 24 bytes of record header whose zeroing
    /// ends the written part: what lies past them may be records of the
    /// file's earlier use, which a reader skips but must not erase.
    TornTail { offset: usize, len: usize },
}

/// One step of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanItem<'a> {
    Record {
        offset: usize,
        header: RecordHeader,
        payload: &'a [u8],
    },
    Damage(Damage),
}

/// Iterates the records of a segment, given all of its bytes.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    layout: Layout,
    pos: usize,
    done: bool,
}

impl<'a> Scanner<'a> {
    /// Scans `bytes`, a whole segment whose header the caller has checked
    /// and which gave `layout`.
    pub fn new(bytes: &'a [u8], layout: Layout) -> Scanner<'a> {
        Scanner {
            bytes,
            layout,
            pos: RECORDS_OFFSET,
            done: false,
        }
    }

    /// Where the written part ends, once the scan has finished: the offset at
    /// which the next record would go.
    pub fn end(&self) -> usize {
        self.pos
    }

    fn is_zero_header(&self, at: usize) -> bool {
        match self.bytes.get(at..at + RECORD_HEADER_BYTES) {
            Some(h) => h.iter().all(|&b| b == 0),
            None => true,
        }
    }

    fn decodes_at(&self, at: usize) -> bool {
        at <= self.bytes.len() && decode_record_in(&self.bytes[at..], self.layout).is_ok()
    }

    /// After a failed decode at `self.pos`: where the next good record is, or
    /// `Err(end)` with the end of the unreadable bytes if none follows.
    ///
    /// The search runs to the end of the segment: a run of zeros inside a
    /// damaged record (a body may hold NULs) must not hide the records after
    /// it. It only happens on damage, so its cost (one cheap header check per
    /// 8 bytes) does not touch the normal path.
    fn resync(&self) -> Result<usize, usize> {
        if let Some(next) = self.skip_by_length() {
            if self.decodes_at(next) {
                return Ok(next);
            }
        }
        let mut at = self.pos + RECORD_ALIGN;
        let mut last_nonzero = self.pos + RECORD_ALIGN;
        while at + RECORD_HEADER_BYTES <= self.bytes.len() {
            if !self.is_zero_header(at) {
                if self.decodes_at(at) {
                    return Ok(at);
                }
                last_nonzero = at + RECORD_ALIGN;
            }
            at += RECORD_ALIGN;
        }
        Err(last_nonzero.min(self.bytes.len()))
    }

    /// The end of the record at `self.pos` going by its length field, if its
    /// header is plausible and the length stays inside the segment.
    fn skip_by_length(&self) -> Option<usize> {
        let head = &self.bytes[self.pos..self.pos + RECORD_HEADER_BYTES];
        RecordKind::from_u8(head[4])?;
        let len = u32::from_le_bytes(head[8..12].try_into().unwrap()) as usize;
        let next = self.pos + crate::align_up(RECORD_HEADER_BYTES + len);
        (next + RECORD_HEADER_BYTES <= self.bytes.len()).then_some(next)
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = ScanItem<'a>;

    fn next(&mut self) -> Option<ScanItem<'a>> {
        if self.done || self.is_zero_header(self.pos) {
            self.done = true;
            return None;
        }
        match decode_record_in(&self.bytes[self.pos..], self.layout) {
            Ok((header, payload)) => {
                let offset = self.pos;
                self.pos += header.record_bytes();
                Some(ScanItem::Record {
                    offset,
                    header,
                    payload,
                })
            }
            Err(FormatError::UnknownVersion(_) | FormatError::BadMagic) => {
                unreachable!("records carry no version")
            }
            Err(_) => {
                let offset = self.pos;
                match self.resync() {
                    Ok(next) => {
                        self.pos = next;
                        Some(ScanItem::Damage(Damage::Corrupt {
                            offset,
                            len: next - offset,
                        }))
                    }
                    Err(end) => {
                        self.done = true;
                        let len = match self.layout {
                            Layout::V1 => end - offset,
                            Layout::V2 { .. } => RECORD_HEADER_BYTES.min(self.bytes.len() - offset),
                        };
                        Some(ScanItem::Damage(Damage::TornTail { offset, len }))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_state, MessageBuilder, StateRecord};

    fn segment_with(records: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut seg = vec![0u8; RECORDS_OFFSET];
        let mut offsets = Vec::new();
        for r in records {
            offsets.push(seg.len());
            seg.extend_from_slice(r);
        }
        seg.resize(seg.len() + 4096, 0);
        (seg, offsets)
    }

    fn msg(id: u64) -> Vec<u8> {
        let mut b = MessageBuilder::new(Vec::new(), 1, 0, b"s@a", &[b"r@b"]);
        b.body_mut().extend_from_slice(&[b'x'; 100]);
        b.finish(id)
    }

    fn ids(seg: &[u8]) -> Vec<Result<u64, Damage>> {
        Scanner::new(seg, Layout::V1)
            .map(|item| match item {
                ScanItem::Record { header, .. } => Ok(header.message_id),
                ScanItem::Damage(d) => Err(d),
            })
            .collect()
    }

    #[test]
    fn clean_segment_yields_every_record() {
        let mut state = Vec::new();
        encode_state(
            &mut state,
            1,
            &StateRecord::Delivered {
                recipient: 0,
                time_ms: 3,
            },
        );
        let (seg, _) = segment_with(&[msg(1), msg(2), state]);
        assert_eq!(ids(&seg), vec![Ok(1), Ok(2), Ok(1)]);
    }

    #[test]
    fn flipped_byte_in_the_middle_is_skipped_and_the_rest_kept() {
        let (mut seg, offsets) = segment_with(&[msg(1), msg(2), msg(3)]);
        seg[offsets[1] + 60] ^= 0xff;
        let len = offsets[2] - offsets[1];
        assert_eq!(
            ids(&seg),
            vec![
                Ok(1),
                Err(Damage::Corrupt {
                    offset: offsets[1],
                    len
                }),
                Ok(3)
            ]
        );
    }

    #[test]
    fn flipped_length_field_still_resyncs() {
        let (mut seg, offsets) = segment_with(&[msg(1), msg(2), msg(3)]);
        seg[offsets[1] + 10] ^= 0x7f;
        assert_eq!(ids(&seg)[2], Ok(3));
    }

    #[test]
    fn zeros_inside_a_damaged_record_do_not_hide_later_records() {
        let mut b = MessageBuilder::new(Vec::new(), 1, 0, b"s@a", &[b"r@b"]);
        b.body_mut().extend_from_slice(&[0u8; 200]);
        let with_nuls = b.finish(2);
        let (mut seg, offsets) = segment_with(&[msg(1), with_nuls, msg(3)]);
        seg[offsets[1] + 9] ^= 0x40; // the length field
        let found = ids(&seg);
        assert_eq!(found.first(), Some(&Ok(1)));
        assert_eq!(found.last(), Some(&Ok(3)), "{found:?}");
    }

    #[test]
    fn torn_tail_is_reported_as_such() {
        let (mut seg, offsets) = segment_with(&[msg(1), msg(2)]);
        let end = offsets[1] + msg(2).len();
        seg[offsets[1] + 70..end].fill(0);
        let mut scan = Scanner::new(&seg, Layout::V1);
        assert!(matches!(scan.next(), Some(ScanItem::Record { .. })));
        match scan.next() {
            Some(ScanItem::Damage(Damage::TornTail { offset, .. })) => {
                assert_eq!(offset, offsets[1])
            }
            other => panic!("expected a torn tail, got {other:?}"),
        }
        assert_eq!(scan.next(), None);
    }

    /// A version 2 segment with tag 2 holding `records` from its start,
    /// written over a file whose earlier use (tag 1) left records behind,
    /// at other offsets than the new ones.
    fn recycled(records: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut seg = vec![0u8; RECORDS_OFFSET + 40];
        for id in 100..140 {
            let mut r = msg(id);
            crate::stamp(&mut r, 1);
            seg.extend_from_slice(&r);
        }
        seg.resize(seg.len() + 4096, 0);
        let mut at = RECORDS_OFFSET;
        let mut offsets = Vec::new();
        for r in records {
            let mut r = r.clone();
            crate::stamp(&mut r, 2);
            offsets.push(at);
            seg[at..at + r.len()].copy_from_slice(&r);
            at += r.len();
        }
        (seg, offsets)
    }

    fn ids_v2(seg: &[u8]) -> Vec<Result<u64, Damage>> {
        Scanner::new(seg, Layout::V2 { tag: 2 })
            .map(|item| match item {
                ScanItem::Record { header, .. } => Ok(header.message_id),
                ScanItem::Damage(d) => Err(d),
            })
            .collect()
    }

    #[test]
    fn records_of_an_earlier_use_are_never_read_as_records() {
        let (mut seg, offsets) = recycled(&[msg(1), msg(2)]);
        let end = offsets[1] + msg(2).len();
        seg[end..end + RECORD_HEADER_BYTES].fill(0); // the committer's end mark
        assert_eq!(ids_v2(&seg), vec![Ok(1), Ok(2)]);
        let mut s = Scanner::new(&seg, Layout::V2 { tag: 2 });
        s.by_ref().for_each(drop);
        assert_eq!(s.end(), end);
    }

    #[test]
    fn a_torn_record_over_an_earlier_use_is_a_torn_tail_of_one_header() {
        let (mut seg, offsets) = recycled(&[msg(1), msg(2)]);
        let torn = offsets[1] + msg(2).len() / 2;
        seg[torn..offsets[1] + msg(2).len()].fill(0xee);
        assert_eq!(
            ids_v2(&seg),
            vec![
                Ok(1),
                Err(Damage::TornTail {
                    offset: offsets[1],
                    len: RECORD_HEADER_BYTES
                })
            ]
        );
    }

    #[test]
    fn a_damaged_record_of_this_use_resyncs_past_stale_ones() {
        let (mut seg, offsets) = recycled(&[msg(1), msg(2), msg(3)]);
        let end = offsets[2] + msg(3).len();
        seg[end..end + RECORD_HEADER_BYTES].fill(0);
        seg[offsets[1] + 60] ^= 0xff;
        let found = ids_v2(&seg);
        assert_eq!(found.first(), Some(&Ok(1)));
        assert!(matches!(found[1], Err(Damage::Corrupt { .. })), "{found:?}");
        assert_eq!(found.get(2), Some(&Ok(3)));
        assert_eq!(found.len(), 3);
    }
}
