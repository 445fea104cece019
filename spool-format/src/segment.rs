//! The 48-byte segment header and the segment file naming rule.

use crate::{Cursor, FormatError, FORMAT_VERSION, RECORDS_OFFSET, SEGMENT_HEADER_BYTES};

const MAGIC: &[u8; 8] = b"SPATESPL";

/// The decoded header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment_id: u64,
    pub core: u32,
    pub segment_bytes: u64,
    pub created_unix_secs: u32,
}

impl SegmentHeader {
    /// Encodes the header into the first `SEGMENT_HEADER_BYTES` of a block.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
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
        if version != FORMAT_VERSION {
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
        let h = SegmentHeader {
            segment_id: 7,
            core: 1,
            segment_bytes: 1 << 20,
            created_unix_secs: 99,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn newer_version_is_named() {
        let mut b = SegmentHeader {
            segment_id: 1,
            core: 0,
            segment_bytes: 1 << 20,
            created_unix_secs: 0,
        }
        .encode();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&b),
            Err(FormatError::UnknownVersion(2))
        );
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut b = SegmentHeader {
            segment_id: 1,
            core: 0,
            segment_bytes: 1 << 20,
            created_unix_secs: 0,
        }
        .encode();
        b[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&b), Err(FormatError::Checksum));
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
