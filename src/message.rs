//! The typed values the pipeline stages hand each other: a durable message's
//! handle and its recipients.
//!
//! A [`MessageHandle`] exists only for a message whose spool record has been
//! made durable. It reaches the body through the message's shared
//! [`Stored`] place in the spool, a read-only mapping of the segment that
//! holds it now; cloning or sending it to another core never copies the body.

pub use crate::spool::{Body, SegmentLife, Stored};
use memmap2::Mmap;
use smallvec::SmallVec;
use spool_format::EnvelopeView;
use std::borrow::Cow;
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

/// One recipient of a message on the core that owns it: its index in the
/// spool record (state records name recipients by this index; the address
/// itself is read from the record, see [`Envelope`]) and its retry state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    pub index: u32,
    /// Delivery attempts already made (from `Attempt` records at recovery).
    pub attempts: u32,
    /// When the next attempt is due, ms since the epoch; 0: now.
    pub next_attempt_ms: u64,
}

impl Recipient {
    /// Recipients `0..count` of a message just received: none tried yet.
    pub fn first_attempts(count: usize) -> Recipients {
        (0..count as u32)
            .map(|index| Recipient {
                index,
                attempts: 0,
                next_attempt_ms: 0,
            })
            .collect()
    }
}

/// The domain of an address: everything after the last `@`.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// A message's recipients on one core; most messages have one, held inline.
pub type Recipients = SmallVec<[Recipient; 1]>;

/// A durable message, or the part of it (some recipients) that one core owns.
///
/// It holds no addresses: the sender and recipients are read from the spool
/// record through [`MessageHandle::envelope`], like the body, so a queued
/// message costs a few dozen bytes of memory whatever its envelope.
#[derive(Debug, Clone)]
pub struct MessageHandle {
    pub id: u64,
    /// Where the record lives now, and how many recipients are unfinished.
    pub stored: Arc<Stored>,
    pub recipients: Recipients,
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

    pub fn body_len(&self) -> usize {
        self.stored.body_len()
    }

    /// The sender and recipient addresses, read from the mapped record.
    pub fn envelope(&self) -> Envelope {
        self.stored
            .envelope()
            .expect("a message with unfinished recipients has a mapped record")
    }

    /// The id as it appears in logs and Received headers.
    pub fn id_text(&self) -> String {
        format!("{:016x}", self.id)
    }
}

/// Addresses are UTF-8 (the listener takes them as strings), so the lossy
/// path is only for a record damaged in a way its checksum missed.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A message's envelope as its spool record holds it: a slice of the
/// segment mapping that it keeps alive, decoded when asked. The record's
/// checksum was verified when it was sealed or recovered, so decoding it
/// again cannot fail.
pub struct Envelope {
    record: Body,
}

impl Envelope {
    pub(crate) fn new(record: Body) -> Envelope {
        Envelope { record }
    }

    fn view(&self) -> EnvelopeView<'_> {
        let payload = &self.record[spool_format::RECORD_HEADER_BYTES..];
        EnvelopeView::decode(payload).expect("a sealed record's envelope decodes")
    }

    /// When the message was received, ms since the epoch.
    pub fn received_ms(&self) -> u64 {
        self.view().received_ms
    }

    /// The record's flags (`FLAG_8BITMIME`, `FLAG_SMTPUTF8`).
    pub fn flags(&self) -> u32 {
        self.view().flags
    }

    /// The envelope sender; empty for the null sender `<>`.
    pub fn sender(&self) -> Cow<'_, str> {
        text(self.view().sender)
    }

    /// The address of recipient `index` of the record.
    pub fn address(&self, index: u32) -> Cow<'_, str> {
        let bytes = self
            .view()
            .recipient(index)
            .expect("recipient indexes come from the record");
        text(bytes)
    }

    /// The tenant and campaign the message named (empty: none); checked
    /// at reception to be short ASCII names.
    pub fn tags(&self) -> (Cow<'_, str>, Cow<'_, str>) {
        // Most messages name none: the flags say so without walking the
        // recipients (a message may have thousands).
        let at = spool_format::RECORD_HEADER_BYTES + 8;
        let flags = self.record[at..at + 4]
            .try_into()
            .map_or(0, u32::from_le_bytes);
        if flags & spool_format::FLAG_TAGS == 0 {
            return (Cow::Borrowed(""), Cow::Borrowed(""));
        }
        let v = self.view();
        (text(v.tenant), text(v.campaign))
    }

    /// The domain of recipient `index`, as written (routing lower-cases it).
    pub fn domain(&self, index: u32) -> String {
        domain_of(&self.address(index)).to_string()
    }
}

impl MessageHandle {
    /// A handle whose record (built with `sender`, `recipients` and `body`)
    /// lives in an anonymous mapping, for tests and benchmarks.
    #[doc(hidden)]
    pub fn in_memory(id: u64, sender: &str, recipients: &[&str], body: &[u8]) -> MessageHandle {
        MessageHandle::in_memory_tagged(id, sender, recipients, body, ("", ""))
    }

    /// [`MessageHandle::in_memory`] naming a tenant and a campaign.
    #[doc(hidden)]
    pub fn in_memory_tagged(
        id: u64,
        sender: &str,
        recipients: &[&str],
        body: &[u8],
        (tenant, campaign): (&str, &str),
    ) -> MessageHandle {
        let rcpts: Vec<&[u8]> = recipients.iter().map(|r| r.as_bytes()).collect();
        let mut b = spool_format::MessageBuilder::new(Vec::new(), 0, 0, sender.as_bytes(), &rcpts);
        if !(tenant.is_empty() && campaign.is_empty()) {
            b.set_tags(tenant.as_bytes(), campaign.as_bytes());
        }
        b.body_mut().extend_from_slice(body);
        let (body_start, body_len) = (b.body_start(), b.body_len());
        let record = b.finish(id);
        let map = Arc::new(SegmentMap::anonymous(1, &record).expect("anonymous mapping"));
        let stored = Stored::new(
            id,
            record.len(),
            body_start,
            body_len,
            recipients.len() as u32,
        );
        stored.place(&map, 0);
        MessageHandle {
            id,
            stored,
            recipients: Recipient::first_attempts(recipients.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_read_from_the_record() {
        let m = MessageHandle::in_memory(7, "bounce@s.test", &["a@X.test", "b@y.test"], b"hi\r\n");
        let e = m.envelope();
        assert_eq!(e.sender(), "bounce@s.test");
        assert_eq!(e.address(1), "b@y.test");
        assert_eq!(e.domain(0), "X.test");
        assert_eq!(&*m.body(), b"hi\r\n");
        assert_eq!(m.body_len(), 4);
    }

    #[test]
    fn a_queued_one_recipient_message_is_small() {
        // With the Rc's counts the handle is one 64-byte malloc chunk
        // (perf/results/2026-12-04-queue-memory.md has the layout).
        assert!(std::mem::size_of::<MessageHandle>() <= 40);
        assert!(std::mem::size_of::<Recipient>() <= 16);
    }
}
