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

use super::request::{Content, Request};
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
/// Longest template tag (`{{ ... }}`, `{% ... %}`): it bounds how deep an
/// expression can nest, and minijinja parses by recursion on a core's
/// finite stack (a few thousand levels overflow it).
pub const TAG_BYTES_MAX: usize = 256;
/// Deepest nesting of block tags (`if`, `for`, `macro`, ...).
pub const BLOCK_DEPTH_MAX: usize = 32;
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

impl Rendered {
    /// The bytes it holds.
    pub fn bytes(&self) -> usize {
        let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
        opt(&self.raw)
            + self.to.len()
            + self.subject.len()
            + opt(&self.text)
            + opt(&self.html)
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
            + opt(&self.unsubscribe)
    }
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
            check_source(field, source)?;
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

    /// Renders recipient `i` of `r`, all its fields together at most
    /// `bytes_max` bytes; `Err` names the recipient and field.
    pub fn render(
        &self,
        r: &Request,
        i: usize,
        unsubscribe: Option<String>,
        bytes_max: usize,
    ) -> Result<Rendered, String> {
        let rc = &r.recipients[i];
        let shared = minijinja::Value::from(Serde(&r.vars));
        let own = minijinja::Value::from(Serde(&rc.vars));
        let recipient = minijinja::context! { recipient => rc.address.as_str() };
        // The first context that has a name wins: the recipient's own vars.
        let ctx = minijinja::context! { ..own, ..shared, ..recipient };
        let left = std::cell::Cell::new(bytes_max);
        let at = |field: &str, e: minijinja::Error| format!("recipients[{i}]: {field}: {e}");
        let one = |name: &str, field: &str| -> Result<String, String> {
            let t = self.env.get_template(name).map_err(|e| at(field, e))?;
            let mut out = Vec::new();
            let w = Bounded {
                out: &mut out,
                left: &left,
            };
            if let Err(e) = t.render_captured_to(&ctx, w) {
                if left.get() == usize::MAX {
                    return Err(format!(
                        "recipients[{i}]: {field}: the message grows past server.max_message_bytes ({bytes_max})"
                    ));
                }
                return Err(at(field, e));
            }
            String::from_utf8(out).map_err(|_| format!("recipients[{i}]: {field}: not UTF-8"))
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

/// What rendering writes to: fails once the recipient's fields together
/// pass their budget (so a template cannot grow without bound).
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    left: &'a std::cell::Cell<usize>,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.left.get();
        if buf.len() > left {
            // Marks the budget as spent, for the error the caller gives.
            self.left.set(usize::MAX);
            return Err(std::io::Error::other("over the budget"));
        }
        self.left.set(left - buf.len());
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Refuses template source whose tags are too long or nest too deep (see
/// [`TAG_BYTES_MAX`], [`BLOCK_DEPTH_MAX`]) before minijinja parses it.
fn check_source(field: &str, source: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut rest = source;
    while let Some(i) = rest.find('{') {
        rest = &rest[i + 1..];
        let close = match rest.as_bytes().first() {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            _ => continue,
        };
        let end = rest.find(close).unwrap_or(rest.len());
        let tag = &rest[1.min(end)..end];
        if tag.len() > TAG_BYTES_MAX {
            return Err(format!(
                "{field}: a template tag over {TAG_BYTES_MAX} bytes"
            ));
        }
        if close == "%}" {
            let word = tag.trim_start_matches(['-', '+']).split_whitespace().next();
            match word.unwrap_or("") {
                "if" | "for" | "macro" | "call" | "filter" | "with" | "block" | "autoescape"
                | "raw" => depth += 1,
                "set" if !tag.contains('=') => depth += 1,
                w if w.starts_with("end") => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > BLOCK_DEPTH_MAX {
                return Err(format!(
                    "{field}: blocks nested deeper than {BLOCK_DEPTH_MAX}"
                ));
            }
        }
        rest = &rest[end..];
    }
    Ok(())
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
            .map(|i| (i, t.render(&r, i, None, 1 << 20).unwrap()))
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
                .map(|i| (i, t.render(&r, i, None, 1 << 20).unwrap()))
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
        assert!(t.render(&r, 0, None, 1 << 20).is_ok());
        let e = t.render(&r, 1, None, 1 << 20).unwrap_err();
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
        assert!(t
            .render(&crlf, 0, None, 1 << 20)
            .unwrap_err()
            .contains("line break"));
    }

    #[test]
    fn deep_nesting_is_refused_before_it_is_parsed_and_output_is_bounded() {
        let with_text = |text: &str| {
            let json = serde_json::json!({"sender": "", "recipients": [{"address": "a@y.org", "vars": {"big": "x".repeat(1000)}}],
                "content": {"from": "n@x.org", "subject": "s", "text": text}});
            request(&json.to_string())
        };
        // Thousands of unary operators would overflow a core's stack.
        let deep = format!("{{{{ {}1 }}}}", "-".repeat(5000));
        let e = Templates::compile(&with_text(&deep)).err().unwrap();
        assert!(e.contains("a template tag over"), "{e}");
        let ifs = "{% if 1 %}".repeat(40) + &"{% endif %}".repeat(40);
        let e = Templates::compile(&with_text(&ifs)).err().unwrap();
        assert!(e.contains("nested deeper"), "{e}");
        let fine = "{% if 1 %}".repeat(10) + "x" + &"{% endif %}".repeat(10);
        assert!(Templates::compile(&with_text(&fine)).is_ok());
        // A loop that would write 100 MB stops at the budget.
        let r = with_text("{% for i in range(100000) %}{{ big }}{% endfor %}");
        let t = Templates::compile(&r).unwrap();
        let e = t.render(&r, 0, None, 1 << 20).unwrap_err();
        assert!(e.contains("grows past server.max_message_bytes"), "{e}");
    }

    #[test]
    fn a_loop_without_end_runs_out_of_fuel() {
        let r = request(
            r#"{"sender":"","recipients":[{"address":"a@y.org"}],"content":{"from":"n@x.org","subject":"s",
              "text":"{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}"}}"#,
        );
        let t = Templates::compile(&r).unwrap();
        assert!(t.render(&r, 0, None, 1 << 20).is_err());
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
