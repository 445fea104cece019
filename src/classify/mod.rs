//! Bounce classes: one category for every delivery failure spate logs,
//! whether a destination's SMTP reply (`550 5.1.1 <bob@example.com>:
//! Recipient address rejected: User unknown`) or one of spate's own
//! failure texts (DNS, TLS, a lost connection, expiry).
//!
//! Owns the ten [`Class`]es, the reply-text rules (shipped in
//! `rules.toml`, extended by an operator's file) and the enhanced status
//! code table (RFC 3463). It decides a class from text alone: no I/O after
//! construction, bounded work per reply (the first [`REPLY_BYTES_MAX`]
//! bytes, one pass of one [`RegexSet`] per file and tier; about 0.5 µs a
//! reply with the shipped rules). It must never decide
//! what happens to a recipient: bounce, retry and suppression are the
//! delivery code's; a class only says why, and whether a *hard* bounce of
//! it should suppress the address ([`Class::suppresses`]).
//!
//! # Order
//!
//! The first step that gives a class wins:
//!
//! 1. the operator's `[[rule]]`s, in file order;
//! 2. the shipped `[[rule]]`s, in file order;
//! 3. the enhanced status code ([`by_enhanced_code`]): `5.1.1` invalid
//!    recipient, `4.2.2` mailbox full, `5.3.4` too large, `4.4.3` DNS ...;
//! 4. the operator's `[[fallback]]`s, then the shipped ones;
//! 5. the basic reply code ([`by_reply_code`]): `552` mailbox full, `551`
//!    invalid recipient;
//! 6. [`Class::Other`].
//!
//! Why text before codes: providers reuse a few codes for many causes.
//! Gmail and Microsoft send `550 5.7.1` for spam, blocklists, DMARC and
//! local policy alike, Yahoo sends `421 4.7.0` for volume and for
//! complaints, and spate's own `STARTTLS refused: 454 4.7.0 ...` carries a
//! code that on its own reads as throttling. The wording is what tells
//! them apart, so a `[[rule]]` is written only for wording decisive enough
//! to override any code. Weak words (`blocked`, `denied`, `policy`,
//! `timed out`) live in `[[fallback]]`s: they decide only when the code
//! says nothing precise (`5.0.0`, no enhanced code at all), so that
//! `550 5.1.1 ... Access denied` stays an invalid recipient.
//!
//! # Decisions worth knowing
//!
//! - `5.1.2` (bad destination system) is an invalid recipient, as is
//!   `5.1.10` (null MX): spate logs `550 5.1.2 example.com: domain does
//!   not exist` for NXDOMAIN and `556 5.1.10 ... (null MX)`; the domain
//!   authoritatively takes no mail, so the address is as dead as an
//!   unknown user. Temporary DNS trouble is `4.4.3`/`4.4.4`: DNS failure.
//! - A reply that names a fixable cause gets that cause, even when it
//!   also says "rate limited": Gmail's `421 4.7.27 ... SPF` is a
//!   reputation/policy matter, `421 4.7.29 ... not using a TLS connection`
//!   a TLS failure, Microsoft's `451 4.7.650 ... rate limited due to IP
//!   reputation` a reputation one. Pure volume (`unexpected volume`, `too
//!   many connections`, `receiving mail too quickly`) is rate limited.
//! - The operator's own bounce (`550 5.7.1 Bounced by the operator`), a
//!   routing loop and `delivery.deny_networks` are `other`: operator
//!   actions and configuration, not the recipient's or the network's.
//! - Expiry is classed by the last reason: spate logs
//!   `<last reply> (gave up after N attempts)`.
//!
//! # Limits
//!
//! At most [`RULES_PER_FILE_MAX`] rules a file, [`PATTERN_CHARS_MAX`]
//! characters a pattern, [`RULES_FILE_BYTES_MAX`] bytes an operator file;
//! every pattern compiles within [`PATTERN_REGEX_BYTES_MAX`] and each
//! file's patterns into one [`RegexSet`] per tier within
//! [`SET_REGEX_BYTES_MAX`], whose lazy DFA may cache up to
//! [`SET_DFA_BYTES_MAX`] per thread. A pattern that matches the empty
//! text (it would match every reply) is refused.

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;
use std::path::Path;
use std::sync::OnceLock;

#[cfg(test)]
mod tests;

/// Rules (both tiers together) one file may hold.
pub const RULES_PER_FILE_MAX: usize = 1_000;
/// Characters one pattern may have.
pub const PATTERN_CHARS_MAX: usize = 1_000;
/// Size of an operator's rules file.
pub const RULES_FILE_BYTES_MAX: u64 = 1 << 20;
/// Compiled size one pattern may reach.
pub const PATTERN_REGEX_BYTES_MAX: usize = 1 << 20;
/// Compiled size of one file's patterns of one tier together.
pub const SET_REGEX_BYTES_MAX: usize = 64 << 20;
/// Cache of one set's lazy DFA, per thread using it. At regex's default
/// (2 MiB) the shipped rules overflow it and a reply costs about 50 µs
/// instead of 0.5 µs (the cache is cleared and the search falls back to
/// the slower engine); the cache grows only as far as it is used.
pub const SET_DFA_BYTES_MAX: usize = 16 << 20;
/// Bytes of a reply looked at: a reply's cause is said at its start.
pub const REPLY_BYTES_MAX: usize = 4_096;

const _: () = assert!(PATTERN_CHARS_MAX * 4 <= PATTERN_REGEX_BYTES_MAX);

/// Why a delivery failed, as an operator sorts bounces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The address or its domain takes no mail: unknown user, disabled
    /// account, NXDOMAIN, null MX.
    InvalidRecipient,
    /// The mailbox is over its storage quota.
    MailboxFull,
    /// The message is larger than the destination accepts.
    MessageTooLarge,
    /// The message itself was refused: spam verdict, virus, links,
    /// attachments, malformed headers.
    SpamOrContent,
    /// The sender was refused: IP or domain reputation, blocklists,
    /// authentication (SPF, DKIM, DMARC), reverse DNS, local policy.
    ReputationOrPolicy,
    /// The destination asks for less: too many connections, messages or
    /// recipients, deferred for volume.
    RateLimited,
    /// A DNS lookup failed for now (spate's or the destination's).
    DnsFailure,
    /// TLS was required and could not be had, or the handshake failed.
    TlsFailure,
    /// No SMTP conversation could be held: refused, timed out, reset.
    ConnectionFailure,
    /// Anything else (protocol errors, loops, operator bounces).
    Other,
}

impl Class {
    pub const ALL: [Class; 10] = [
        Class::InvalidRecipient,
        Class::MailboxFull,
        Class::MessageTooLarge,
        Class::SpamOrContent,
        Class::ReputationOrPolicy,
        Class::RateLimited,
        Class::DnsFailure,
        Class::TlsFailure,
        Class::ConnectionFailure,
        Class::Other,
    ];

    /// The name in rules files, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Class::InvalidRecipient => "invalid_recipient",
            Class::MailboxFull => "mailbox_full",
            Class::MessageTooLarge => "message_too_large",
            Class::SpamOrContent => "spam_or_content",
            Class::ReputationOrPolicy => "reputation_or_policy",
            Class::RateLimited => "rate_limited",
            Class::DnsFailure => "dns_failure",
            Class::TlsFailure => "tls_failure",
            Class::ConnectionFailure => "connection_failure",
            Class::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == s)
    }

    /// A hard bounce of this class puts the address on the suppression list.
    pub fn suppresses(self) -> bool {
        self == Class::InvalidRecipient
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of a file's two lists a rule is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// `[[rule]]`: tried before the enhanced status code.
    Rule,
    /// `[[fallback]]`: tried after it.
    Fallback,
}

/// One validated rule of a file.
#[derive(Debug, Clone)]
pub struct Rule {
    pub pattern: String,
    pub class: Class,
    pub tier: Tier,
    /// Where the wording comes from (`source` or `note` in the file).
    pub source: Option<String>,
    /// Line of the pattern in its file (1-based).
    pub line: usize,
}

/// What decided a reply's class ([`Classifier::explain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By<'a> {
    Rule {
        origin: &'a str,
        line: usize,
        tier: Tier,
    },
    EnhancedCode(Enhanced),
    ReplyCode(u16),
    Nothing,
}

impl std::fmt::Display for By<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            By::Rule { origin, line, tier } => {
                let what = match tier {
                    Tier::Rule => "rule",
                    Tier::Fallback => "fallback",
                };
                write!(f, "{what} at {origin} line {line}")
            }
            By::EnhancedCode(e) => write!(f, "enhanced code {e}"),
            By::ReplyCode(c) => write!(f, "reply code {c}"),
            By::Nothing => f.write_str("nothing matched"),
        }
    }
}

/// An enhanced status code (RFC 3463): class.subject.detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl std::fmt::Display for Enhanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One file's rules of one tier, compiled together.
#[derive(Debug, Clone)]
struct Matcher {
    set: RegexSet,
    /// Per pattern of `set`: its class and line.
    rules: Vec<(Class, usize)>,
}

impl Matcher {
    fn build(origin: &str, rules: &[Rule], tier: Tier) -> Result<Matcher, String> {
        let chosen: Vec<&Rule> = rules.iter().filter(|r| r.tier == tier).collect();
        let set = RegexSetBuilder::new(chosen.iter().map(|r| r.pattern.as_str()))
            .case_insensitive(true)
            .size_limit(SET_REGEX_BYTES_MAX)
            .dfa_size_limit(SET_DFA_BYTES_MAX)
            .build()
            .map_err(|e| format!("{origin}: the patterns together do not compile: {e}"))?;
        Ok(Matcher {
            set,
            rules: chosen.iter().map(|r| (r.class, r.line)).collect(),
        })
    }

    /// The first rule in file order that matches: (class, line).
    fn first(&self, text: &str) -> Option<(Class, usize)> {
        let i = self.set.matches(text).into_iter().next()?;
        Some(self.rules[i])
    }
}

/// One rules file, compiled.
#[derive(Debug, Clone)]
struct RuleFile {
    origin: String,
    rules: Matcher,
    fallbacks: Matcher,
}

impl RuleFile {
    fn compile(text: &str, origin: &str) -> Result<RuleFile, String> {
        let rules = Classifier::from_toml(text, origin)?;
        Ok(RuleFile {
            origin: origin.to_string(),
            rules: Matcher::build(origin, &rules, Tier::Rule)?,
            fallbacks: Matcher::build(origin, &rules, Tier::Fallback)?,
        })
    }
}

/// The file as written; unknown keys are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    rule: Vec<RuleToml>,
    #[serde(default)]
    fallback: Vec<RuleToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    pattern: toml::Spanned<String>,
    class: toml::Spanned<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// Classifies delivery failures: an operator's rules file (if any), then
/// the shipped one. Immutable once built; cheap to clone.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Tried in order: the operator's file first, the shipped one last.
    files: Vec<RuleFile>,
}

/// The shipped rules, parsed and compiled once per process.
fn shipped_file() -> &'static RuleFile {
    static SHIPPED: OnceLock<RuleFile> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        RuleFile::compile(include_str!("rules.toml"), "shipped rules.toml")
            .unwrap_or_else(|e| panic!("the shipped bounce rules are broken: {e}"))
    })
}

impl Classifier {
    /// The shipped rules alone. Panics only if the shipped file is broken
    /// (a unit test proves it is not).
    pub fn shipped() -> Classifier {
        Classifier {
            files: vec![shipped_file().clone()],
        }
    }

    /// The operator's file at `path`, tried before the shipped rules.
    pub fn with_file(path: &Path) -> Result<Classifier, String> {
        let origin = path.display().to_string();
        let len = std::fs::metadata(path)
            .map_err(|e| format!("{origin}: {e}"))?
            .len();
        if len > RULES_FILE_BYTES_MAX {
            return Err(format!(
                "{origin}: {len} bytes, more than the {RULES_FILE_BYTES_MAX} a rules file may have"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
        Classifier::with_toml(&text, &origin)
    }

    /// Like [`Classifier::with_file`], from the file's text; `origin`
    /// names it in errors and explanations.
    pub fn with_toml(text: &str, origin: &str) -> Result<Classifier, String> {
        let operator = RuleFile::compile(text, origin)?;
        Ok(Classifier {
            files: vec![operator, shipped_file().clone()],
        })
    }

    /// Parses and validates one rules file: every rule's class known, its
    /// pattern within the limits and compiling on its own. Errors name the
    /// file, the line and the rule.
    pub fn from_toml(text: &str, origin: &str) -> Result<Vec<Rule>, String> {
        let file: FileToml = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        let count = file.rule.len() + file.fallback.len();
        if count > RULES_PER_FILE_MAX {
            return Err(format!(
                "{origin}: {count} rules, more than the {RULES_PER_FILE_MAX} a file may have"
            ));
        }
        let tiers = [(Tier::Rule, file.rule), (Tier::Fallback, file.fallback)];
        let mut rules = Vec::with_capacity(count);
        for (tier, list) in tiers {
            for (i, raw) in list.into_iter().enumerate() {
                rules.push(validate(text, origin, tier, i + 1, raw)?);
            }
        }
        Ok(rules)
    }

    /// The class of a failure, `reply` being the whole logged text.
    pub fn classify(&self, reply: &str) -> Class {
        self.explain(reply).0
    }

    /// The class and what decided it (see the module doc for the order).
    pub fn explain(&self, reply: &str) -> (Class, By<'_>) {
        let text = crate::text::cut(reply, REPLY_BYTES_MAX);
        if let Some(found) = self.first_rule(text, Tier::Rule) {
            return found;
        }
        let (code, enhanced) = reply_codes(text);
        if let Some(e) = enhanced {
            if let Some(class) = by_enhanced_code(e) {
                return (class, By::EnhancedCode(e));
            }
        }
        if let Some(found) = self.first_rule(text, Tier::Fallback) {
            return found;
        }
        if let Some(class) = code.and_then(by_reply_code) {
            return (class, By::ReplyCode(code.unwrap_or_default()));
        }
        (Class::Other, By::Nothing)
    }

    fn first_rule(&self, text: &str, tier: Tier) -> Option<(Class, By<'_>)> {
        self.files.iter().find_map(|file| {
            let matcher = match tier {
                Tier::Rule => &file.rules,
                Tier::Fallback => &file.fallbacks,
            };
            let (class, line) = matcher.first(text)?;
            let origin = file.origin.as_str();
            Some((class, By::Rule { origin, line, tier }))
        })
    }
}

/// One rule as written, checked: `n` is its place in its list.
fn validate(text: &str, origin: &str, tier: Tier, n: usize, raw: RuleToml) -> Result<Rule, String> {
    let line = line_of(text, raw.pattern.span().start);
    let list = match tier {
        Tier::Rule => "rule",
        Tier::Fallback => "fallback",
    };
    let at = format!("{origin} line {line} ({list} {n})");
    let class_name = raw.class.get_ref();
    let class = Class::parse(class_name).ok_or_else(|| {
        let known: Vec<&str> = Class::ALL.iter().map(|c| c.name()).collect();
        format!(
            "{at}: unknown class {class_name:?}; the classes are {}",
            known.join(", ")
        )
    })?;
    let pattern = raw.pattern.into_inner();
    let chars = pattern.chars().count();
    if chars == 0 || chars > PATTERN_CHARS_MAX {
        return Err(format!(
            "{at}: a pattern has 1 to {PATTERN_CHARS_MAX} characters, this one {chars}"
        ));
    }
    let regex = RegexBuilder::new(&pattern)
        .case_insensitive(true)
        .size_limit(PATTERN_REGEX_BYTES_MAX)
        .build()
        .map_err(|e| format!("{at}: pattern {pattern:?} is not a valid regex: {e}"))?;
    if regex.is_match("") {
        return Err(format!(
            "{at}: pattern {pattern:?} matches the empty text, so it would match every reply"
        ));
    }
    Ok(Rule {
        pattern,
        class,
        tier,
        source: raw.source.or(raw.note),
        line,
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The reply code and enhanced code of the first SMTP reply in `text`: at
/// its start, or after a `": "` (spate's `host [ip]: greeting: 554 ...`,
/// `STARTTLS refused: 454 4.7.0 ...`).
pub fn reply_codes(text: &str) -> (Option<u16>, Option<Enhanced>) {
    let starts = std::iter::once(0).chain(text.match_indices(": ").map(|(i, _)| i + 2));
    for start in starts {
        if let Some(found) = reply_at(&text[start..]) {
            return found;
        }
    }
    (None, None)
}

/// `ddd` (2xx to 5xx) then a space, a dash or the end, then perhaps an
/// enhanced code.
fn reply_at(s: &str) -> Option<(Option<u16>, Option<Enhanced>)> {
    let b = s.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&b[0]) {
        return None;
    }
    if b.len() > 3 && b[3] != b' ' && b[3] != b'-' {
        return None;
    }
    let code = s[..3].parse().ok()?;
    let enhanced = s.get(4..).and_then(enhanced_at);
    Some((Some(code), enhanced))
}

/// `c.s.d` at the start of `s`: class 2, 4 or 5, subject and detail of 1
/// to 3 digits, then the end or a character that is not a digit or dot.
fn enhanced_at(s: &str) -> Option<Enhanced> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let mut parts = s[..end].split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    let fits = |p: &str| (1..=3).contains(&p.len());
    if parts.next().is_some() || class.len() != 1 || !fits(subject) || !fits(detail) {
        return None;
    }
    let class: u8 = class.parse().ok()?;
    if ![2, 4, 5].contains(&class) {
        return None;
    }
    Some(Enhanced {
        class,
        subject: subject.parse().ok()?,
        detail: detail.parse().ok()?,
    })
}

/// (class digit, 0 for either; subject; detail; class), first match wins.
/// Codes absent here (X.0.0, X.5.x, X.6.x ...) say nothing precise, so the
/// fallbacks and the basic code are asked.
const ENHANCED_TABLE: &[(u8, u16, u16, Class)] = &[
    (0, 1, 1, Class::InvalidRecipient),  // bad destination mailbox
    (0, 1, 2, Class::InvalidRecipient),  // bad destination system: NXDOMAIN
    (0, 1, 3, Class::InvalidRecipient),  // bad destination mailbox syntax
    (0, 1, 6, Class::InvalidRecipient),  // mailbox has moved, no forwarding
    (0, 1, 10, Class::InvalidRecipient), // null MX (RFC 7505), EXO not found
    (0, 2, 1, Class::InvalidRecipient),  // mailbox disabled
    (0, 2, 2, Class::MailboxFull),
    (0, 2, 3, Class::MessageTooLarge), // message length exceeds limit
    (0, 3, 0, Class::Other),
    (0, 3, 4, Class::MessageTooLarge), // message too big for system
    (0, 4, 1, Class::ConnectionFailure), // no answer from host
    (0, 4, 2, Class::ConnectionFailure), // bad connection
    (0, 4, 3, Class::DnsFailure),      // routing server failure
    (0, 4, 4, Class::DnsFailure),      // unable to route
    (0, 4, 5, Class::RateLimited),     // network congestion, "server busy"
    (0, 4, 6, Class::Other),           // routing loop
    (0, 4, 7, Class::Other),           // delivery time expired
    (0, 5, 3, Class::RateLimited),     // too many recipients
    (4, 7, 0, Class::RateLimited),     // Gmail's, Yahoo's deferrals
    (5, 7, 0, Class::ReputationOrPolicy),
    (4, 7, 1, Class::RateLimited), // a temporary refusal naming no cause
    (5, 7, 1, Class::ReputationOrPolicy), // delivery not authorized
    (0, 7, 4, Class::TlsFailure),  // security features not supported
    (0, 7, 5, Class::TlsFailure),  // cryptographic failure
    (0, 7, 10, Class::TlsFailure), // encryption needed (RFC 5248)
    (0, 7, 11, Class::TlsFailure), // encryption required
    (0, 7, 23, Class::ReputationOrPolicy), // SPF validation failed
    (0, 7, 24, Class::ReputationOrPolicy), // SPF validation error
    (0, 7, 25, Class::ReputationOrPolicy), // reverse DNS validation failed
    (0, 7, 26, Class::ReputationOrPolicy), // authentication failed
    (0, 7, 28, Class::RateLimited), // mail flood detected
];

/// The class an enhanced code gives on its own, if it says enough.
pub fn by_enhanced_code(e: Enhanced) -> Option<Class> {
    ENHANCED_TABLE
        .iter()
        .find(|&&(c, s, d, _)| (c == 0 || c == e.class) && s == e.subject && d == e.detail)
        .map(|&(_, _, _, class)| class)
}

/// The class a basic reply code gives when nothing else did: `552` is
/// "exceeded storage allocation" (RFC 5321; a size limit is told apart by
/// text), `551` "user not local". Every other code is too broad.
pub fn by_reply_code(code: u16) -> Option<Class> {
    match code {
        552 => Some(Class::MailboxFull),
        551 => Some(Class::InvalidRecipient),
        _ => None,
    }
}
