//! The spool's on-disk format, versions 1 and 2, exactly as `SPEC.md`
//! describes them.
//!
//! This crate owns the bytes: segment headers, record headers, the payload of
//! each record kind, and the walk over a segment that tells good records from
//! torn or corrupted ones. It does no I/O and has no runtime: callers hand it
//! byte slices (usually a memory-mapped segment) and get typed views back that
//! borrow from those slices, so a body is never copied to be read.
//!
//! It must never guess: a version it does not know, a CRC that fails or a
//! length that overruns is an error the caller sees.

mod record;
mod scan;
mod segment;

pub use record::{
    decode_record, decode_record_in, encode_state, is_tag, stamp, unstamp, EnvelopeView,
    MessageBuilder, MessageView, RecordHeader, RecordKind, StateRecord, StateView, FLAG_8BITMIME,
    FLAG_SMTPUTF8, FLAG_TAGS, TAG_BYTES_MAX,
};
pub use scan::{Damage, ScanItem, Scanner};
pub use segment::{
    parse_segment_file_name, segment_file_name, tag_for, Layout, SegmentHeader, TAG_MAX,
};

/// The format version this crate writes. It reads this one and version 1.
pub const FORMAT_VERSION: u32 = 2;
/// Records start here in every segment.
pub const RECORDS_OFFSET: usize = 4096;
/// Every record starts on a multiple of this.
pub const RECORD_ALIGN: usize = 8;
/// Size of the fixed record header.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Size of the encoded segment header (the rest of its 4096 bytes is zero).
pub const SEGMENT_HEADER_BYTES: usize = 48;
/// Smallest segment that can hold a header and one record.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// Everything that can be wrong with bytes handed to this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The segment header does not start with `SPATESPL`.
    BadMagic,
    /// The segment was written by a format version this crate does not know.
    UnknownVersion(u32),
    /// A checksum did not match.
    Checksum,
    /// A length field points past the end of the bytes given.
    Truncated,
    /// A field holds a value the format does not allow; the text says which.
    Invalid(&'static str),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::BadMagic => write!(f, "not a spate spool segment (bad magic)"),
            FormatError::UnknownVersion(v) => write!(
                f,
                "unknown spool format version {v} (this build reads versions 1 to {FORMAT_VERSION})"
            ),
            FormatError::Checksum => write!(f, "checksum mismatch"),
            FormatError::Truncated => write!(f, "truncated"),
            FormatError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// Rounds `n` up to the record alignment.
pub const fn align_up(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Little-endian reader over a byte slice that fails instead of panicking.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n).ok_or(FormatError::Truncated)?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or(FormatError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    pub(crate) fn short_bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.bytes.len()
    }
}
