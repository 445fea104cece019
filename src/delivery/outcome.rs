//! What happened to a recipient, decided in one place.
//!
//! RFC 5321 4.2.1: 2yz is success, 4yz a transient failure, 5yz a permanent
//! one. A lost connection or a timeout is transient, also after the final
//! dot: a message is delivered only on a 2yz reply to the dot.

use std::time::Duration;

/// An SMTP reply as the delivery client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    /// The reply's lines without their codes, joined with spaces.
    pub text: String,
}

impl std::fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// The fate of one recipient after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    /// Try again later.
    Deferred(String),
    /// Try again at once in a new transaction (452 "too many recipients").
    Retry(String),
    Bounced(String),
}

impl Outcome {
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Delivered(r)
            | Outcome::Deferred(r)
            | Outcome::Retry(r)
            | Outcome::Bounced(r) => r,
        }
    }
}

/// Classifies a reply to the final dot (or to a command that decides a
/// recipient's fate: MAIL, RCPT, DATA).
pub fn classify(reply: &SmtpReply) -> Outcome {
    let text = reply.to_string();
    match reply.code {
        200..=299 => Outcome::Delivered(text),
        400..=499 => Outcome::Deferred(text),
        500..=599 => Outcome::Bounced(text),
        _ => Outcome::Deferred(format!("unexpected reply: {text}")),
    }
}

/// Classifies a reply to RCPT: like [`classify`], except that 452 (too
/// many recipients) asks for another transaction now, and so does 552:
/// RFC 821 used it for too many recipients, and RFC 5321 4.5.3.1.10 asks
/// clients to treat it at RCPT as temporary. (A 552 meaning "mailbox full"
/// is then retried until it expires, as Postfix does, rather than bounced
/// at once.)
pub fn classify_rcpt(reply: &SmtpReply) -> Outcome {
    match reply.code {
        452 | 552 => Outcome::Retry(reply.to_string()),
        _ => classify(reply),
    }
}

/// A connection that broke or timed out leaves the recipient deferred.
pub fn connection_lost(stage: &str, error: &std::io::Error) -> Outcome {
    Outcome::Deferred(format!("connection lost {stage}: {error}"))
}

/// Wait before the next attempt after `attempts` failed ones: the first
/// retry after `initial`, then doubling, never more than `max` apart.
pub fn retry_delay(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    initial.saturating_mul(1u32 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: u16) -> SmtpReply {
        SmtpReply {
            code,
            text: "x".into(),
        }
    }

    #[test]
    fn reply_classes() {
        assert!(matches!(classify(&r(250)), Outcome::Delivered(_)));
        assert!(matches!(classify(&r(451)), Outcome::Deferred(_)));
        assert!(matches!(classify(&r(550)), Outcome::Bounced(_)));
        assert!(matches!(classify(&r(999)), Outcome::Deferred(_)));
        assert!(matches!(classify_rcpt(&r(452)), Outcome::Retry(_)));
        assert!(matches!(classify_rcpt(&r(552)), Outcome::Retry(_)));
        assert!(matches!(classify_rcpt(&r(550)), Outcome::Bounced(_)));
        assert!(matches!(classify(&r(552)), Outcome::Bounced(_)));
        assert!(matches!(classify(&r(452)), Outcome::Deferred(_)));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let (i, m) = (Duration::from_secs(300), Duration::from_secs(3600));
        let delays: Vec<u64> = (1..=6).map(|a| retry_delay(a, i, m).as_secs()).collect();
        assert_eq!(delays, vec![300, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(retry_delay(1000, i, m), m);
    }
}
