//! From a checked request to the messages to spool: each recipient's
//! substitutions rendered with minijinja (`{{ name }}`,
//! `{{ name | default("friend") }}`, HTML escaping in the html part, an
//! undefined name without a default is an error), recipients whose
//! rendered text is the same gathered into one message, and each message
//! built with mail-builder (or, for a whole message given as text, its
//! line ends made CRLF and a Message-ID and Date added if missing).
//!
//! Pure but for the clock the caller passes in: no I/O, no spool. Every
//! template runs on a fuel budget, so a hostile template cannot spin.

use super::request::{Content, Request, Vars};
use base64::Engine as _;
use mail_builder::headers::address::Address;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::headers::url::URL;
use mail_builder::MessageBuilder;
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use std::collections::HashMap;

/// Template instructions one render may run (minijinja's fuel).
pub const TEMPLATE_FUEL: u64 = 200_000;
/// Longest line of a message given whole (RFC 5322 2.1.1).
pub const LINE_BYTES_MAX: usize = 998;

/// One recipient's rendered text: recipients with equal ones share a
/// message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rendered {
    /// The whole message (for `message`), or the parts (for `content`).
    pub raw: Option<String>,
    pub to: String,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The one-click unsubscribe link, if links are configured.
    pub unsubscribe: Option<String>,
}

/// A message to spool and the recipients (request indexes) it goes to.
pub struct Composed {
    pub recipients: Vec<usize>,
    pub rendered: Rendered,
}

/// The request's templates, compiled once.
pub struct Templates {
    env: Environment<'static>,
    headers: Vec<String>,
}

impl Templates {
    pub fn compile(r: &Request) -> Result<Templates, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(TEMPLATE_FUEL));
        let mut add = |name: String, field: &str, source: &str| {
            env.add_template_owned(name, source.to_string())
                .map_err(|e| format!("{field}: {e}"))
        };
        let mut headers = Vec::new();
        if let Some(m) = &r.message {
            add("message".into(), "message", m)?;
        }
        if let Some(c) = &r.content {
            add("subject".into(), "content.subject", &c.subject)?;
            if let Some(t) = &c.to {
                add("to".into(), "content.to", t)?;
            }
            if let Some(t) = &c.text {
                add("text".into(), "content.text", t)?;
            }
            if let Some(h) = &c.html {
                // The name's extension turns on HTML escaping.
                add("html.html".into(), "content.html", h)?;
            }
            for (name, value) in &c.headers {
                add(
                    format!("header:{name}"),
                    &format!("content.headers.{name}"),
                    value,
                )?;
                headers.push(name.clone());
            }
        }
        Ok(Templates { env, headers })
    }

    /// Renders recipient `i` of `r`; `Err` names the recipient and field.
    pub fn render(
        &self,
        r: &Request,
        i: usize,
        unsubscribe: Option<String>,
    ) -> Result<Rendered, String> {
        let rc = &r.recipients[i];
        let mut vars: Vars = r.vars.clone();
        vars.extend(rc.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars.entry("recipient")
            .or_insert_with(|| rc.address.clone().into());
        let ctx = minijinja::Value::from(Serde(&vars));
        let at = |field: &str, e: minijinja::Error| format!("recipients[{i}]: {field}: {e}");
        let one = |name: &str, field: &str| -> Result<String, String> {
            let t = self.env.get_template(name).map_err(|e| at(field, e))?;
            t.render(&ctx).map_err(|e| at(field, e))
        };
        let line = |name: &str, field: &str| -> Result<String, String> {
            let v = one(name, field)?;
            if v.contains(['\r', '\n']) {
                return Err(format!(
                    "recipients[{i}]: {field}: renders with a line break"
                ));
            }
            Ok(v)
        };
        let Some(c) = &r.content else {
            return Ok(Rendered {
                raw: Some(one("message", "message")?),
                to: String::new(),
                subject: String::new(),
                text: None,
                html: None,
                headers: Vec::new(),
                unsubscribe: None,
            });
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for name in &self.headers {
            let field = format!("content.headers.{name}");
            headers.push((name.clone(), line(&format!("header:{name}"), &field)?));
        }
        Ok(Rendered {
            raw: None,
            to: match &c.to {
                Some(_) => line("to", "content.to")?,
                None => rc.address.clone(),
            },
            subject: line("subject", "content.subject")?,
            text: c
                .text
                .as_ref()
                .map(|_| one("text", "content.text"))
                .transpose()?,
            html: c
                .html
                .as_ref()
                .map(|_| one("html.html", "content.html"))
                .transpose()?,
            headers,
            unsubscribe,
        })
    }
}

/// Gathers recipients whose rendered text is the same, in first-seen order.
pub fn group(rendered: Vec<(usize, Rendered)>) -> Vec<Composed> {
    let mut out: Vec<Composed> = Vec::new();
    let mut seen: HashMap<Rendered, usize> = HashMap::new();
    for (i, r) in rendered {
        match seen.get(&r) {
            Some(&g) => out[g].recipients.push(i),
            None => {
                seen.insert(r.clone(), out.len());
                out.push(Composed {
                    recipients: vec![i],
                    rendered: r,
                });
            }
        }
    }
    out
}

/// The message text (CRLF line ends, ending in CRLF) of one composed
/// message whose spool id is `id`; `now_s`: seconds since the epoch.
pub fn build(
    content: Option<&Content>,
    r: &Rendered,
    id: u64,
    hostname: &str,
    now_s: i64,
) -> Result<Vec<u8>, String> {
    let message_id = format!("{id:016x}@{hostname}");
    match (&r.raw, content) {
        (Some(raw), _) => whole(raw, &message_id, now_s),
        (None, Some(c)) => parts(c, r, &message_id, now_s),
        (None, None) => unreachable!("a request has a message or content"),
    }
}

fn parts(c: &Content, r: &Rendered, message_id: &str, now_s: i64) -> Result<Vec<u8>, String> {
    let from = match &c.from_name {
        Some(name) => Address::new_address(Some(name.clone()), c.from.clone()),
        None => Address::new_address(None::<String>, c.from.clone()),
    };
    let mut m = MessageBuilder::new()
        .from(from)
        .subject(Text::new(r.subject.clone()))
        .message_id(message_id.to_string())
        .date(now_s);
    m = if r.to.contains(['<', ',', ':', ' ']) {
        m.header("To", Raw::new(r.to.clone()))
    } else {
        m.to(r.to.clone())
    };
    if let Some(reply_to) = &c.reply_to {
        m = m.reply_to(reply_to.clone());
    }
    for (name, value) in &r.headers {
        m = m.header(name.clone(), Text::new(value.clone()));
    }
    if let Some(link) = &r.unsubscribe {
        m = m.header("List-Unsubscribe", URL::new(link.clone())).header(
            "List-Unsubscribe-Post",
            Raw::new("List-Unsubscribe=One-Click"),
        );
    }
    if let Some(t) = &r.text {
        m = m.text_body(t.clone());
    }
    if let Some(h) = &r.html {
        m = m.html_body(h.clone());
    }
    for (i, a) in c.attachments.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.content.as_bytes())
            .map_err(|e| format!("content.attachments[{i}].content: not base64: {e}"))?;
        m = m.attachment(a.content_type.clone(), a.filename.clone(), bytes);
    }
    m.write_to_vec()
        .map_err(|e| format!("building the message: {e}"))
}

/// A whole message as given: CRLF line ends, lines within the limit, a
/// header section, and a Message-ID and Date if it lacks them (RFC 6409
/// 8.2, 8.3: a submission server may add them).
fn whole(raw: &str, message_id: &str, now_s: i64) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len() + 128);
    let (mut has_id, mut has_date, mut in_header, mut has_body) = (false, false, true, false);
    let text = raw.strip_suffix('\n').unwrap_or(raw);
    for (n, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.len() > LINE_BYTES_MAX {
            return Err(format!(
                "message: line {} is longer than {LINE_BYTES_MAX} octets",
                n + 1
            ));
        }
        if line.contains('\r') {
            return Err(format!("message: line {} has a bare CR", n + 1));
        }
        if in_header {
            let lower = line.to_ascii_lowercase();
            has_id |= lower.starts_with("message-id:");
            has_date |= lower.starts_with("date:");
            if line.is_empty() {
                in_header = false;
                has_body = true;
            }
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_body {
        return Err("message: no empty line ends the header section".into());
    }
    let mut added = String::new();
    if !has_id {
        added.push_str(&format!("Message-ID: <{message_id}>\r\n"));
    }
    if !has_date {
        let date = chrono::DateTime::from_timestamp(now_s, 0).unwrap_or_default();
        added.push_str(&format!("Date: {}\r\n", date.to_rfc2822()));
    }
    out.splice(0..0, added.into_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::request::parse;
    use super::*;

    fn request(json: &str) -> Request {
        parse(json.as_bytes(), 100).unwrap()
    }

    #[test]
    fn each_recipient_gets_their_own_text_and_html_is_escaped() {
        let r = request(
            r#"{"sender":"b@x.org","vars":{"shop":"Acme"},"recipients":[
                {"address":"a@y.org","vars":{"name":"Ann"}},
                {"address":"b@y.org","vars":{"name":"<Bob>"}},
                {"address":"c@y.org"}],
              "content":{"from":"n@x.org","to":"list@x.org","subject":"Hi {{ name | default('friend') }}",
                "text":"{{ shop }} for {{ name | default('you') }}","html":"<p>{{ name | default('you') }}</p>"}}"#,
        );
        let t = Templates::compile(&r).unwrap();
        let all: Vec<_> = (0..3)
            .map(|i| (i, t.render(&r, i, None).unwrap()))
            .collect();
        assert_eq!(all[0].1.subject, "Hi Ann");
        assert_eq!(all[1].1.html.as_deref(), Some("<p>&lt;Bob&gt;</p>"));
        assert_eq!(all[1].1.text.as_deref(), Some("Acme for <Bob>"));
        assert_eq!(all[2].1.subject, "Hi friend");
        let groups = group(all);
        assert_eq!(groups.len(), 3);
        let m = build(
            r.content.as_ref(),
            &groups[0].rendered,
            0xab,
            "h.example",
            0,
        )
        .unwrap();
        let text = String::from_utf8(m).unwrap();
        assert!(
            text.contains("Message-ID: <00000000000000ab@h.example>"),
            "{text}"
        );
        assert!(text.contains("Subject: Hi Ann"));
    }

    #[test]
    fn the_same_text_for_everyone_is_one_message() {
        let r = request(
            r#"{"sender":"b@x.org","recipients":[{"address":"a@y.org"},{"address":"b@y.org"}],
              "content":{"from":"n@x.org","to":"list@x.org","subject":"News","text":"Same"}}"#,
        );
        let t = Templates::compile(&r).unwrap();
        let groups = group(
            (0..2)
                .map(|i| (i, t.render(&r, i, None).unwrap()))
                .collect(),
        );
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].recipients, [0, 1]);
    }

    #[test]
    fn template_errors_name_the_recipient_and_field() {
        let r = request(
            r#"{"sender":"b@x.org","recipients":[{"address":"a@y.org","vars":{"name":"x"}},{"address":"b@y.org"}],
              "content":{"from":"n@x.org","subject":"Hi {{ name }}","text":"t"}}"#,
        );
        let t = Templates::compile(&r).unwrap();
        assert!(t.render(&r, 0, None).is_ok());
        let e = t.render(&r, 1, None).unwrap_err();
        assert!(e.starts_with("recipients[1]: content.subject:"), "{e}");
        let bad = request(
            r#"{"sender":"","recipients":[{"address":"a@y.org"}],"content":{"from":"n@x.org","subject":"{{ x","text":"t"}}"#,
        );
        assert!(Templates::compile(&bad)
            .err()
            .unwrap()
            .starts_with("content.subject:"));
        let crlf = request(
            r#"{"sender":"","recipients":[{"address":"a@y.org","vars":{"s":"a\r\nBcc: x@z.org"}}],"content":{"from":"n@x.org","subject":"{{ s }}","text":"t"}}"#,
        );
        let t = Templates::compile(&crlf).unwrap();
        assert!(t.render(&crlf, 0, None).unwrap_err().contains("line break"));
    }

    #[test]
    fn a_loop_without_end_runs_out_of_fuel() {
        let r = request(
            r#"{"sender":"","recipients":[{"address":"a@y.org"}],"content":{"from":"n@x.org","subject":"s",
              "text":"{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}"}}"#,
        );
        let t = Templates::compile(&r).unwrap();
        assert!(t.render(&r, 0, None).is_err());
    }

    #[test]
    fn a_whole_message_gets_crlf_and_a_message_id_and_date() {
        let m = whole("Subject: x\nFrom: a@b.org\n\nbody\n", "1@h", 0).unwrap();
        let text = String::from_utf8(m).unwrap();
        assert!(text.starts_with("Message-ID: <1@h>\r\nDate: "), "{text}");
        assert!(
            text.ends_with("Subject: x\r\nFrom: a@b.org\r\n\r\nbody\r\n"),
            "{text:?}"
        );
        assert!(whole("Subject: x\r\n", "1@h", 0).is_err());
        assert!(whole(&format!("S: x\n\n{}\n", "a".repeat(999)), "1@h", 0).is_err());
        let kept = whole(
            "Message-ID: <x@y>\nDate: Fri, 4 Dec 2026 10:00:00 +0000\n\nb\n",
            "1@h",
            0,
        )
        .unwrap();
        assert!(kept.starts_with(b"Message-ID: <x@y>"));
    }
}
