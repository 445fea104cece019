//! Reading one complaint report in the Abuse Reporting Format (RFC 5965):
//! a `multipart/report; report-type=feedback-report` message whose parts are
//! a note for people, a `message/feedback-report` part of `Name: value`
//! fields, and the original message (`message/rfc822`) or its header
//! (`text/rfc822-headers`).
//!
//! Owns: turning the report's bytes into a [`Report`], including which of
//! spate's queue entries the original was (from spate's own `Received`
//! field, else from a Message-ID spate composed).
//!
//! The MIME structure and every header block come from `mail-parser`, the
//! library spate already parses mail with; this file only picks fields out.
//!
//! Every byte is the reporter's (or a forger's): values are bounded
//! ([`FIELD_CHARS_MAX`], [`ADDRESS_BYTES_MAX`], [`RCPT_TO_MAX`]), folded
//! whitespace is collapsed, a value with control characters is dropped
//! rather than passed on, and nothing here may panic, whatever the input.
//! Must never do I/O or act on a report: it only reads one.

use mail_parser::{HeaderName, Message, MessageParser, MessagePart, MimeHeaders};

/// The largest report read; providers send the original whole, so a few
/// MB are normal, but nothing legitimate comes near this.
pub const REPORT_BYTES_MAX: usize = 10 * 1024 * 1024;
/// A field value longer than this (a header line's limit, RFC 5322 2.1.1)
/// is ignored as if absent.
pub const FIELD_CHARS_MAX: usize = 998;
/// An address longer than this is ignored: spate's own limit on a path.
pub const ADDRESS_BYTES_MAX: usize = crate::listener::command::PATH_BYTES_MAX;
/// `Original-Rcpt-To` fields kept; the rest are ignored.
pub const RCPT_TO_MAX: usize = 64;
/// A `Feedback-Type` longer than this is refused: the registered types
/// are short tokens ("abuse", "auth-failure", "not-spam").
pub const FEEDBACK_TYPE_CHARS_MAX: usize = 32;
/// Parts of the report looked at for the feedback fields and the original
/// (RFC 5965 has three).
pub const PARTS_SCANNED_MAX: usize = 32;
/// Received fields of the original looked at for spate's own.
pub const RECEIVED_SCANNED_MAX: usize = 100;
/// Words of a Received field looked at (spate's has about 17).
const RECEIVED_TOKENS_MAX: usize = 64;
/// Hex digits in a spate queue id.
const SPATE_ID_DIGITS: usize = 16;

/// What one complaint report says. Every field is as the reporter wrote it
/// (bounded and cleaned, not verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Lowercased, e.g. "abuse", "fraud", "virus", "other", "not-spam".
    pub feedback_type: String,
    pub user_agent: Option<String>,
    /// The envelope sender, without `<>`; `None` also for the null path.
    pub original_mail_from: Option<String>,
    /// The envelope recipients, without `<>`; often absent (redacted).
    pub original_rcpt_to: Vec<String>,
    pub reported_domain: Option<String>,
    pub source_ip: Option<String>,
    pub arrival_date: Option<String>,
    /// The original message's Message-ID, without `<>`.
    pub original_message_id: Option<String>,
    /// The original's To: address (the complainer when Original-Rcpt-To is
    /// absent; may be redacted).
    pub original_to: Option<String>,
    /// spate's own queue id of the original: from the topmost Received
    /// field of the original that spate wrote, else from a Message-ID of
    /// the form spate composes (`<16 hex digits@host>`).
    pub spate_id: Option<u64>,
}

impl Report {
    /// Who complained: the first Original-Rcpt-To, else the original's To,
    /// else None.
    pub fn complainer(&self) -> Option<&str> {
        self.original_rcpt_to
            .first()
            .or(self.original_to.as_ref())
            .map(String::as_str)
    }
}

/// Why bytes are not a usable complaint report. Messages may quote the
/// report, escaped and cut short, never whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArfError {
    #[error("too big: {bytes} bytes, more than {REPORT_BYTES_MAX}")]
    TooBig { bytes: usize },
    #[error("not a mail message: no header fields")]
    NotAMessage,
    #[error("not a multipart/report (Content-Type is {0:?})")]
    NotMultipartReport(String),
    #[error("multipart/report without a report-type")]
    ReportTypeMissing,
    #[error("report-type is {0:?}, not feedback-report")]
    WrongReportType(String),
    #[error("no message/feedback-report part")]
    NoFeedbackPart,
    #[error("Feedback-Type missing")]
    FeedbackTypeMissing,
    #[error("Feedback-Type {0:?} is not a feedback type")]
    FeedbackTypeBad(String),
}

/// Reads one complaint report.
pub fn parse(bytes: &[u8]) -> Result<Report, ArfError> {
    if bytes.len() > REPORT_BYTES_MAX {
        return Err(ArfError::TooBig { bytes: bytes.len() });
    }
    let parser = parser();
    let message = parser.parse(bytes).ok_or(ArfError::NotAMessage)?;
    check_report_type(&message)?;
    let parts = || {
        let ids = message.root_part().sub_parts().unwrap_or_default();
        ids.iter()
            .take(PARTS_SCANNED_MAX)
            .filter_map(|id| message.part(*id))
    };
    let feedback = parts()
        .find(|p| p.is_content_type("message", "feedback-report"))
        .ok_or(ArfError::NoFeedbackPart)?;
    // The part's body (transfer encoding already undone) is a header
    // block in RFC 5322 syntax (RFC 5965 3.1), so mail-parser reads it as
    // one: folding, case-insensitive names and repeats come from there.
    let fields = parser
        .parse_headers(feedback.contents())
        .ok_or(ArfError::FeedbackTypeMissing)?;
    let mut report = report_fields(&fields)?;
    if let Some(original) = parts().find_map(|p| original_facts(&parser, p)) {
        report.original_message_id = original.message_id;
        report.original_to = original.to;
        report.spate_id = original.spate_id;
    }
    Ok(report)
}

/// One parser for the report, its nested original and the header blocks:
/// MIME fields, addresses and ids parsed; Received kept raw, since the
/// comment "(spate)" that marks spate's own field is what is looked for;
/// every other field raw (the feedback fields are not registered headers).
fn parser() -> MessageParser {
    MessageParser::new()
        .with_mime_headers()
        .with_message_ids()
        .header_address(HeaderName::To)
        .header_raw(HeaderName::Received)
}

fn check_report_type(message: &Message<'_>) -> Result<(), ArfError> {
    let root = message.root_part();
    let Some(ct) = root.content_type() else {
        return Err(ArfError::NotMultipartReport("none".into()));
    };
    let subtype = ct.subtype().unwrap_or_default();
    if !(ct.ctype().eq_ignore_ascii_case("multipart") && subtype.eq_ignore_ascii_case("report")) {
        let shown = format!("{}/{}", ct.ctype(), subtype);
        return Err(ArfError::NotMultipartReport(shorten(&shown)));
    }
    match ct.attribute("report-type") {
        None => Err(ArfError::ReportTypeMissing),
        Some(t) if t.trim().eq_ignore_ascii_case("feedback-report") => Ok(()),
        Some(t) => Err(ArfError::WrongReportType(shorten(t))),
    }
}

/// The fields of the `message/feedback-report` part (a header block,
/// parsed by `mail-parser`); the original's facts are filled in later.
fn report_fields(fields: &Message<'_>) -> Result<Report, ArfError> {
    let first = |name: &str| field_values(fields, name).find_map(clean);
    let feedback_type = field_values(fields, "Feedback-Type")
        .next()
        .and_then(clean)
        .ok_or(ArfError::FeedbackTypeMissing)?;
    Ok(Report {
        feedback_type: feedback_type_token(&feedback_type)?,
        user_agent: first("User-Agent"),
        original_mail_from: field_values(fields, "Original-Mail-From")
            .next()
            .and_then(address),
        original_rcpt_to: field_values(fields, "Original-Rcpt-To")
            .filter_map(address)
            .take(RCPT_TO_MAX)
            .collect(),
        reported_domain: first("Reported-Domain"),
        source_ip: first("Source-IP"),
        arrival_date: first("Arrival-Date"),
        original_message_id: None,
        original_to: None,
        spate_id: None,
    })
}

/// The text of every field called `name` (case-insensitive), in order.
fn field_values<'a>(fields: &'a Message<'_>, name: &'a str) -> impl Iterator<Item = &'a str> {
    fields
        .headers()
        .iter()
        .filter(move |h| h.name().eq_ignore_ascii_case(name))
        .filter_map(|h| h.value().as_text())
}

/// A Feedback-Type value as a lowercase token (RFC 5965 3.1 `token`,
/// narrowed to what registered types use).
fn feedback_type_token(value: &str) -> Result<String, ArfError> {
    let ok = value.len() <= FEEDBACK_TYPE_CHARS_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(ArfError::FeedbackTypeBad(shorten(value)))
    }
}

/// What the report's copy of the original says about it.
struct OriginalFacts {
    message_id: Option<String>,
    to: Option<String>,
    spate_id: Option<u64>,
}

/// The facts of `part` if it is the original: a whole message
/// (`message/rfc822` or `message/global`, parsed by `mail-parser` already)
/// or a header block (`text/rfc822-headers`, `message/global-headers`).
fn original_facts(parser: &MessageParser, part: &MessagePart<'_>) -> Option<OriginalFacts> {
    if let Some(message) = part.message() {
        return Some(facts(message));
    }
    let headers_only = part.is_content_type("text", "rfc822-headers")
        || part.is_content_type("message", "global-headers");
    if !headers_only {
        return None;
    }
    let message = parser.parse_headers(part.contents())?;
    Some(facts(&message))
}

fn facts(original: &Message<'_>) -> OriginalFacts {
    let message_id = original.message_id().and_then(clean);
    let to = original
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address.as_deref())
        .and_then(address);
    let spate_id = original
        .headers()
        .iter()
        .filter(|h| h.name == HeaderName::Received)
        .take(RECEIVED_SCANNED_MAX)
        .filter_map(|h| h.value().as_text())
        .find_map(spate_received_id)
        .or_else(|| message_id.as_deref().and_then(spate_message_id));
    OriginalFacts {
        message_id,
        to,
        spate_id,
    }
}

/// The queue id in a Received field spate wrote:
/// `... by HOST (spate) with PROTO id 00000000000a0001 ...`. Any other
/// field, or a malformed id, is `None`.
fn spate_received_id(value: &str) -> Option<u64> {
    let tokens: Vec<&str> = value
        .split_ascii_whitespace()
        .take(RECEIVED_TOKENS_MAX)
        .collect();
    let by = tokens
        .windows(3)
        .position(|w| w[0].eq_ignore_ascii_case("by") && w[2] == "(spate)")?;
    let rest = &tokens[by + 3..];
    let id = rest.windows(2).find(|w| w[0].eq_ignore_ascii_case("id"))?[1];
    spate_hex(id.strip_suffix(';').unwrap_or(id))
}

/// The queue id in a Message-ID spate composed: `16 hex digits@host`
/// (already without `<>`).
fn spate_message_id(message_id: &str) -> Option<u64> {
    let (local, host) = message_id.split_once('@')?;
    if host.is_empty() {
        return None;
    }
    spate_hex(local)
}

/// Exactly 16 hex digits as a u64 (`from_str_radix` alone would also take
/// a sign and fewer digits).
fn spate_hex(s: &str) -> Option<u64> {
    if s.len() != SPATE_ID_DIGITS || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// A field value unfolded (runs of whitespace, CRLF included, made one
/// space) and trimmed; `None` if empty, longer than [`FIELD_CHARS_MAX`]
/// or holding other control characters.
fn clean(value: &str) -> Option<String> {
    if value.len() > FIELD_CHARS_MAX * 2 {
        return None; // too long even if most of it were folding
    }
    let mut out = String::with_capacity(value.len());
    for word in value.split_ascii_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    let bad = out.is_empty()
        || out.chars().count() > FIELD_CHARS_MAX
        || out.chars().any(char::is_control);
    (!bad).then_some(out)
}

/// An address field's value without `<>`: one word with an `@`, at most
/// [`ADDRESS_BYTES_MAX`] bytes; anything else (the null path `<>`
/// included) is `None`.
fn address(value: &str) -> Option<String> {
    let value = clean(value)?;
    let bare = value.strip_prefix('<').unwrap_or(&value);
    let bare = bare.strip_suffix('>').unwrap_or(bare);
    let ok = !bare.is_empty()
        && bare.len() <= ADDRESS_BYTES_MAX
        && bare.contains('@')
        && !bare.contains(|c: char| c.is_whitespace() || c == '<' || c == '>');
    ok.then(|| bare.to_string())
}

/// Reporter text put into an error: at most 64 characters, so that a log
/// line stays a line (errors print it with `{:?}`, which escapes).
fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABUSE: &[u8] = include_bytes!("../../tests/data/arf/abuse.eml");
    const HEADERS_ONLY: &[u8] = include_bytes!("../../tests/data/arf/headers-only.eml");
    const NO_RCPT_TO: &[u8] = include_bytes!("../../tests/data/arf/no-rcpt-to.eml");
    const NOT_A_REPORT: &[u8] = include_bytes!("../../tests/data/arf/not-a-report.eml");
    const MISSING_TYPE: &[u8] = include_bytes!("../../tests/data/arf/missing-feedback-type.eml");

    /// A minimal report around `fields` (the feedback part's body) and
    /// `original` (a message/rfc822 part's body).
    fn report(fields: &str, original: &str) -> Vec<u8> {
        format!(
            "Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\
             \r\n--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n\
             --b\r\nContent-Type: message/feedback-report\r\n\r\n{fields}\r\n\
             --b\r\nContent-Type: message/rfc822\r\n\r\n{original}\r\n--b--\r\n"
        )
        .into_bytes()
    }

    const SPATE_RECEIVED: &str = "Received: from client.example (client.example [127.0.0.1])\r\n\
        \tby mx.spate.example (spate) with ESMTP id 00000000000a0001\r\n\
        \tfor <bob@example.com>;\r\n\tFri, 04 Dec 2026 17:21:02 +0000\r\n";

    #[test]
    fn abuse_report_from_the_python_library() {
        let r = parse(ABUSE).unwrap();
        assert_eq!(
            r,
            Report {
                feedback_type: "abuse".into(),
                user_agent: Some("ExampleFBL/1.0".into()),
                original_mail_from: Some("bounces+tenant1@news.shop.example".into()),
                original_rcpt_to: vec!["bob@example.com".into()],
                reported_domain: Some("shop.example".into()),
                source_ip: Some("192.0.2.25".into()),
                arrival_date: Some("Fri, 04 Dec 2026 17:21:00 +0000".into()),
                original_message_id: Some("20261204172100.1234@app.shop.example".into()),
                original_to: Some("bob@example.com".into()),
                spate_id: Some(0xa0001),
            }
        );
        assert_eq!(r.complainer(), Some("bob@example.com"));
    }

    #[test]
    fn headers_only_report() {
        let r = parse(HEADERS_ONLY).unwrap();
        assert_eq!(r.feedback_type, "fraud");
        assert_eq!(r.spate_id, Some(0xa0001));
        assert_eq!(
            r.original_message_id.as_deref(),
            Some("20261204172100.1234@app.shop.example")
        );
        assert_eq!(r.original_to.as_deref(), Some("bob@example.com"));
        assert_eq!(r.source_ip, None);
    }

    #[test]
    fn without_rcpt_to_the_complainer_is_the_original_to() {
        let r = parse(NO_RCPT_TO).unwrap();
        assert!(r.original_rcpt_to.is_empty());
        assert_eq!(r.complainer(), Some("carol@example.net"));
        // No Received field: the id comes from spate's Message-ID.
        assert_eq!(r.spate_id, Some(0xb0002));
        assert_eq!(
            r.original_mail_from.as_deref(),
            Some("notices@spate.example")
        );
    }

    #[test]
    fn hand_written_malformed_reports() {
        assert_eq!(
            parse(NOT_A_REPORT),
            Err(ArfError::NotMultipartReport("multipart/mixed".into()))
        );
        assert_eq!(parse(MISSING_TYPE), Err(ArfError::FeedbackTypeMissing));
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        let e = parse(NOT_A_REPORT).unwrap_err().to_string();
        assert_eq!(
            e,
            "not a multipart/report (Content-Type is \"multipart/mixed\")"
        );
        let dsn = b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b--\r\n";
        assert_eq!(
            parse(dsn).unwrap_err().to_string(),
            "report-type is \"delivery-status\", not feedback-report"
        );
        let no_type = b"Content-Type: multipart/report; boundary=b\r\n\r\n--b--\r\n";
        assert_eq!(parse(no_type), Err(ArfError::ReportTypeMissing));
        let big = vec![b'a'; REPORT_BYTES_MAX + 1];
        assert_eq!(
            parse(&big).unwrap_err().to_string(),
            format!(
                "too big: {} bytes, more than {REPORT_BYTES_MAX}",
                REPORT_BYTES_MAX + 1
            )
        );
    }

    #[test]
    fn lf_line_ends_read_the_same() {
        let lf: Vec<u8> = String::from_utf8(ABUSE.to_vec())
            .unwrap()
            .replace("\r\n", "\n")
            .into();
        assert_eq!(parse(&lf), parse(ABUSE));
    }

    #[test]
    fn encoded_parts_are_decoded_by_the_library() {
        let fields = "Feedback-Type: virus\r\nOriginal-Rcpt-To: <d@x.example>\r\n";
        let original = format!("{SPATE_RECEIVED}To: e@x.example\r\n\r\nHi\r\n");
        let b64 = |s: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let report = format!(
            "Content-Type: multipart/report; report-type=\"Feedback-Report\"; boundary=b\r\n\r\n\
             --b\r\nContent-Type: Message/Feedback-Report\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {}\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {}\r\n--b--\r\n",
            b64(fields),
            b64(&original)
        );
        let r = parse(report.as_bytes()).unwrap();
        assert_eq!(r.feedback_type, "virus");
        assert_eq!(r.complainer(), Some("d@x.example"));
        assert_eq!(r.original_to.as_deref(), Some("e@x.example"));
        assert_eq!(r.spate_id, Some(0xa0001));
    }

    #[test]
    fn spate_received_field_wins_over_message_id() {
        let original = format!(
            "{SPATE_RECEIVED}Message-ID: <00000000000b0002@mx.spate.example>\r\n\r\nHi\r\n"
        );
        let r = parse(&report("Feedback-Type: abuse", &original)).unwrap();
        assert_eq!(r.spate_id, Some(0xa0001));
    }

    #[test]
    fn topmost_spate_received_field_is_taken() {
        let second = SPATE_RECEIVED.replace("00000000000a0001", "00000000000c0003");
        let original = format!("{SPATE_RECEIVED}{second}\r\nHi\r\n");
        let r = parse(&report("Feedback-Type: abuse", &original)).unwrap();
        assert_eq!(r.spate_id, Some(0xa0001));
    }

    #[test]
    fn received_variants() {
        let cases = [
            // No `for` clause: the id ends with ';'.
            (
                "by mx.spate.example (spate) with HTTP id 00000000000000ff; Fri, 04 Dec 2026",
                Some(0xff),
            ),
            (
                "from a (a [::1]) by mx (spate) with ESMTPS id ffffffffffffffff\r\n\tfor <x@y>; d",
                Some(u64::MAX),
            ),
            // Not spate's: no "(spate)" right after the `by` host.
            (
                "from a by mx.other.example with ESMTP id 00000000000a0001; d",
                None,
            ),
            (
                "from a (spate) by mx with ESMTP id 00000000000a0001; d",
                None,
            ),
            // Malformed ids.
            ("by mx (spate) with ESMTP id 0a0001; d", None),
            ("by mx (spate) with ESMTP id +00000000000a001; d", None),
            ("by mx (spate) with ESMTP id 00000000000a000g; d", None),
            ("by mx (spate) with ESMTP id", None),
            ("by mx (spate)", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(spate_received_id(value), want, "{value:?}");
        }
    }

    #[test]
    fn message_id_variants() {
        assert_eq!(spate_message_id("00000000000b0002@h"), Some(0xb0002));
        assert_eq!(spate_message_id("00000000000b0002@"), None);
        assert_eq!(spate_message_id("00000000000b0002"), None);
        assert_eq!(
            spate_message_id("20261204172100.1234@app.shop.example"),
            None
        );
        assert_eq!(spate_message_id("00000000000b00020@h"), None);
    }

    #[test]
    fn fields_are_unfolded_lowercased_and_repeatable() {
        let fields = "Feedback-Type: ABUSE\r\nUser-Agent: Some\r\n  Agent/2\r\n\
                      Original-Rcpt-To: <a@x.example>\r\nOriginal-Rcpt-To: b@x.example\r\n\
                      original-rcpt-to: <bad address@x>\r\nOriginal-Mail-From: <>\r\n";
        let r = parse(&report(fields, "To: c@x.example\r\n\r\nHi")).unwrap();
        assert_eq!(r.feedback_type, "abuse");
        assert_eq!(r.user_agent.as_deref(), Some("Some Agent/2"));
        assert_eq!(r.original_rcpt_to, ["a@x.example", "b@x.example"]);
        assert_eq!(r.original_mail_from, None);
        assert_eq!(r.complainer(), Some("a@x.example"));
    }

    #[test]
    fn bad_feedback_types_are_refused() {
        let long = format!("Feedback-Type: {}", "a".repeat(FEEDBACK_TYPE_CHARS_MAX + 1));
        assert!(matches!(
            parse(&report(&long, "To: c@x\r\n\r\n")),
            Err(ArfError::FeedbackTypeBad(_))
        ));
        assert_eq!(
            parse(&report("Feedback-Type: ab use", "To: c@x\r\n\r\n")),
            Err(ArfError::FeedbackTypeBad("ab use".into()))
        );
        assert_eq!(
            parse(&report("Feedback-Type:  \r\n", "To: c@x\r\n\r\n")),
            Err(ArfError::FeedbackTypeMissing)
        );
    }

    #[test]
    fn values_are_bounded() {
        let long = "x".repeat(FIELD_CHARS_MAX + 1);
        let long_addr = format!("<{}@x.example>", "a".repeat(ADDRESS_BYTES_MAX));
        let mut fields = format!(
            "Feedback-Type: abuse\r\nUser-Agent: {long}\r\nOriginal-Mail-From: {long_addr}\r\n"
        );
        for i in 0..RCPT_TO_MAX + 10 {
            fields.push_str(&format!("Original-Rcpt-To: <r{i}@x.example>\r\n"));
        }
        let r = parse(&report(&fields, "To: c@x\r\n\r\n")).unwrap();
        assert_eq!(r.user_agent, None);
        assert_eq!(r.original_mail_from, None);
        assert_eq!(r.original_rcpt_to.len(), RCPT_TO_MAX);
        assert_eq!(r.original_rcpt_to[0], "r0@x.example");
    }

    #[test]
    fn control_characters_drop_a_value() {
        assert_eq!(clean("a\u{7}b"), None);
        assert_eq!(clean(" a \r\n\t b "), Some("a b".into()));
        assert_eq!(address("<a\u{0}@x>"), None);
        assert_eq!(address("nobody"), None);
    }

    #[test]
    fn missing_parts() {
        let only_text =
            b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n\
              --b\r\nContent-Type: text/plain\r\n\r\nHi\r\n--b--\r\n";
        assert_eq!(parse(only_text), Err(ArfError::NoFeedbackPart));
        // The original is optional in practice: the report still counts.
        let no_original = b"Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n\
              --b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n--b--\r\n";
        let r = parse(no_original).unwrap();
        assert_eq!(
            (r.feedback_type.as_str(), r.spate_id, r.complainer()),
            ("abuse", None, None)
        );
    }

    #[test]
    fn truncated_reports_never_panic() {
        for fixture in [ABUSE, HEADERS_ONLY, NO_RCPT_TO, NOT_A_REPORT, MISSING_TYPE] {
            for end in 0..fixture.len() {
                let _ = parse(&fixture[..end]);
            }
        }
        // Cut inside the feedback part: its fields so far still count.
        let cut = ABUSE
            .windows(14)
            .position(|w| w == b"Version: 1\r\nOr")
            .unwrap();
        let r = parse(&ABUSE[..cut]).unwrap();
        assert_eq!((r.feedback_type.as_str(), r.spate_id), ("abuse", None));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 600) as usize;
            let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert!(parse(&garbage).is_err());
        }
        // Bytes flipped in a real report.
        for _ in 0..2000 {
            let mut r = ABUSE.to_vec();
            let at = (next() as usize) % r.len();
            r[at] = next() as u8;
            let _ = parse(&r);
        }
    }

    #[test]
    fn huge_and_deep_inputs_never_panic() {
        let huge_header = format!("X-Long: {}\r\n\r\nbody", "a".repeat(REPORT_BYTES_MAX - 100));
        assert!(matches!(
            parse(huge_header.as_bytes()),
            Err(ArfError::NotMultipartReport(_))
        ));
        let folded = format!(
            "Feedback-Type: abuse\r\nUser-Agent: a{}\r\n",
            "\r\n b".repeat(FIELD_CHARS_MAX)
        );
        assert_eq!(
            parse(&report(&folded, "To: c@x\r\n\r\n"))
                .unwrap()
                .user_agent,
            None
        );
        let mut deep = String::new();
        for i in 0..5000 {
            deep.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
            ));
        }
        assert!(parse(deep.as_bytes()).is_err());
        let mut nested = String::new();
        for _ in 0..5000 {
            nested.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        assert!(parse(nested.as_bytes()).is_err());
    }
}
