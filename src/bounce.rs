//! Delivery status notifications (RFC 3464) for recipients that bounced or
//! expired, addressed to the original envelope sender.
//!
//! Pure: builds the message bytes; `delivery` spools and routes them like any
//! other message, from the null sender `<>` so a DSN never causes a DSN.
//!
//! Every line it writes is at most [`LINE_BYTES_MAX`] octets before its CRLF
//! (RFC 5322 2.1.1), whatever the lengths of the addresses and replies it
//! quotes: long values are folded at spaces, and a word longer than a line
//! is cut. A receiver may refuse a longer line, and a refused DSN is a lost
//! one (its sender is `<>`).

use crate::message::MessageHandle;

/// How much of the original message's header the DSN quotes.
pub const QUOTED_HEADER_BYTES_MAX: usize = 16 * 1024;

/// One recipient the DSN reports on.
#[derive(Debug, Clone)]
pub struct Failure {
    pub recipient: String,
    /// The SMTP reply or the local reason, e.g. "550 5.1.1 no such user".
    pub diagnostic: String,
    /// True when the message expired in the queue rather than being refused.
    pub expired: bool,
    /// The host that gave the reply, if one did.
    pub remote_mta: Option<String>,
}

impl Failure {
    /// The RFC 3463 status: taken from the reply when it has one.
    pub fn status(&self) -> String {
        if self.expired {
            return "4.4.7".into();
        }
        let code = self
            .diagnostic
            .split_ascii_whitespace()
            .nth(1)
            .unwrap_or("");
        let parts: Vec<&str> = code.split('.').collect();
        let numeric = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        if numeric && parts[0] == "5" {
            code.to_string()
        } else {
            "5.0.0".into()
        }
    }
}

/// Builds the DSN for `failures` of `original`, as the bytes of a message
/// (CRLF line ends, no bare CR or LF).
pub fn build(
    reporting_mta: &str,
    dsn_id: &str,
    original: &MessageHandle,
    sender: &str,
    failures: &[Failure],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<u8> {
    let boundary = format!("{dsn_id}/{reporting_mta}");
    let date = now.to_rfc2822();
    let arrival = chrono::DateTime::from_timestamp_millis(original.envelope().received_ms() as i64)
        .unwrap_or(now)
        .to_rfc2822();
    let mut m = String::with_capacity(2048);
    m += &format!("From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n");
    m += &format!("To: <{}>\r\n", clean(sender));
    m += "Subject: Undelivered Mail Returned to Sender\r\n";
    m += &format!("Date: {date}\r\n");
    m += &format!("Message-ID: <{dsn_id}@{reporting_mta}>\r\n");
    m += "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n";
    m += &format!("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n");
    m += "This is a MIME-encapsulated message.\r\n\r\n";
    m += &format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    m += &format!("This is the mail system at {reporting_mta}.\r\n\r\nYour message could not be delivered to the following recipients:\r\n\r\n");
    for f in failures {
        let first = format!("<{}>: ", clean(&f.recipient));
        fold(
            &mut m,
            &first,
            &clean_diagnostic(&f.diagnostic),
            TEXT_INDENT,
        );
    }
    m += &format!("\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n");
    m += &format!("Reporting-MTA: dns; {reporting_mta}\r\nX-Spate-Queue-ID: {:016x}\r\nArrival-Date: {arrival}\r\n", original.id);
    for f in failures {
        m += "\r\n";
        m += &format!("Final-Recipient: rfc822; {}\r\n", clean(&f.recipient));
        m += &format!("Action: failed\r\nStatus: {}\r\n", f.status());
        if let Some(remote) = &f.remote_mta {
            m += &format!("Remote-MTA: dns; {}\r\n", clean(remote));
        }
        let kind = if f.expired || f.remote_mta.is_none() {
            "X-Spate"
        } else {
            "smtp"
        };
        let first = format!("Diagnostic-Code: {kind}; ");
        fold(
            &mut m,
            &first,
            &clean_diagnostic(&f.diagnostic),
            HEADER_INDENT,
        );
        m += &format!("Last-Attempt-Date: {date}\r\n");
    }
    m += &format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n");
    let mut out = m.into_bytes();
    out.extend_from_slice(quoted_header(&original.body()));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// Longest line written, CRLF not counted (RFC 5322 2.1.1).
pub const LINE_BYTES_MAX: usize = 998;
/// Lines are folded at a space to stay within this where the words allow
/// (RFC 5322 2.1.1's 78 characters).
pub const LINE_FOLD_AT: usize = 78;
/// Longest address or host name quoted (a path is at most 256 octets).
/// Addresses are never folded (a fold would change them); with the longest
/// field name before it a line stays well within [`LINE_BYTES_MAX`].
pub const DSN_VALUE_BYTES_MAX: usize = 800;
/// Longest diagnostic quoted: a reply of many lines, joined, is cut here.
pub const DIAGNOSTIC_BYTES_MAX: usize = 2048;
/// How continuation lines start: header fields fold with whitespace
/// (RFC 5322 2.2.3), the text part indents.
const HEADER_INDENT: &str = " ";
const TEXT_INDENT: &str = "    ";

/// CR, LF and other controls become spaces, and a value is cut at `max`
/// octets (on a character boundary).
fn clean_to(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn clean(s: &str) -> String {
    clean_to(s, DSN_VALUE_BYTES_MAX)
}

fn clean_diagnostic(s: &str) -> String {
    clean_to(s, DIAGNOSTIC_BYTES_MAX)
}

/// Appends `first` and then the words of `value` as CRLF-ended lines:
/// words are joined by one space while a line stays within
/// [`LINE_FOLD_AT`] octets, continuation lines start with `indent`, and a
/// word that does not fit a line of [`LINE_BYTES_MAX`] is cut (at a
/// character boundary). `first` must be shorter than `LINE_BYTES_MAX`.
fn fold(out: &mut String, first: &str, value: &str, indent: &str) {
    debug_assert!(first.len() < LINE_BYTES_MAX && indent.len() < LINE_FOLD_AT);
    let mut line = String::from(first);
    // Whether `line` holds no word yet (only `first` or `indent`).
    let mut bare = true;
    for word in value.split_ascii_whitespace() {
        let mut word = word;
        while !word.is_empty() {
            let sep = usize::from(!bare);
            if line.len() + sep + word.len() <= LINE_FOLD_AT
                || bare && line.len() + word.len() <= LINE_BYTES_MAX
            {
                if !bare {
                    line.push(' ');
                }
                line.push_str(word);
                bare = false;
                break;
            }
            if bare {
                // Longer than any line: as much as fits, the rest below.
                let cut = crate::text::cut(word, LINE_BYTES_MAX - line.len()).len();
                line.push_str(&word[..cut]);
                word = &word[cut..];
            }
            end_line(out, &mut line);
            line.push_str(indent);
            bare = true;
        }
    }
    end_line(out, &mut line);
}

fn end_line(out: &mut String, line: &mut String) {
    out.push_str(line.trim_end());
    out.push_str("\r\n");
    line.clear();
}

/// The original header (up to the blank line), cut at a line end within the
/// limit. The body is always CRLF-clean (the listener refuses bare CR/LF).
fn quoted_header(body: &[u8]) -> &[u8] {
    let end = memchr::memmem::find(body, b"\r\n\r\n").map_or(body.len(), |p| p + 2);
    let mut cut = end.min(QUOTED_HEADER_BYTES_MAX);
    while cut > 0 && !body[..cut].ends_with(b"\r\n") {
        cut -= 1;
    }
    &body[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comes_from_the_reply() {
        let f = |d: &str, expired| Failure {
            recipient: "r@x".into(),
            diagnostic: d.into(),
            expired,
            remote_mta: None,
        };
        assert_eq!(f("550 5.1.1 no such user", false).status(), "5.1.1");
        assert_eq!(f("550 no such user", false).status(), "5.0.0");
        assert_eq!(f("451 4.7.1 later", true).status(), "4.4.7");
    }

    #[test]
    fn quoted_header_stops_at_the_blank_line() {
        assert_eq!(
            quoted_header(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(quoted_header(b"A: 1\r\n"), b"A: 1\r\n");
    }

    /// A random string of `len` characters drawn from `alphabet`.
    fn random_text(
        rng: &mut fastrand::Rng,
        len: std::ops::RangeInclusive<usize>,
        alphabet: &[char],
    ) -> String {
        let len = rng.usize(len);
        (0..len)
            .map(|_| alphabet[rng.usize(..alphabet.len())])
            .collect()
    }

    /// Whatever the lengths of the recipients, the sender, the reporting
    /// host and the replies, every line of a DSN is at most 998 octets and
    /// ends in CRLF, and nothing of a reply's words is lost below the cut.
    #[test]
    fn every_line_is_at_most_998_octets_whatever_the_lengths() {
        let mut rng = fastrand::Rng::with_seed(0x5ba7e);
        let letters: Vec<char> = "abcdefghij.-_+".chars().collect();
        let words: Vec<char> = "abc é  x-5.1.1\r\n\t<>;".chars().collect();
        for round in 0..2000 {
            let recipients: Vec<String> = (0..rng.usize(1..4))
                .map(|_| {
                    let local = random_text(&mut rng, 1..=240, &letters);
                    format!("{local}@{}", random_text(&mut rng, 1..=60, &letters))
                })
                .collect();
            let sender = random_text(&mut rng, 0..=256, &letters);
            let reply_len = [0, 10, 900, 1100, 5000, 20_000][rng.usize(..6)] + rng.usize(..50);
            // Some replies are one endless word, most are text with spaces.
            let reply = if round % 7 == 0 {
                "x".repeat(reply_len)
            } else {
                format!(
                    "550 5.1.1 {}",
                    random_text(&mut rng, reply_len..=reply_len, &words)
                )
            };
            let failures: Vec<Failure> = recipients
                .iter()
                .map(|r| Failure {
                    recipient: r.clone(),
                    diagnostic: reply.clone(),
                    expired: rng.bool(),
                    remote_mta: Some(random_text(&mut rng, 1..=253, &letters)),
                })
                .collect();
            let rcpts: Vec<&str> = recipients.iter().map(|r| r.as_str()).collect();
            let original = MessageHandle::in_memory(7, &sender, &rcpts, b"Subject: s\r\n\r\nb\r\n");
            let host = random_text(&mut rng, 1..=253, &letters);
            let dsn = build(
                &host,
                "00000000000000ab",
                &original,
                &sender,
                &failures,
                chrono::Utc::now(),
            );
            assert!(dsn.ends_with(b"\r\n"));
            for line in dsn.split(|&b| b == b'\n') {
                assert!(
                    line.len() <= LINE_BYTES_MAX + 1,
                    "line of {} octets in round {round}",
                    line.len()
                );
                assert!(
                    !line[..line.len().saturating_sub(1)].contains(&b'\r'),
                    "bare CR"
                );
            }
            for line in dsn.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                assert!(line.ends_with(b"\r"), "bare LF in round {round}");
            }
            // The text of the diagnostic survives folding, up to its cut.
            let text = String::from_utf8_lossy(&dsn);
            let text = text.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
            let kept: String = clean_diagnostic(&reply)
                .split_ascii_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            if !kept.is_empty() && kept.len() < LINE_FOLD_AT {
                assert!(text.contains(&kept), "{kept:?} lost in round {round}");
            }
        }
    }

    #[test]
    fn a_long_reply_is_folded_at_spaces() {
        let mut out = String::new();
        let reply = "550 5.1.1 ".to_string() + &"word ".repeat(100);
        fold(&mut out, "Diagnostic-Code: smtp; ", &reply, HEADER_INDENT);
        let lines: Vec<&str> = out.split_terminator("\r\n").collect();
        assert!(lines.len() > 5);
        assert!(lines.iter().all(|l| l.len() <= LINE_FOLD_AT));
        assert!(lines[1..]
            .iter()
            .all(|l| l.starts_with(' ') && !l.starts_with("  ")));
        assert_eq!(
            out.replace("\r\n", ""),
            format!("Diagnostic-Code: smtp; {}", reply.trim_end())
        );
    }

    #[test]
    fn control_characters_never_reach_the_dsn() {
        assert_eq!(clean("550 bad\r\nInjected: x"), "550 bad  Injected: x");
        assert_eq!(clean(&"é".repeat(1000)).len(), DSN_VALUE_BYTES_MAX);
    }
}
