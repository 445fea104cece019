//! Record headers and the payload of each record kind.

use crate::{align_up, Cursor, FormatError, Layout, RECORD_HEADER_BYTES};

/// Body flag: the message was sent with `BODY=8BITMIME`.
pub const FLAG_8BITMIME: u32 = 1;
/// Envelope flag: the transaction used `SMTPUTF8`.
pub const FLAG_SMTPUTF8: u32 = 2;
/// Envelope flag: a tenant and a campaign follow the recipients (each a
/// u16 length and bytes, either may be empty).
pub const FLAG_TAGS: u32 = 4;
const FLAGS_KNOWN: u32 = FLAG_8BITMIME | FLAG_SMTPUTF8 | FLAG_TAGS;
/// Longest tenant or campaign name.
pub const TAG_BYTES_MAX: usize = 64;

/// Whether `name` is a tenant or campaign name: 1 to [`TAG_BYTES_MAX`]
/// letters, digits, `.`, `_` or `-`.
pub fn is_tag(name: &[u8]) -> bool {
    (1..=TAG_BYTES_MAX).contains(&name.len())
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

/// The kinds of record a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Message = 1,
    Delivered = 2,
    Bounced = 3,
    Expired = 4,
    Attempt = 5,
}

impl RecordKind {
    pub fn from_u8(v: u8) -> Option<RecordKind> {
        Some(match v {
            1 => RecordKind::Message,
            2 => RecordKind::Delivered,
            3 => RecordKind::Bounced,
            4 => RecordKind::Expired,
            5 => RecordKind::Attempt,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Message => "Message",
            RecordKind::Delivered => "Delivered",
            RecordKind::Bounced => "Bounced",
            RecordKind::Expired => "Expired",
            RecordKind::Attempt => "Attempt",
        }
    }
}

/// The fixed 24-byte header in front of every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub kind: RecordKind,
    pub payload_len: u32,
    pub message_id: u64,
}

impl RecordHeader {
    /// Bytes the record occupies in the segment, padding included.
    pub fn record_bytes(&self) -> usize {
        align_up(RECORD_HEADER_BYTES + self.payload_len as usize)
    }
}

fn crc_of(header: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[4..RECORD_HEADER_BYTES]), payload)
}

/// Version 1's CRC of a record whose tag fields (bytes 5..8 and 12..16)
/// are read as zero: version 2 appends the tag to it.
fn crc_untagged(header: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[4..5]);
    let crc = crc32c::crc32c_append(crc, &[0; 3]);
    let crc = crc32c::crc32c_append(crc, &header[8..12]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    let crc = crc32c::crc32c_append(crc, &header[16..RECORD_HEADER_BYTES]);
    crc32c::crc32c_append(crc, payload)
}

/// A record header's tag: bits 0..32 in bytes 12..16, 32..56 in 5..8
/// (zero in version 1, where both are reserved).
fn tag_field(head: &[u8]) -> u64 {
    let low = u32::from_le_bytes(head[12..16].try_into().unwrap());
    let high = u32::from_le_bytes([head[5], head[6], head[7], 0]);
    u64::from(high) << 32 | u64::from(low)
}

fn write_tag(head: &mut [u8], tag: u64) {
    let bytes = tag.to_le_bytes();
    head[12..16].copy_from_slice(&bytes[0..4]);
    head[5..8].copy_from_slice(&bytes[4..7]);
}

/// The 7 bytes a version 2 CRC ends with.
fn tag_bytes(tag: u64) -> [u8; 7] {
    let mut out = [0; 7];
    out.copy_from_slice(&tag.to_le_bytes()[..7]);
    out
}

fn write_header(out: &mut [u8], kind: RecordKind, payload_len: u32, message_id: u64) {
    out[4] = kind as u8;
    out[5..8].fill(0);
    out[8..12].copy_from_slice(&payload_len.to_le_bytes());
    out[12..16].fill(0);
    out[16..24].copy_from_slice(&message_id.to_le_bytes());
}

/// Decodes the version 1 record that starts at `bytes[0]` (as this crate's
/// builders make them, before [`stamp`]); `bytes` may run on past it.
pub fn decode_record(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), FormatError> {
    decode_record_in(bytes, Layout::V1)
}

/// Decodes the record that starts at `bytes[0]` in a segment of `layout`;
/// `bytes` may run on past it. Returns the header and the payload, both
/// checked against the CRC. In version 2 a record of another tag is an
/// error, checked before the CRC: it is left from the file's earlier use.
pub fn decode_record_in(
    bytes: &[u8],
    layout: Layout,
) -> Result<(RecordHeader, &[u8]), FormatError> {
    let head = bytes
        .get(..RECORD_HEADER_BYTES)
        .ok_or(FormatError::Truncated)?;
    let kind = RecordKind::from_u8(head[4]).ok_or(FormatError::Invalid("record kind"))?;
    let expected_tag = match layout {
        Layout::V1 => 0,
        Layout::V2 { tag } => tag,
    };
    if tag_field(head) != expected_tag {
        return Err(FormatError::Invalid(
            "record tag or reserved field (another segment's record?)",
        ));
    }
    let payload_len = u32::from_le_bytes(head[8..12].try_into().unwrap());
    let end = RECORD_HEADER_BYTES
        .checked_add(payload_len as usize)
        .ok_or(FormatError::Truncated)?;
    let payload = bytes
        .get(RECORD_HEADER_BYTES..end)
        .ok_or(FormatError::Truncated)?;
    let crc = u32::from_le_bytes(head[0..4].try_into().unwrap());
    let expected_crc = match layout {
        Layout::V1 => crc_of(head, payload),
        Layout::V2 { tag } => crc32c::crc32c_append(crc_untagged(head, payload), &tag_bytes(tag)),
    };
    if crc != expected_crc {
        return Err(FormatError::Checksum);
    }
    let message_id = u64::from_le_bytes(head[16..24].try_into().unwrap());
    Ok((
        RecordHeader {
            crc,
            kind,
            payload_len,
            message_id,
        },
        payload,
    ))
}

/// The bytes taken by each of the sealed records laid end to end in
/// `records`, going by their length fields (the caller made or checked
/// them).
fn each_record(records: &mut [u8], mut f: impl FnMut(&mut [u8])) {
    let mut at = 0;
    while at + RECORD_HEADER_BYTES <= records.len() {
        let len = u32::from_le_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
        let end = (at + align_up(RECORD_HEADER_BYTES + len)).min(records.len());
        f(&mut records[at..end]);
        at = end;
    }
}

/// Seals version 1 records (as the builders make them, or as [`unstamp`]
/// leaves them) for a version 2 segment with `tag`: writes the tag and
/// appends it to the CRC, seven bytes of work per record.
pub fn stamp(records: &mut [u8], tag: u64) {
    debug_assert!(tag != 0 && tag <= crate::TAG_MAX, "a version 2 tag");
    each_record(records, |r| {
        debug_assert_eq!(tag_field(r), 0, "stamped twice");
        let crc = u32::from_le_bytes(r[0..4].try_into().unwrap());
        let crc = crc32c::crc32c_append(crc, &tag_bytes(tag));
        r[0..4].copy_from_slice(&crc.to_le_bytes());
        write_tag(r, tag);
    });
}

/// Turns records copied out of a segment of either version back into
/// version 1 records, ready to be [`stamp`]ed for another segment. A
/// version 2 record's CRC is computed again over the whole record.
pub fn unstamp(records: &mut [u8]) {
    each_record(records, |r| {
        if tag_field(r) == 0 {
            return; // version 1 already
        }
        write_tag(r, 0);
        let len = u32::from_le_bytes(r[8..12].try_into().unwrap()) as usize;
        let end = (RECORD_HEADER_BYTES + len).min(r.len());
        let crc = crc_of(&r[..RECORD_HEADER_BYTES], &r[RECORD_HEADER_BYTES..end]);
        r[0..4].copy_from_slice(&crc.to_le_bytes());
    });
}

/// Builds a `Message` record in place, so that the body can be appended to
/// the very buffer that will be written to disk.
///
/// The envelope goes first; the body is appended through [`body_mut`]; then
/// [`finish`] fills in the lengths, message id and CRC and pads the record.
///
/// [`body_mut`]: MessageBuilder::body_mut
/// [`finish`]: MessageBuilder::finish
pub struct MessageBuilder {
    buf: Vec<u8>,
    body_len_at: usize,
}

impl MessageBuilder {
    /// Starts a record. Addresses longer than 65535 bytes are a programmer
    /// error: the SMTP layer caps paths at 256 octets.
    pub fn new(
        mut buf: Vec<u8>,
        received_ms: u64,
        flags: u32,
        sender: &[u8],
        recipients: &[&[u8]],
    ) -> Self {
        assert!(
            !recipients.is_empty(),
            "a message has at least one recipient"
        );
        assert_eq!(
            flags & !(FLAGS_KNOWN & !FLAG_TAGS),
            0,
            "unknown message flag (tags are set with set_tags)"
        );
        buf.clear();
        buf.resize(RECORD_HEADER_BYTES, 0);
        buf.extend_from_slice(&received_ms.to_le_bytes());
        buf.extend_from_slice(&flags.to_le_bytes());
        push_short(&mut buf, sender);
        buf.extend_from_slice(&(recipients.len() as u32).to_le_bytes());
        for r in recipients {
            push_short(&mut buf, r);
        }
        let body_len_at = buf.len();
        buf.extend_from_slice(&0u32.to_le_bytes());
        MessageBuilder { buf, body_len_at }
    }

    /// Records the message's tenant and campaign (from its header, once
    /// that is read): they go between the recipients and the body, which
    /// moves up. At most once per record.
    pub fn set_tags(&mut self, tenant: &[u8], campaign: &[u8]) {
        assert!(tenant.len() <= TAG_BYTES_MAX && campaign.len() <= TAG_BYTES_MAX);
        let flags_at = RECORD_HEADER_BYTES + 8;
        let mut flags = [0; 4];
        flags.copy_from_slice(&self.buf[flags_at..flags_at + 4]);
        let flags = u32::from_le_bytes(flags);
        assert_eq!(flags & FLAG_TAGS, 0, "tags set twice");
        self.buf[flags_at..flags_at + 4].copy_from_slice(&(flags | FLAG_TAGS).to_le_bytes());
        let mut tags = Vec::with_capacity(4 + tenant.len() + campaign.len());
        push_short(&mut tags, tenant);
        push_short(&mut tags, campaign);
        let at = self.body_len_at;
        self.buf.splice(at..at, tags.iter().copied());
        self.body_len_at += tags.len();
    }

    /// The buffer the body is appended to.
    pub fn body_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The body appended so far.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body_start()..]
    }

    /// Puts `bytes` in front of the body appended so far (a header field
    /// that can only be made once the whole message is known, such as a
    /// DKIM-Signature).
    pub fn prepend_to_body(&mut self, bytes: &[u8]) {
        let start = self.body_start();
        self.buf.splice(start..start, bytes.iter().copied());
    }

    /// Bytes of body appended so far.
    pub fn body_len(&self) -> usize {
        self.buf.len() - self.body_start()
    }

    /// Offset of the body from the start of the record.
    pub fn body_start(&self) -> usize {
        self.body_len_at + 4
    }

    /// Drops the body appended so far, keeping the envelope.
    pub fn clear_body(&mut self) {
        let start = self.body_start();
        self.buf.truncate(start);
    }

    /// Seals the record: lengths, id, CRC and padding. The result is exactly
    /// the bytes to write at an 8-aligned offset of a segment.
    pub fn finish(mut self, message_id: u64) -> Vec<u8> {
        let body_len = u32::try_from(self.body_len()).expect("body fits in u32");
        self.buf[self.body_len_at..self.body_len_at + 4].copy_from_slice(&body_len.to_le_bytes());
        let payload_len =
            u32::try_from(self.buf.len() - RECORD_HEADER_BYTES).expect("payload fits in u32");
        write_header(&mut self.buf, RecordKind::Message, payload_len, message_id);
        let crc = crc_of(
            &self.buf[..RECORD_HEADER_BYTES],
            &self.buf[RECORD_HEADER_BYTES..],
        );
        self.buf[0..4].copy_from_slice(&crc.to_le_bytes());
        let padded = align_up(self.buf.len());
        self.buf.resize(padded, 0);
        self.buf
    }
}

fn push_short(buf: &mut Vec<u8>, bytes: &[u8]) {
    let n = u16::try_from(bytes.len()).expect("field fits in u16");
    buf.extend_from_slice(&n.to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// A decoded `Message` payload, borrowing from the segment.
#[derive(Debug, Clone)]
pub struct MessageView<'a> {
    pub received_ms: u64,
    pub flags: u32,
    pub sender: &'a [u8],
    /// Empty when the message names none.
    pub tenant: &'a [u8],
    pub campaign: &'a [u8],
    recipients: &'a [u8],
    pub recipient_count: u32,
    pub body: &'a [u8],
    /// Offset of the body from the start of the payload.
    pub body_offset: usize,
}

impl<'a> MessageView<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<MessageView<'a>, FormatError> {
        let (envelope, mut c) = EnvelopeView::decode_prefix(payload)?;
        let body_len = c.u32()? as usize;
        let body_offset = c.position();
        let body = c.take(body_len)?;
        if !c.is_empty() {
            return Err(FormatError::Invalid("message length"));
        }
        Ok(MessageView {
            received_ms: envelope.received_ms,
            flags: envelope.flags,
            sender: envelope.sender,
            tenant: envelope.tenant,
            campaign: envelope.campaign,
            recipients: envelope.recipients,
            recipient_count: envelope.recipient_count,
            body,
            body_offset,
        })
    }

    /// The recipients in index order.
    pub fn recipients(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        recipients_of(self.recipients, self.recipient_count)
    }
}

/// The envelope at the start of a `Message` payload (reception time, flags,
/// sender, recipients), read without the body and without the checksum.
///
/// For a record whose checksum was already verified (sealed by this process
/// or checked by recovery) and whose envelope is read again from a mapping:
/// the engine keeps no copy of addresses in memory, only their place.
#[derive(Debug, Clone)]
pub struct EnvelopeView<'a> {
    pub received_ms: u64,
    pub flags: u32,
    pub sender: &'a [u8],
    /// Empty when the message names none.
    pub tenant: &'a [u8],
    pub campaign: &'a [u8],
    recipients: &'a [u8],
    pub recipient_count: u32,
}

impl<'a> EnvelopeView<'a> {
    /// Decodes the envelope from the first bytes of a payload; whatever
    /// follows the recipients (the body) is not looked at.
    pub fn decode(payload: &'a [u8]) -> Result<EnvelopeView<'a>, FormatError> {
        Ok(EnvelopeView::decode_prefix(payload)?.0)
    }

    fn decode_prefix(payload: &'a [u8]) -> Result<(EnvelopeView<'a>, Cursor<'a>), FormatError> {
        let mut c = Cursor::new(payload);
        let received_ms = c.u64()?;
        let flags = c.u32()?;
        if flags & !FLAGS_KNOWN != 0 {
            return Err(FormatError::Invalid("message flags"));
        }
        let sender = c.short_bytes()?;
        let recipient_count = c.u32()?;
        if recipient_count == 0 {
            return Err(FormatError::Invalid("recipient count"));
        }
        let recipients_start = c.position();
        for _ in 0..recipient_count {
            c.short_bytes()?;
        }
        let recipients = &payload[recipients_start..c.position()];
        let (mut tenant, mut campaign): (&[u8], &[u8]) = (&[], &[]);
        if flags & FLAG_TAGS != 0 {
            tenant = c.short_bytes()?;
            campaign = c.short_bytes()?;
            if tenant.len() > TAG_BYTES_MAX || campaign.len() > TAG_BYTES_MAX {
                return Err(FormatError::Invalid("tag length"));
            }
        }
        let envelope = EnvelopeView {
            received_ms,
            flags,
            sender,
            tenant,
            campaign,
            recipients,
            recipient_count,
        };
        Ok((envelope, c))
    }

    /// The recipients in index order.
    pub fn recipients(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        recipients_of(self.recipients, self.recipient_count)
    }

    /// The recipient at `index`, if there is one.
    pub fn recipient(&self, index: u32) -> Option<&'a [u8]> {
        self.recipients().nth(index as usize)
    }
}

fn recipients_of(bytes: &[u8], count: u32) -> impl Iterator<Item = &[u8]> + '_ {
    let mut c = Cursor::new(bytes);
    (0..count).map(move |_| c.short_bytes().expect("checked in decode"))
}

/// A state record to append (kinds 2 to 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateRecord<'a> {
    Delivered {
        recipient: u32,
        time_ms: u64,
    },
    Bounced {
        recipient: u32,
        time_ms: u64,
        reason: &'a str,
    },
    Expired {
        recipient: u32,
        time_ms: u64,
    },
    Attempt {
        recipient: u32,
        time_ms: u64,
        attempt: u32,
        next_ms: u64,
        reason: &'a str,
    },
}

/// A decoded state record, borrowing from the segment.
pub type StateView<'a> = StateRecord<'a>;

impl<'a> StateRecord<'a> {
    pub fn kind(&self) -> RecordKind {
        match self {
            StateRecord::Delivered { .. } => RecordKind::Delivered,
            StateRecord::Bounced { .. } => RecordKind::Bounced,
            StateRecord::Expired { .. } => RecordKind::Expired,
            StateRecord::Attempt { .. } => RecordKind::Attempt,
        }
    }

    pub fn recipient(&self) -> u32 {
        match *self {
            StateRecord::Delivered { recipient, .. }
            | StateRecord::Bounced { recipient, .. }
            | StateRecord::Expired { recipient, .. }
            | StateRecord::Attempt { recipient, .. } => recipient,
        }
    }

    /// True for the kinds after which the recipient needs nothing more.
    pub fn is_final(&self) -> bool {
        !matches!(self, StateRecord::Attempt { .. })
    }

    /// Decodes the payload of a state record of `kind`.
    pub fn decode(kind: RecordKind, payload: &'a [u8]) -> Result<StateRecord<'a>, FormatError> {
        let mut c = Cursor::new(payload);
        let recipient = c.u32()?;
        let time_ms = c.u64()?;
        let text = |c: &mut Cursor<'a>| {
            std::str::from_utf8(c.short_bytes()?).map_err(|_| FormatError::Invalid("reason text"))
        };
        let rec = match kind {
            RecordKind::Message => return Err(FormatError::Invalid("state record kind")),
            RecordKind::Delivered => StateRecord::Delivered { recipient, time_ms },
            RecordKind::Expired => StateRecord::Expired { recipient, time_ms },
            RecordKind::Bounced => StateRecord::Bounced {
                recipient,
                time_ms,
                reason: text(&mut c)?,
            },
            RecordKind::Attempt => {
                let attempt = c.u32()?;
                let next_ms = c.u64()?;
                StateRecord::Attempt {
                    recipient,
                    time_ms,
                    attempt,
                    next_ms,
                    reason: text(&mut c)?,
                }
            }
        };
        if !c.is_empty() {
            return Err(FormatError::Invalid("state record length"));
        }
        Ok(rec)
    }
}

/// Appends a sealed state record for `message_id` to `out`. Reasons longer
/// than 1000 bytes are cut at a character boundary.
pub fn encode_state(out: &mut Vec<u8>, message_id: u64, rec: &StateRecord<'_>) {
    let start = out.len();
    out.resize(start + RECORD_HEADER_BYTES, 0);
    let short = |out: &mut Vec<u8>, s: &str| {
        let mut end = s.len().min(1000);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        push_short(out, &s.as_bytes()[..end]);
    };
    out.extend_from_slice(&rec.recipient().to_le_bytes());
    match rec {
        StateRecord::Delivered { time_ms, .. } | StateRecord::Expired { time_ms, .. } => {
            out.extend_from_slice(&time_ms.to_le_bytes());
        }
        StateRecord::Bounced {
            time_ms, reason, ..
        } => {
            out.extend_from_slice(&time_ms.to_le_bytes());
            short(out, reason);
        }
        StateRecord::Attempt {
            time_ms,
            attempt,
            next_ms,
            reason,
            ..
        } => {
            out.extend_from_slice(&time_ms.to_le_bytes());
            out.extend_from_slice(&attempt.to_le_bytes());
            out.extend_from_slice(&next_ms.to_le_bytes());
            short(out, reason);
        }
    }
    let payload_len = (out.len() - start - RECORD_HEADER_BYTES) as u32;
    let (head, payload) = out[start..].split_at_mut(RECORD_HEADER_BYTES);
    write_header(head, rec.kind(), payload_len, message_id);
    let crc = crc_of(head, payload);
    head[0..4].copy_from_slice(&crc.to_le_bytes());
    let padded = start + align_up(out.len() - start);
    out.resize(padded, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Vec<u8> {
        let mut b = MessageBuilder::new(Vec::new(), 5, FLAG_8BITMIME, b"a@x", &[b"b@y", b"c@z"]);
        b.body_mut()
            .extend_from_slice(b"Subject: hi\r\n\r\nbody\r\n");
        b.finish(42)
    }

    #[test]
    fn tags_go_between_the_recipients_and_the_body() {
        let mut b = MessageBuilder::new(Vec::new(), 5, 0, b"a@x", &[b"b@y"]);
        b.body_mut().extend_from_slice(b"Subject: hi\r\n");
        b.set_tags(b"acme", b"");
        b.body_mut().extend_from_slice(b"\r\nbody\r\n");
        let rec = b.finish(7);
        let (_, payload) = decode_record(&rec).unwrap();
        let m = MessageView::decode(payload).unwrap();
        assert_eq!((m.tenant, m.campaign), (&b"acme"[..], &b""[..]));
        assert_eq!(m.flags, FLAG_TAGS);
        assert_eq!(m.body, b"Subject: hi\r\n\r\nbody\r\n");
        assert_eq!(m.recipients().collect::<Vec<_>>(), [&b"b@y"[..]]);
        let untagged = message();
        let (_, payload) = decode_record(&untagged).unwrap();
        assert!(MessageView::decode(payload).unwrap().tenant.is_empty());
    }

    #[test]
    fn the_envelope_reads_without_the_body() {
        let rec = message();
        let (_, payload) = decode_record(&rec).unwrap();
        let body_offset = MessageView::decode(payload).unwrap().body_offset;
        // Only the bytes before the body: no body, no checksum needed.
        let e = EnvelopeView::decode(&payload[..body_offset]).unwrap();
        assert_eq!(
            (e.received_ms, e.flags, e.sender),
            (5, FLAG_8BITMIME, &b"a@x"[..])
        );
        assert_eq!(e.recipient_count, 2);
        assert_eq!(e.recipient(1), Some(&b"c@z"[..]));
        assert_eq!(e.recipient(2), None);
        assert!(
            EnvelopeView::decode(&payload[..20]).is_err(),
            "cut inside the recipients"
        );
    }

    #[test]
    fn message_round_trips() {
        let rec = message();
        assert_eq!(rec.len() % 8, 0);
        let (h, payload) = decode_record(&rec).unwrap();
        assert_eq!(
            (h.kind, h.message_id, h.record_bytes()),
            (RecordKind::Message, 42, rec.len())
        );
        let m = MessageView::decode(payload).unwrap();
        assert_eq!(
            (m.received_ms, m.flags, m.sender),
            (5, FLAG_8BITMIME, &b"a@x"[..])
        );
        assert_eq!(
            m.recipients().collect::<Vec<_>>(),
            vec![&b"b@y"[..], &b"c@z"[..]]
        );
        assert_eq!(m.body, b"Subject: hi\r\n\r\nbody\r\n");
        assert_eq!(
            &payload[m.body_offset..m.body_offset + m.body.len()],
            m.body
        );
    }

    #[test]
    fn a_prepended_header_field_lands_before_the_body_and_is_sealed_with_it() {
        let mut b = MessageBuilder::new(Vec::new(), 5, 0, b"a@x", &[b"b@y"]);
        b.body_mut()
            .extend_from_slice(b"Subject: hi\r\n\r\nbody\r\n");
        b.prepend_to_body(b"DKIM-Signature: v=1\r\n");
        assert_eq!(
            b.body(),
            b"DKIM-Signature: v=1\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        let rec = b.finish(7);
        let (_, payload) = decode_record(&rec).unwrap();
        let m = MessageView::decode(payload).unwrap();
        assert_eq!(
            m.body,
            b"DKIM-Signature: v=1\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(m.recipients().collect::<Vec<_>>(), vec![&b"b@y"[..]]);
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let rec = message();
        let used = RECORD_HEADER_BYTES + decode_record(&rec).unwrap().0.payload_len as usize;
        for i in 0..used {
            let mut bad = rec.clone();
            bad[i] ^= 0x10;
            assert!(
                decode_record(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn state_records_round_trip() {
        let cases = [
            StateRecord::Delivered {
                recipient: 1,
                time_ms: 9,
            },
            StateRecord::Bounced {
                recipient: 0,
                time_ms: 9,
                reason: "550 5.1.1 no such user",
            },
            StateRecord::Expired {
                recipient: 3,
                time_ms: 9,
            },
            StateRecord::Attempt {
                recipient: 2,
                time_ms: 9,
                attempt: 4,
                next_ms: 99,
                reason: "451 later",
            },
        ];
        for case in cases {
            let mut out = Vec::new();
            encode_state(&mut out, 7, &case);
            let (h, payload) = decode_record(&out).unwrap();
            assert_eq!(h.message_id, 7);
            assert_eq!(StateRecord::decode(h.kind, payload).unwrap(), case);
        }
    }

    #[test]
    fn stamped_records_decode_only_under_their_tag() {
        let mut recs = message();
        encode_state(
            &mut recs,
            7,
            &StateRecord::Delivered {
                recipient: 0,
                time_ms: 9,
            },
        );
        let plain = recs.clone();
        let tag = 0x00ab_cdef_0000_1234;
        stamp(&mut recs, tag);
        let v2 = Layout::V2 { tag };
        let (first, _) = decode_record_in(&recs, v2).unwrap();
        let second = &recs[first.record_bytes()..];
        assert_eq!(decode_record_in(second, v2).unwrap().0.message_id, 7);
        assert!(decode_record_in(&recs, Layout::V2 { tag: tag + 1 }).is_err());
        let other_high = Layout::V2 {
            tag: tag ^ (1 << 40),
        };
        assert!(decode_record_in(&recs, other_high).is_err());
        assert!(
            decode_record(&recs).is_err(),
            "a version 2 record is no version 1 record"
        );
        assert!(
            decode_record_in(&plain, v2).is_err(),
            "nor the other way round"
        );
        // A stale record whose tag field alone was rewritten fails the CRC.
        let mut forged = recs.clone();
        forged[12..16].copy_from_slice(&0x1235u32.to_le_bytes());
        let forged_tag = Layout::V2 { tag: tag + 1 };
        assert_eq!(
            decode_record_in(&forged, forged_tag).map(|_| ()),
            Err(FormatError::Checksum)
        );
        unstamp(&mut recs);
        assert_eq!(recs, plain, "unstamp gives back the version 1 bytes");
        unstamp(&mut recs);
        assert_eq!(recs, plain, "and leaves version 1 records alone");
    }

    #[test]
    fn truncated_payload_is_an_error() {
        let rec = message();
        assert_eq!(decode_record(&rec[..30]), Err(FormatError::Truncated));
    }
}
