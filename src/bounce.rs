//! Delivery status notifications (RFC 3464) for recipients that bounced or
//! expired, addressed to the original envelope sender.
//!
//! Pure: builds the message bytes; `delivery` spools and routes them like any
//! other message, from the null sender `<>` so a DSN never causes a DSN.

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
        m += &format!("<{}>: {}\r\n", clean(&f.recipient), clean(&f.diagnostic));
    }
    m += &format!("\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n");
    m += &format!("Reporting-MTA: dns; {reporting_mta}\r\nX-Spate-Queue-ID: {:016x}\r\nArrival-Date: {arrival}\r\n", original.id);
    for f in failures {
        m += &format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n",
            clean(&f.recipient),
            f.status()
        );
        if let Some(remote) = &f.remote_mta {
            m += &format!("Remote-MTA: dns; {}\r\n", clean(remote));
        }
        let kind = if f.expired || f.remote_mta.is_none() {
            "X-Spate"
        } else {
            "smtp"
        };
        m += &format!(
            "Diagnostic-Code: {kind}; {}\r\nLast-Attempt-Date: {date}\r\n",
            clean(&f.diagnostic)
        );
    }
    m += &format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n");
    let mut out = m.into_bytes();
    out.extend_from_slice(quoted_header(&original.body()));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// Longest value put on one DSN line, inside RFC 5322's 998 octets.
pub const DSN_VALUE_BYTES_MAX: usize = 800;

/// Keeps a value on one short line: CR, LF and other controls become
/// spaces, and a long one (a multi-line reply joined) is cut.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(DSN_VALUE_BYTES_MAX));
    for c in s.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > DSN_VALUE_BYTES_MAX {
            break;
        }
        out.push(c);
    }
    out
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

    #[test]
    fn control_characters_never_reach_the_dsn() {
        assert_eq!(clean("550 bad\r\nInjected: x"), "550 bad  Injected: x");
        assert_eq!(clean(&"é".repeat(1000)).len(), DSN_VALUE_BYTES_MAX);
    }
}
