//! An injection request as the client sends it (JSON, unknown fields
//! refused), and its checks. Every error names the field it is about, so
//! the client can fix the request; a request with any error spools nothing.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Substitution variables: a JSON object.
pub type Vars = Map<String, Value>;

pub const ATTACHMENTS_MAX: usize = 100;
pub const HEADERS_MAX: usize = 100;
/// Longest header field name a request may add.
pub const HEADER_NAME_BYTES_MAX: usize = 76;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The envelope sender (MAIL FROM); `""` is the null sender.
    pub sender: String,
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub campaign: String,
    /// Variables every recipient's substitutions see (a recipient's own
    /// win).
    #[serde(default)]
    pub vars: Vars,
    pub recipients: Vec<Recipient>,
    /// A whole RFC 5322 message (substitutions apply to it as text) ...
    #[serde(default)]
    pub message: Option<String>,
    /// ... or the parts to compose one from.
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub address: String,
    #[serde(default)]
    pub vars: Vars,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    pub from: String,
    #[serde(default)]
    pub from_name: Option<String>,
    /// The To field; default: the recipient's address (each recipient
    /// then gets a message of their own).
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
    pub subject: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    /// More header fields, by name; values are templates too.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    /// The content, base64 (RFC 4648, standard alphabet, padded).
    pub content: String,
}

/// Header fields a request may not set: spate writes them, or they would
/// change where the message goes or how it is read.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "reply-to",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "received",
    "return-path",
    "dkim-signature",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-spate-tenant",
    "x-spate-campaign",
];

/// Parses and checks a request body.
pub fn parse(body: &[u8], recipients_max: usize) -> Result<Request, String> {
    let r: Request = serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))?;
    check(&r, recipients_max)?;
    Ok(r)
}

fn check(r: &Request, recipients_max: usize) -> Result<(), String> {
    if !r.sender.is_empty() {
        address("sender", &r.sender)?;
    }
    tag("tenant", &r.tenant)?;
    tag("campaign", &r.campaign)?;
    if r.recipients.is_empty() {
        return Err("recipients: at least one is needed".into());
    }
    if r.recipients.len() > recipients_max {
        return Err(format!(
            "recipients: {} is more than the limit of {recipients_max} a request",
            r.recipients.len()
        ));
    }
    for (i, rc) in r.recipients.iter().enumerate() {
        address(&format!("recipients[{i}].address"), &rc.address)?;
    }
    match (&r.message, &r.content) {
        (Some(_), Some(_)) => Err("message, content: give one, not both".into()),
        (None, None) => Err("message, content: one of them is needed".into()),
        (Some(m), None) if m.trim().is_empty() => Err("message: empty".into()),
        (Some(_), None) => Ok(()),
        (None, Some(c)) => check_content(c),
    }
}

fn check_content(c: &Content) -> Result<(), String> {
    address("content.from", &c.from)?;
    if let Some(r) = &c.reply_to {
        address("content.reply_to", r)?;
    }
    if c.text.is_none() && c.html.is_none() {
        return Err("content.text, content.html: at least one is needed".into());
    }
    if c.headers.len() > HEADERS_MAX {
        return Err(format!("content.headers: at most {HEADERS_MAX}"));
    }
    for name in c.headers.keys() {
        let ok = (1..=HEADER_NAME_BYTES_MAX).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !ok {
            return Err(format!("content.headers.{name}: not a header field name"));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "content.headers.{name}: set by spate or by another field of content"
            ));
        }
    }
    if c.attachments.len() > ATTACHMENTS_MAX {
        return Err(format!("content.attachments: at most {ATTACHMENTS_MAX}"));
    }
    for (i, a) in c.attachments.iter().enumerate() {
        let field = format!("content.attachments[{i}]");
        let ok = a.content_type.split_once('/').is_some_and(|(t, s)| {
            !t.is_empty() && !s.is_empty() && !a.content_type.contains(char::is_whitespace)
        });
        if !ok {
            return Err(format!(
                "{field}.content_type: {:?} is not a MIME type",
                a.content_type
            ));
        }
        if a.filename.is_empty() || a.filename.contains(['/', '\\', '\r', '\n', '"']) {
            return Err(format!(
                "{field}.filename: {:?} is not a file name",
                a.filename
            ));
        }
    }
    Ok(())
}

/// A mailbox address: `local@domain`, no spaces, brackets or line breaks,
/// at most 254 octets.
pub fn address(field: &str, a: &str) -> Result<(), String> {
    crate::suppression::lists::normalize(a)
        .map(|_| ())
        .map_err(|_| format!("{field}: {a:?} is not an email address"))?;
    if a.trim() != a || a.starts_with('<') {
        return Err(format!(
            "{field}: {a:?} is not a bare address (no spaces or <>)"
        ));
    }
    Ok(())
}

/// A tenant or campaign name (empty: none).
pub fn tag(field: &str, v: &str) -> Result<(), String> {
    let ok = v.is_empty() || spool_format::is_tag(v.as_bytes());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: {v:?} is not a name (1 to {} letters, digits, '.', '_' or '-')",
            spool_format::TAG_BYTES_MAX
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        parse(json.as_bytes(), 3).unwrap_err()
    }

    const OK: &str = r#"{"sender":"b@x.org","recipients":[{"address":"a@y.org","vars":{"n":1}}],"content":{"from":"n@x.org","subject":"Hi","text":"t"}}"#;

    #[test]
    fn a_good_request_parses() {
        let r = parse(OK.as_bytes(), 3).unwrap();
        assert_eq!(r.recipients[0].vars["n"], 1);
    }

    #[test]
    fn each_error_names_its_field() {
        assert!(err("{").starts_with("request body:"));
        assert!(err(&OK.replace("\"sender\"", "\"sendr\"")).contains("unknown field `sendr`"));
        assert!(err(&OK.replace("a@y.org", "nobody")).starts_with("recipients[0].address:"));
        assert!(err(&OK.replace("b@x.org", "b@x.org>")).starts_with("sender:"));
        assert!(
            err(&OK.replace("\"Hi\"", "\"Hi\",\"headers\":{\"To\":\"x\"}"))
                .starts_with("content.headers.To:")
        );
        assert!(
            err(&OK.replace("\"text\":\"t\"", "\"message\":\"x\"")).contains("message: x")
                || err(&OK.replace("\"text\":\"t\"", "\"message\":\"x\""))
                    .contains("unknown field")
        );
        let many = r#"{"sender":"","recipients":[{"address":"a@y.org"},{"address":"a@y.org"},{"address":"a@y.org"},{"address":"a@y.org"}],"message":"x"}"#;
        assert!(err(many).starts_with("recipients: 4 is more than"));
        let both = r#"{"sender":"","recipients":[{"address":"a@y.org"}],"message":"x","content":{"from":"n@x.org","subject":"s","text":"t"}}"#;
        assert!(err(both).starts_with("message, content:"));
        let tenant =
            r#"{"sender":"","tenant":"a b","recipients":[{"address":"a@y.org"}],"message":"x"}"#;
        assert!(err(tenant).starts_with("tenant:"));
        let att = OK.replace("\"text\":\"t\"", "\"text\":\"t\",\"attachments\":[{\"filename\":\"a/b\",\"content_type\":\"text/plain\",\"content\":\"\"}]");
        assert!(err(&att).starts_with("content.attachments[0].filename:"));
    }
}
