//! The typed values the pipeline stages hand each other: a durable message's
//! handle and its recipients.
//!
//! A [`MessageHandle`] exists only for a message whose spool record has been
//! made durable. It reaches the body through the message's shared
//! [`Stored`] place in the spool, a read-only mapping of the segment that
//! holds it now; cloning or sending it to another core never copies the body.

pub use crate::spool::{Body, SegmentLife, Stored};
use memmap2::Mmap;
use std::path::PathBuf;
use std::sync::Arc;

/// A read-only, shared mapping of one whole segment file. Any core may hold
/// it; the bytes of a durable record in it never change.
pub struct SegmentMap {
    pub segment_id: u64,
    pub path: PathBuf,
    pub map: Mmap,
    /// Its live counts, shared with the messages homed in it.
    pub life: Arc<SegmentLife>,
}

impl SegmentMap {
    /// An anonymous mapping holding `bytes`, standing in for a segment in
    /// tests and benchmarks.
    #[doc(hidden)]
    pub fn anonymous(segment_id: u64, bytes: &[u8]) -> std::io::Result<SegmentMap> {
        let mut map = memmap2::MmapOptions::new()
            .len(bytes.len().max(1))
            .map_anon()?;
        map[..bytes.len()].copy_from_slice(bytes);
        Ok(SegmentMap {
            segment_id,
            path: format!("anonymous-{segment_id}").into(),
            map: map.make_read_only()?,
            life: Arc::new(SegmentLife::new(segment_id)),
        })
    }
}

impl std::fmt::Debug for SegmentMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SegmentMap({})", self.path.display())
    }
}

/// One recipient of a message, with its index in the spool record (state
/// records name recipients by this index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub index: u32,
    pub address: Box<str>,
    /// Delivery attempts already made (from `Attempt` records at recovery).
    pub attempts: u32,
    /// When the next attempt is due, ms since the epoch; 0: now.
    pub next_attempt_ms: u64,
}

impl Recipient {
    /// The domain part, as written (routing lower-cases it).
    pub fn domain(&self) -> &str {
        domain_of(&self.address)
    }
}

/// The domain of an address: everything after the last `@`.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// A durable message, or the part of it (some recipients) that one core owns.
#[derive(Debug, Clone)]
pub struct MessageHandle {
    pub id: u64,
    pub received_ms: u64,
    pub flags: u32,
    /// Where the record lives now, and how many recipients are unfinished.
    pub stored: Arc<Stored>,
    pub body_len: usize,
    pub sender: Arc<str>,
    pub recipients: Vec<Recipient>,
}

impl MessageHandle {
    /// The message body, served from the mapping. A handle exists only
    /// for a message with recipients to deliver, and such a message always
    /// has a mapped record.
    pub fn body(&self) -> Body {
        self.stored
            .body()
            .expect("a message with unfinished recipients has a mapped record")
    }

    /// The id as it appears in logs and Received headers.
    pub fn id_text(&self) -> String {
        format!("{:016x}", self.id)
    }
}
