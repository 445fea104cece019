//! The DATA receiver: turns the client's dot-stuffed text into the stored
//! body and finds the end of data. Pure: bytes in, bytes out, no I/O.
//!
//! End of data is `CRLF . CRLF` and nothing else: the `.` line must follow a
//! line that itself ended in CRLF. A bare LF or bare CR anywhere marks the
//! message as refused (it is still read to its real end, so the session stays
//! in step, and what follows a smuggled end-of-data is body text, never a
//! second message). The receiver never holds more than the size limit.
//!
//! It also counts the header's Received fields: a message that has passed
//! through as many hops as the limit has looped; and it takes the
//! `X-Spate-Tenant:` and `X-Spate-Campaign:` fields out of the header (they
//! go to the spool record's envelope, never to the body: they are neither
//! signed nor delivered).

/// Longest text line, CRLF included (RFC 5321 4.5.3.1.6).
pub const TEXT_LINE_BYTES_MAX: usize = 1000;

/// Why a message was refused after its end of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    BareLf,
    BareCr,
    LineTooLong,
    TooBig,
    HeaderTooBig,
    /// As many Received header fields as the loop limit, or more.
    MailLoop,
    /// The core's DATA memory budget is spent (set by the session).
    NoMemory,
    /// An `X-Spate-Tenant:` or `X-Spate-Campaign:` field that is not one
    /// name (1 to 64 letters, digits, '.', '_', '-'), or is given twice.
    BadTag,
}

/// Which tag a header field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Tenant,
    Campaign,
}

const TENANT_FIELD: &[u8] = b"x-spate-tenant:";
const MESSAGE_ID_FIELD: &[u8] = b"message-id:";
/// Longest Message-ID kept (RFC 5322 2.1.1's line length); a longer one
/// is not kept at all.
pub const MESSAGE_ID_BYTES_MAX: usize = 998;
const CAMPAIGN_FIELD: &[u8] = b"x-spate-campaign:";

pub struct DataReceiver {
    max_bytes: usize,
    max_header_bytes: usize,
    size: usize,
    /// Still in the header section (no empty line seen yet).
    in_header: bool,
    /// The previous line ended in CRLF (true at the start of DATA).
    prev_crlf: bool,
    /// Inside a line longer than the limit, discarding up to its LF.
    in_long_line: bool,
    /// Received header fields seen, and how many make a loop.
    received: usize,
    received_max: usize,
    /// The tag field being read (a folded one goes on over lines).
    in_tag: Option<Tag>,
    /// Each tag's value as read (unfolded, untrimmed); `None`: not given.
    tenant: Option<Vec<u8>>,
    campaign: Option<Vec<u8>>,
    /// The first Message-ID field's value as read (unfolded), and whether
    /// the field goes on over the next line.
    message_id: Option<Vec<u8>>,
    in_message_id: bool,
    error: Option<DataError>,
}

/// What `feed` did.
#[derive(Debug, PartialEq, Eq)]
pub struct Fed {
    pub consumed: usize,
    /// End of data was reached; `Err` if the message is refused.
    pub done: Option<Result<(), DataError>>,
}

impl DataReceiver {
    pub fn new(max_bytes: usize) -> DataReceiver {
        DataReceiver {
            max_bytes,
            max_header_bytes: usize::MAX,
            size: 0,
            in_header: true,
            prev_crlf: true,
            in_long_line: false,
            received: 0,
            received_max: usize::MAX,
            in_tag: None,
            tenant: None,
            campaign: None,
            message_id: None,
            in_message_id: false,
            error: None,
        }
    }

    /// The tenant and campaign the header named (empty for none), once the
    /// message has ended without error.
    pub fn tags(&self) -> Result<(&[u8], &[u8]), DataError> {
        fn check(v: &Option<Vec<u8>>) -> Result<&[u8], DataError> {
            let Some(v) = v else { return Ok(&[]) };
            let name = v.trim_ascii();
            if spool_format::is_tag(name) {
                Ok(name)
            } else {
                Err(DataError::BadTag)
            }
        }
        Ok((check(&self.tenant)?, check(&self.campaign)?))
    }

    /// Refuses a message with `max` Received header fields or more as a
    /// mail loop (RFC 5321 6.3).
    pub fn loop_limit(mut self, max: usize) -> DataReceiver {
        self.received_max = max;
        self
    }

    /// Refuses the message from here on: the rest is read to its end but
    /// not kept.
    pub fn refuse(&mut self, e: DataError) {
        self.fail(e);
    }

    /// Whether the message is already refused (nothing more is kept).
    pub fn is_refused(&self) -> bool {
        self.error.is_some()
    }

    /// The Received header fields counted so far.
    pub fn received_fields(&self) -> usize {
        self.received
    }

    /// Refuses a message whose header section (up to the first empty line)
    /// is over `max` bytes: a huge header, or thousands of folded lines.
    pub fn header_limit(mut self, max: usize) -> DataReceiver {
        self.max_header_bytes = max;
        self
    }

    /// Processes the complete lines at the front of `input`, appending body
    /// bytes to `out`. A partial line is left unconsumed unless it is already
    /// over the line limit.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Fed {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                if rest.len() > TEXT_LINE_BYTES_MAX {
                    self.fail(DataError::LineTooLong);
                    self.in_long_line = true;
                    return Fed {
                        consumed: input.len(),
                        done: None,
                    };
                }
                break;
            };
            let line = &rest[..=lf];
            pos += line.len();
            if self.line(line, out) {
                return Fed {
                    consumed: pos,
                    done: Some(self.error.map_or(Ok(()), Err)),
                };
            }
        }
        Fed {
            consumed: pos,
            done: None,
        }
    }

    /// Handles one line including its LF; true at end of data.
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        let crlf = line.len() >= 2 && line[line.len() - 2] == b'\r';
        if std::mem::take(&mut self.in_long_line) {
            self.prev_crlf = crlf;
            return false;
        }
        if crlf && line == b".\r\n" && self.prev_crlf {
            return true;
        }
        let content = &line[..line.len() - if crlf { 2 } else { 1 }];
        self.prev_crlf = crlf;
        if !crlf {
            self.fail(DataError::BareLf);
        }
        if memchr::memchr(b'\r', content).is_some() {
            self.fail(DataError::BareCr);
        }
        if line.len() > TEXT_LINE_BYTES_MAX {
            self.fail(DataError::LineTooLong);
        }
        if self.error.is_some() {
            return false;
        }
        let unstuffed = if line[0] == b'.' { &line[1..] } else { line };
        self.size += unstuffed.len();
        if self.size > self.max_bytes {
            self.fail(DataError::TooBig);
            return false;
        }
        if self.in_header {
            self.in_header = unstuffed != b"\r\n";
            if self.in_header && self.size > self.max_header_bytes {
                self.fail(DataError::HeaderTooBig);
                return false;
            }
            if is_received_field(unstuffed) {
                self.received += 1;
                if self.received >= self.received_max {
                    self.fail(DataError::MailLoop);
                    return false;
                }
            }
            self.note_message_id(unstuffed);
            if self.take_tag(unstuffed) {
                return false;
            }
        }
        out.extend_from_slice(unstuffed);
        false
    }

    /// The message's Message-ID (the first field's, without angle
    /// brackets), for the delivery log; `None` if it has none.
    pub fn message_id(&self) -> Option<String> {
        let v = self.message_id.as_ref()?;
        let v = String::from_utf8_lossy(v.trim_ascii());
        let v = v.trim_start_matches('<').trim_end_matches('>');
        (!v.is_empty() && v.len() <= MESSAGE_ID_BYTES_MAX).then(|| v.to_string())
    }

    /// Keeps the first Message-ID field's value (the line stays in the body).
    fn note_message_id(&mut self, line: &[u8]) {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        let value = if self.in_message_id && folded {
            line
        } else {
            self.in_message_id = false;
            let n = MESSAGE_ID_FIELD.len();
            let starts = line.len() >= n && line[..n].eq_ignore_ascii_case(MESSAGE_ID_FIELD);
            if !starts || self.message_id.is_some() {
                return;
            }
            self.in_message_id = true;
            self.message_id = Some(Vec::new());
            &line[n..]
        };
        let value = value.strip_suffix(b"\r\n").unwrap_or(value);
        let kept = self.message_id.get_or_insert_with(Vec::new);
        if kept.len() + value.len() <= MESSAGE_ID_BYTES_MAX + 2 {
            kept.extend_from_slice(value);
        } else {
            // Too long to be one: kept as none (and no longer read).
            kept.clear();
            kept.extend_from_slice(&[b'x'; MESSAGE_ID_BYTES_MAX + 1]);
            self.in_message_id = false;
        }
    }

    /// Keeps a tag field's line out of the body; true if it was one.
    fn take_tag(&mut self, line: &[u8]) -> bool {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        let (tag, value) = match self.in_tag {
            Some(tag) if folded => (tag, line),
            _ => {
                let starts = |name: &[u8]| {
                    line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name)
                };
                self.in_tag = if starts(TENANT_FIELD) {
                    Some(Tag::Tenant)
                } else if starts(CAMPAIGN_FIELD) {
                    Some(Tag::Campaign)
                } else {
                    None
                };
                let Some(tag) = self.in_tag else { return false };
                let name = match tag {
                    Tag::Tenant => TENANT_FIELD.len(),
                    Tag::Campaign => CAMPAIGN_FIELD.len(),
                };
                let slot = match tag {
                    Tag::Tenant => &mut self.tenant,
                    Tag::Campaign => &mut self.campaign,
                };
                if slot.replace(Vec::new()).is_some() {
                    self.fail(DataError::BadTag);
                }
                (tag, &line[name..])
            }
        };
        let slot = match tag {
            Tag::Tenant => &mut self.tenant,
            Tag::Campaign => &mut self.campaign,
        };
        let value = value.strip_suffix(b"\r\n").unwrap_or(value);
        let slot = slot.get_or_insert_with(Vec::new);
        if slot.len() + value.len() <= 2 * spool_format::TAG_BYTES_MAX {
            slot.extend_from_slice(value);
        } else {
            self.fail(DataError::BadTag);
        }
        true
    }

    fn fail(&mut self, e: DataError) {
        self.error.get_or_insert(e);
    }

    /// Body bytes accepted so far.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// Whether a header line starts a Received field (the name is matched
/// without regard to case; RFC 5322 allows no space before the colon).
fn is_received_field(line: &[u8]) -> bool {
    line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_message_id_is_kept_unfolded_and_a_huge_one_is_not() {
        let mut rx = DataReceiver::new(100_000);
        let msg = b"Subject: x\r\nMESSAGE-ID:\r\n <abc@ex.org>\r\nMessage-ID: <second@ex.org>\r\n\r\nMessage-ID: <body@ex.org>\r\n.\r\n";
        assert_eq!(rx.feed(msg, &mut Vec::new()).done, Some(Ok(())));
        assert_eq!(rx.message_id().as_deref(), Some("abc@ex.org"));
        let mut rx = DataReceiver::new(100_000);
        let a = "a".repeat(600);
        let huge = format!("Message-ID: <{a}\r\n {a}@ex.org>\r\n\r\nx\r\n.\r\n");
        assert_eq!(rx.feed(huge.as_bytes(), &mut Vec::new()).done, Some(Ok(())));
        assert_eq!(rx.message_id(), None);
        let mut rx = DataReceiver::new(100_000);
        assert_eq!(
            rx.feed(b"Subject: x\r\n\r\n.\r\n", &mut Vec::new()).done,
            Some(Ok(()))
        );
        assert_eq!(rx.message_id(), None);
    }

    #[test]
    fn received_fields_in_the_header_are_counted_up_to_the_loop_limit() {
        let mut msg = Vec::new();
        for i in 0..5 {
            let name = if i % 2 == 0 { "Received" } else { "RECEIVED" };
            msg.extend_from_slice(format!("{name}: from h{i}\r\n\tby x; date\r\n").as_bytes());
        }
        msg.extend_from_slice(b"Subject: x\r\n\r\nReceived: in the body\r\n.\r\n");
        let mut rx = DataReceiver::new(10_000).loop_limit(6);
        assert_eq!(rx.feed(&msg, &mut Vec::new()).done, Some(Ok(())));
        assert_eq!(rx.received_fields(), 5, "the body's line is no field");
        let mut rx = DataReceiver::new(10_000).loop_limit(5);
        let fed = rx.feed(&msg, &mut Vec::new());
        assert_eq!(fed.done, Some(Err(DataError::MailLoop)));
        assert_eq!(fed.consumed, msg.len(), "read to the real end");
    }

    #[test]
    fn tag_fields_leave_the_header_for_the_envelope() {
        let msg = b"From: a@x\r\nX-Spate-Tenant:  acme \r\nx-spate-campaign:\r\n black-friday_1\r\nSubject: x\r\n\r\nX-Spate-Tenant: body\r\n.\r\n";
        let mut rx = DataReceiver::new(10_000);
        let mut out = Vec::new();
        assert_eq!(rx.feed(msg, &mut out).done, Some(Ok(())));
        assert_eq!(
            out,
            b"From: a@x\r\nSubject: x\r\n\r\nX-Spate-Tenant: body\r\n"
        );
        assert_eq!(rx.tags(), Ok((&b"acme"[..], &b"black-friday_1"[..])));
        let none = DataReceiver::new(10);
        assert_eq!(none.tags(), Ok((&b""[..], &b""[..])));
        for bad in [
            &b"X-Spate-Tenant: two words\r\n\r\n.\r\n"[..],
            b"X-Spate-Tenant:\r\n\r\n.\r\n",
            b"X-Spate-Tenant: a\r\nX-Spate-Tenant: b\r\n\r\n.\r\n",
        ] {
            let mut rx = DataReceiver::new(10_000);
            let done = rx.feed(bad, &mut Vec::new()).done;
            let tags = rx.tags().map(|_| ());
            assert!(
                done == Some(Err(DataError::BadTag)) || tags == Err(DataError::BadTag),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_refused_message_is_read_to_its_end_and_not_kept() {
        let mut rx = DataReceiver::new(10_000);
        let mut out = Vec::new();
        rx.feed(b"Subject: x\r\n\r\n", &mut out);
        rx.refuse(DataError::NoMemory);
        out.clear();
        let fed = rx.feed(b"more body\r\n.\r\n", &mut out);
        assert_eq!(fed.done, Some(Err(DataError::NoMemory)));
        assert!(out.is_empty());
    }

    fn run(input: &[u8], max: usize) -> (Option<Result<(), DataError>>, Vec<u8>, usize) {
        let mut rx = DataReceiver::new(max);
        let mut out = Vec::new();
        let fed = rx.feed(input, &mut out);
        (fed.done, out, fed.consumed)
    }

    #[test]
    fn plain_message_with_dot_stuffing() {
        let (done, out, used) = run(b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n", 1000);
        assert_eq!(done, Some(Ok(())));
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
        assert_eq!(used, 30);
    }

    #[test]
    fn end_of_data_split_across_reads() {
        let mut rx = DataReceiver::new(1000);
        let mut out = Vec::new();
        let a = rx.feed(b"line\r\n.", &mut out);
        assert_eq!(
            a,
            Fed {
                consumed: 6,
                done: None
            }
        );
        let b = rx.feed(b".\r\n", &mut out);
        assert_eq!(b.done, Some(Ok(())));
    }

    #[test]
    fn smuggling_variants_never_end_data_early() {
        let smuggled = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nevil\r\n";
        for end in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r",
            b"\r.\n",
            b"\r\n.\r",
            b"\r\n.\n",
            b"\r\n\x00.\r\n",
        ] {
            let mut msg = b"Subject: x\r\n\r\nhello".to_vec();
            msg.extend_from_slice(end);
            msg.extend_from_slice(smuggled);
            msg.extend_from_slice(b".\r\n");
            let (done, _, used) = run(&msg, 10_000);
            assert_eq!(used, msg.len(), "data ended early for {end:?}");
            assert!(matches!(done, Some(Err(_)) | Some(Ok(()))), "{end:?}");
            if end != b"\r\n\x00.\r\n" {
                assert!(
                    matches!(done, Some(Err(DataError::BareLf | DataError::BareCr))),
                    "{end:?} accepted: {done:?}"
                );
            }
        }
    }

    #[test]
    fn a_header_over_the_limit_is_refused_and_a_body_of_any_size_is_not() {
        let mut folded = b"Subject: x\r\nX-Folded: a\r\n".to_vec();
        for _ in 0..5000 {
            folded.extend_from_slice(b"\t continuation of a folded header line\r\n");
        }
        folded.extend_from_slice(b"\r\nbody\r\n.\r\n");
        let mut rx = DataReceiver::new(1 << 20).header_limit(64 * 1024);
        let mut out = Vec::new();
        let fed = rx.feed(&folded, &mut out);
        assert_eq!(fed.done, Some(Err(DataError::HeaderTooBig)));
        assert_eq!(fed.consumed, folded.len(), "read to the real end");
        let mut big_body = b"Subject: x\r\n\r\n".to_vec();
        for _ in 0..5000 {
            big_body.extend_from_slice(b"a body line of forty bytes or thereabout\r\n");
        }
        big_body.extend_from_slice(b".\r\n");
        let mut rx = DataReceiver::new(1 << 20).header_limit(64 * 1024);
        assert_eq!(rx.feed(&big_body, &mut Vec::new()).done, Some(Ok(())));
    }

    #[test]
    fn long_lines_refused_but_stay_in_sync() {
        let mut msg = vec![b'a'; 1500];
        msg.extend_from_slice(b"\r\nok\r\n.\r\n");
        let mut rx = DataReceiver::new(10_000);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut done = None;
        while done.is_none() {
            let fed = rx.feed(&msg[pos..(pos + 1024).min(msg.len())], &mut out);
            pos += fed.consumed;
            done = fed.done;
        }
        assert_eq!(done, Some(Err(DataError::LineTooLong)));
        assert_eq!(pos, msg.len());
    }

    #[test]
    fn line_of_exactly_1000_octets_is_fine() {
        let mut msg = vec![b'a'; 998];
        msg.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&msg, 10_000).0, Some(Ok(())));
    }

    #[test]
    fn oversize_is_refused_and_memory_bounded() {
        let mut msg = Vec::new();
        for _ in 0..100 {
            msg.extend_from_slice(&[b'x'; 98]);
            msg.extend_from_slice(b"\r\n");
        }
        msg.extend_from_slice(b".\r\n");
        let (done, out, _) = run(&msg, 1000);
        assert_eq!(done, Some(Err(DataError::TooBig)));
        assert!(out.len() <= 1000);
    }
}
