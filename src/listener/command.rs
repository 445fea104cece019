//! SMTP command parsing (RFC 5321 4.1, with the parameters of RFC 1870,
//! 6152 and 6531). Pure: a command line in, a typed command or the reply
//! that refuses it out. Addresses are opaque data: nothing in them is ever
//! interpreted beyond the syntax checks here.

use super::reply::Reply;

/// Longest command line, CRLF included (RFC 5321 4.5.3.1.4).
pub const COMMAND_LINE_BYTES_MAX: usize = 512;
/// Longest local part and path (RFC 5321 4.5.3.1.1 and 4.5.3.1.3).
pub const LOCAL_PART_BYTES_MAX: usize = 64;
pub const PATH_BYTES_MAX: usize = 256;
pub const DOMAIN_BYTES_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail { from: String, params: MailParams },
    Rcpt { to: String },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body_8bit: bool,
    pub smtputf8: bool,
}

/// Parses one command line, without its CRLF.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    if line
        .iter()
        .any(|&b| b == 0 || (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(Reply::new(
            501,
            "5.5.2 Control characters are not allowed in commands",
        ));
    }
    let line = std::str::from_utf8(line)
        .map_err(|_| Reply::new(501, "5.5.2 Command is not valid UTF-8"))?;
    let (verb, arg) = match line.split_once(' ') {
        Some((v, a)) => (v, a.trim()),
        None => (line, ""),
    };
    let no_arg = |c: Command| {
        if arg.is_empty() {
            Ok(c)
        } else {
            Err(Reply::new(501, "5.5.4 Syntax error: no arguments allowed"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => Ok(Command::Ehlo(hello_domain(arg)?)),
        "HELO" => Ok(Command::Helo(hello_domain(arg)?)),
        "MAIL" => parse_mail(arg),
        "RCPT" => parse_rcpt(arg),
        "DATA" => no_arg(Command::Data),
        "RSET" => no_arg(Command::Rset),
        "QUIT" => no_arg(Command::Quit),
        "STARTTLS" => no_arg(Command::StartTls),
        "NOOP" => Ok(Command::Noop),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        _ => Err(Reply::new(500, "5.5.2 Command not recognized")),
    }
}

fn hello_domain(arg: &str) -> Result<String, Reply> {
    let ok =
        !arg.is_empty() && arg.len() <= DOMAIN_BYTES_MAX && !arg.contains([' ', '\t', '<', '>']);
    if ok {
        Ok(arg.to_string())
    } else {
        Err(Reply::new(501, "5.5.4 Syntax: EHLO domain"))
    }
}

/// Splits `FROM:<path> params` after the given keyword.
fn after_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg[keyword.len()..].trim_start())
}

fn parse_mail(arg: &str) -> Result<Command, Reply> {
    let rest = after_keyword(arg, "FROM:")
        .ok_or_else(|| Reply::new(501, "5.5.4 Syntax: MAIL FROM:<address>"))?;
    let (from, params) = parse_path(rest)?;
    let mut out = MailParams::default();
    for p in params.split_ascii_whitespace() {
        let (key, value) = p.split_once('=').map_or((p, None), |(k, v)| (k, Some(v)));
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v))
                if !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) =>
            {
                out.size = Some(v.parse().unwrap_or(u64::MAX));
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => out.body_8bit = true,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => out.body_8bit = false,
            ("SMTPUTF8", None) => out.smtputf8 = true,
            ("SIZE" | "BODY", _) => {
                return Err(Reply::new(501, "5.5.4 Bad value for MAIL parameter"))
            }
            _ => return Err(Reply::new(555, "5.5.4 Unsupported MAIL parameter")),
        }
    }
    Ok(Command::Mail { from, params: out })
}

/// The recipient `RCPT TO:<Postmaster>` yields: the only address without a
/// domain; the session puts `server.postmaster` in its place.
pub const POSTMASTER: &str = "postmaster";

fn parse_rcpt(arg: &str) -> Result<Command, Reply> {
    let rest = after_keyword(arg, "TO:")
        .ok_or_else(|| Reply::new(501, "5.5.4 Syntax: RCPT TO:<address>"))?;
    // RFC 5321 4.5.1: "<Postmaster>" without a domain must be accepted.
    if let Some(params) = rest
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("<postmaster>"))
        .map(|_| &rest[12..])
    {
        if !params.trim().is_empty() {
            return Err(Reply::new(555, "5.5.4 Unsupported RCPT parameter"));
        }
        return Ok(Command::Rcpt {
            to: POSTMASTER.to_string(),
        });
    }
    let (to, params) = parse_path(rest)?;
    if !params.trim().is_empty() {
        return Err(Reply::new(555, "5.5.4 Unsupported RCPT parameter"));
    }
    if to.is_empty() {
        return Err(Reply::new(501, "5.1.3 Recipient address required"));
    }
    Ok(Command::Rcpt { to })
}

/// Parses `<path>` at the start of `s` and returns the mailbox (empty for
/// the null path `<>`, source route dropped as RFC 5321 4.1.2 asks) and what
/// follows the closing bracket.
fn parse_path(s: &str) -> Result<(String, &str), Reply> {
    let bad = || Reply::new(501, "5.1.3 Bad address syntax");
    let inner = s.strip_prefix('<').ok_or_else(bad)?;
    let close = closing_bracket(inner).ok_or_else(bad)?;
    let (path, rest) = (&inner[..close], &inner[close + 1..]);
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(bad());
    }
    if path.len() > PATH_BYTES_MAX {
        return Err(Reply::new(501, "5.1.3 Path longer than 256 octets"));
    }
    if path.is_empty() {
        return Ok((String::new(), rest));
    }
    let mailbox = strip_source_route(path).ok_or_else(bad)?;
    check_mailbox(mailbox)?;
    Ok((mailbox.to_string(), rest))
}

/// Index of the `>` that closes the path, skipping quoted strings.
fn closing_bracket(s: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn strip_source_route(path: &str) -> Option<&str> {
    if !path.starts_with('@') {
        return Some(path);
    }
    let (route, mailbox) = path.split_once(':')?;
    route
        .split(',')
        .all(|hop| hop.len() > 1 && hop.starts_with('@'))
        .then_some(mailbox)
}

fn check_mailbox(mailbox: &str) -> Result<(), Reply> {
    let bad = || Reply::new(501, "5.1.3 Bad address syntax");
    let (local, domain) = mailbox.rsplit_once('@').ok_or_else(bad)?;
    if local.len() > LOCAL_PART_BYTES_MAX {
        return Err(Reply::new(501, "5.1.3 Local part longer than 64 octets"));
    }
    let local_ok = if local.starts_with('"') {
        is_quoted_string(local)
    } else {
        is_dot_string(local)
    };
    if !local_ok || !is_domain(domain) {
        return Err(bad());
    }
    Ok(())
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn is_quoted_string(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return false;
    };
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return false,
            _ => {}
        }
    }
    !escaped
}

fn is_domain(d: &str) -> bool {
    if let Some(literal) = d.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return literal.parse::<std::net::Ipv4Addr>().is_ok()
            || literal
                .strip_prefix("IPv6:")
                .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !d.is_empty()
        && d.len() <= DOMAIN_BYTES_MAX
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> u16 {
        parse(line.as_bytes()).unwrap_err().code
    }

    #[test]
    fn postmaster_without_a_domain_is_a_recipient() {
        for line in ["RCPT TO:<postmaster>", "rcpt to:<PostMaster>"] {
            assert_eq!(
                parse(line.as_bytes()),
                Ok(Command::Rcpt {
                    to: POSTMASTER.into()
                })
            );
        }
        assert!(parse(b"RCPT TO:<postmaster> X=1").is_err());
        assert!(parse(b"RCPT TO:<postmasterx>").is_err());
    }

    #[test]
    fn verbs_and_arguments() {
        assert_eq!(
            parse(b"ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(parse(b"DATA"), Ok(Command::Data));
        assert_eq!(code("DATA now"), 501);
        assert_eq!(code("FOO"), 500);
        assert_eq!(code("EHLO"), 501);
    }

    #[test]
    fn mail_with_parameters() {
        let cmd = parse(b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8").unwrap();
        let params = MailParams {
            size: Some(1000),
            body_8bit: true,
            smtputf8: true,
        };
        assert_eq!(
            cmd,
            Command::Mail {
                from: "a@b.example".into(),
                params
            }
        );
        assert_eq!(
            parse(b"MAIL FROM:<>"),
            Ok(Command::Mail {
                from: String::new(),
                params: MailParams::default()
            })
        );
        assert_eq!(
            parse(b"mail from: <a@b>").unwrap(),
            Command::Mail {
                from: "a@b".into(),
                params: MailParams::default()
            }
        );
        assert_eq!(code("MAIL FROM:<a@b> SIZE=x"), 501);
        assert_eq!(code("MAIL FROM:<a@b> ENVID=x"), 555);
        assert_eq!(code("MAIL FROM:a@b"), 501);
    }

    #[test]
    fn recipient_forms() {
        assert_eq!(
            parse(b"RCPT TO:<@relay.example,@r2.example:u@d.example>"),
            Ok(Command::Rcpt {
                to: "u@d.example".into()
            })
        );
        assert_eq!(
            parse(b"RCPT TO:<\"odd >local\"@d.example>"),
            Ok(Command::Rcpt {
                to: "\"odd >local\"@d.example".into()
            })
        );
        assert_eq!(
            parse(b"RCPT TO:<user%other@d.example>"),
            Ok(Command::Rcpt {
                to: "user%other@d.example".into()
            })
        );
        assert_eq!(
            parse(b"RCPT TO:<$x|`rm`{y}@d.example>"),
            Ok(Command::Rcpt {
                to: "$x|`rm`{y}@d.example".into()
            })
        );
        assert_eq!(code("RCPT TO:<$(reboot)@d.example>"), 501);
        assert_eq!(code("RCPT TO:<>"), 501);
        assert_eq!(code("RCPT TO:<user>"), 501);
        assert_eq!(code("RCPT TO:<a..b@d>"), 501);
        assert_eq!(code("RCPT TO:<a@d> NOTIFY=NEVER"), 555);
        assert_eq!(
            code(&format!("RCPT TO:<{}@d.example>", "a".repeat(65))),
            501
        );
        assert_eq!(
            code(&format!("RCPT TO:<a@{}.example>", "b.".repeat(130))),
            501
        );
    }

    #[test]
    fn control_bytes_and_bad_utf8_are_refused() {
        assert_eq!(parse(b"MAIL FROM:<a\0@b>").unwrap_err().code, 501);
        assert_eq!(parse(b"NOOP \xff\xfe").unwrap_err().code, 501);
        assert_eq!(
            parse(b"MAIL FROM:<a@b> SIZE=1\rRCPT").unwrap_err().code,
            501
        );
    }

    #[test]
    fn utf8_addresses_parse() {
        assert_eq!(
            parse("RCPT TO:<用户@例子.测试>".as_bytes()),
            Ok(Command::Rcpt {
                to: "用户@例子.测试".into()
            })
        );
    }
}
