//! The 48-byte segment header, the record layout it names, and the segment
//! file naming rule.

use crate::{Cursor, FormatError, FORMAT_VERSION, RECORDS_OFFSET, SEGMENT_HEADER_BYTES};

const MAGIC: &[u8; 8] = b"SPATESPL";

/// How the records of a segment are sealed, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Version 1: the record header's bytes 12..16 are zero and the CRC
    /// covers the header and payload.
    V1,
    /// Version 2: every record carries the segment's 56-bit `tag` (never
    /// zero) in its header's bytes 12..16 (low 32 bits) and 5..8, and the
    /// CRC ends with it. A record with another tag is left from an earlier
    /// use of the file and is no record of this segment.
    V2 { tag: u64 },
}

/// Largest tag: tags have 56 bits.
pub const TAG_MAX: u64 = (1 << 56) - 1;

/// The tag of version 2 segment `segment_id`: the id's low 56 bits, or 1
/// where they are zero (a tag is never zero). Ids only grow, so a tag comes
/// round again only 2^56 ids later.
pub fn tag_for(segment_id: u64) -> u64 {
    (segment_id & TAG_MAX).max(1)
}

/// The decoded header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment_id: u64,
    pub core: u32,
    pub segment_bytes: u64,
    pub created_unix_secs: u32,
    /// 1 or 2.
    pub version: u32,
}

impl SegmentHeader {
    /// A header of the version this crate writes.
    pub fn new(segment_id: u64, core: u32, segment_bytes: u64, created_unix_secs: u32) -> Self {
        SegmentHeader {
            segment_id,
            core,
            segment_bytes,
            created_unix_secs,
            version: FORMAT_VERSION,
        }
    }

    /// How this segment's records are sealed.
    pub fn layout(&self) -> Layout {
        match self.version {
            1 => Layout::V1,
            _ => Layout::V2 {
                tag: tag_for(self.segment_id),
            },
        }
    }

    /// Encodes the header into the first `SEGMENT_HEADER_BYTES` of a block.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&(RECORDS_OFFSET as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        out[24..28].copy_from_slice(&self.core.to_le_bytes());
        out[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        out[40..44].copy_from_slice(&self.created_unix_secs.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..44]);
        out[44..48].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a segment header. The version is checked before the
    /// CRC so that a segment from a newer spate is named as such.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, FormatError> {
        let mut c = Cursor::new(bytes);
        if c.take(8)? != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = c.u32()?;
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::UnknownVersion(version));
        }
        let records_offset = c.u32()?;
        let segment_id = c.u64()?;
        let core = c.u32()?;
        let reserved = c.u32()?;
        let segment_bytes = c.u64()?;
        let created_unix_secs = c.u32()?;
        let crc = c.u32()?;
        if crc != crc32c::crc32c(&bytes[0..44]) {
            return Err(FormatError::Checksum);
        }
        if records_offset as usize != RECORDS_OFFSET || reserved != 0 {
            return Err(FormatError::Invalid("segment header field"));
        }
        Ok(SegmentHeader {
            segment_id,
            core,
            segment_bytes,
            created_unix_secs,
            version,
        })
    }
}

/// The file name of a segment: `seg-<id as 16 hex digits>.spl`.
pub fn segment_file_name(segment_id: u64) -> String {
    format!("seg-{segment_id:016x}.spl")
}

/// The segment id a file name stands for, or `None` if it is no segment.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".spl")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = SegmentHeader::new(7, 1, 1 << 20, 99);
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        assert_eq!(h.layout(), Layout::V2 { tag: 7 });
        let v1 = SegmentHeader { version: 1, ..h };
        assert_eq!(SegmentHeader::decode(&v1.encode()), Ok(v1));
        assert_eq!(v1.layout(), Layout::V1);
    }

    #[test]
    fn newer_version_is_named() {
        let mut b = SegmentHeader::new(1, 0, 1 << 20, 0).encode();
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&b),
            Err(FormatError::UnknownVersion(3))
        );
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut b = SegmentHeader::new(1, 0, 1 << 20, 0).encode();
        b[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&b), Err(FormatError::Checksum));
    }

    #[test]
    fn a_tag_is_the_ids_low_56_bits_and_never_zero() {
        assert_eq!(tag_for(1 << 56), 1);
        assert_eq!(tag_for((5 << 56) | (9 << 32) | 7), (9 << 32) | 7);
        let h = SegmentHeader::new((3 << 32) | 1, 0, 1 << 20, 0);
        assert_eq!(h.layout(), Layout::V2 { tag: (3 << 32) | 1 });
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(segment_file_name(0xab), "seg-00000000000000ab.spl");
        assert_eq!(
            parse_segment_file_name("seg-00000000000000ab.spl"),
            Some(0xab)
        );
        assert_eq!(parse_segment_file_name("seg-ab.spl"), None);
        assert_eq!(parse_segment_file_name("other"), None);
    }
}
