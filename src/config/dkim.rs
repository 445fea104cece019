//! The `[[dkim]]` tables: the domains spate signs for, each with its
//! selector, key file and the header fields to sign. A domain may have
//! several tables (selectors), e.g. an RSA and an Ed25519 key. Names and paths only:
//! `crate::dkim` reads the keys at start.

use super::{invalid, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;

/// Header fields signed when a `[[dkim]]` table lists none: those a
/// mailbox provider shows or acts on. Each is listed twice in the
/// signature (oversigned): every copy the message has is signed, and one
/// more is signed as absent, so no copy can be added in transit without
/// breaking the signature (RFC 6376 5.4.2 and 8.15).
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDkim {
    pub domain: String,
    pub selector: String,
    pub private_key: PathBuf,
    pub headers: Option<Vec<String>>,
}

/// One signing domain (`d=`), checked.
#[derive(Debug, Clone)]
pub struct DkimDomain {
    /// Lower case, A-labels only.
    pub domain: String,
    pub selector: String,
    /// PEM: an RSA key (PKCS#1 or PKCS#8) or an Ed25519 key (PKCS#8).
    pub private_key: PathBuf,
    pub headers: Vec<String>,
}

pub fn build_dkim(raw: Vec<RawDkim>) -> Result<Vec<DkimDomain>, ConfigError> {
    let mut out: Vec<DkimDomain> = Vec::with_capacity(raw.len());
    for r in raw {
        let domain = r.domain.trim_end_matches('.').to_ascii_lowercase();
        if !is_dns_name(&domain) {
            return Err(invalid(
                "dkim.domain",
                format!(
                    "{:?} is not a domain name (use the xn-- form for IDNs)",
                    r.domain
                ),
            ));
        }
        if out
            .iter()
            .any(|d| d.domain == domain && d.selector == r.selector)
        {
            return Err(invalid(
                "dkim.selector",
                format!("{} is listed twice for {domain}", r.selector),
            ));
        }
        if !is_dns_name(&r.selector) {
            return Err(invalid(
                "dkim.selector",
                format!(
                    "{:?} (for {domain}) is not a DNS label sequence",
                    r.selector
                ),
            ));
        }
        if r.private_key.as_os_str().is_empty() {
            return Err(invalid("dkim.private_key", format!("missing for {domain}")));
        }
        let headers = r.headers.unwrap_or_else(|| {
            DEFAULT_SIGNED_HEADERS
                .iter()
                .flat_map(|h| [h.to_string(), h.to_string()])
                .collect()
        });
        check_headers(&domain, &headers)?;
        out.push(DkimDomain {
            domain,
            selector: r.selector,
            private_key: r.private_key,
            headers,
        });
    }
    Ok(out)
}

fn check_headers(domain: &str, headers: &[String]) -> Result<(), ConfigError> {
    if !headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
        return Err(invalid(
            "dkim.headers",
            format!("must include From (RFC 6376 5.4), for {domain}"),
        ));
    }
    // A field name is printable ASCII without a colon (RFC 5322 2.2).
    let bad = headers
        .iter()
        .find(|h| h.is_empty() || !h.bytes().all(|b| (33..=126).contains(&b) && b != b':'));
    match bad {
        Some(h) => Err(invalid(
            "dkim.headers",
            format!("{h:?} is not a header field name, for {domain}"),
        )),
        None => Ok(()),
    }
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(domain: &str, selector: &str, headers: Option<Vec<&str>>) -> RawDkim {
        RawDkim {
            domain: domain.into(),
            selector: selector.into(),
            private_key: "k.pem".into(),
            headers: headers.map(|h| h.into_iter().map(String::from).collect()),
        }
    }

    #[test]
    fn domain_is_lowercased_and_default_headers_filled_in() {
        let d = build_dkim(vec![raw("Example.COM.", "s1", None)]).unwrap();
        assert_eq!(d[0].domain, "example.com");
        assert_eq!(d[0].headers.len(), 2 * DEFAULT_SIGNED_HEADERS.len());
    }

    #[test]
    fn one_domain_may_have_several_selectors() {
        let d = build_dkim(vec![raw("a.com", "rsa", None), raw("a.com", "ed", None)]).unwrap();
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn bad_tables_are_refused_with_the_key_named() {
        let cases = [
            (vec![raw("exa mple.com", "s1", None)], "dkim.domain"),
            (
                vec![raw("a.com", "s1", None), raw("A.com", "s1", None)],
                "dkim.selector",
            ),
            (vec![raw("a.com", "", None)], "dkim.selector"),
            (
                vec![raw("a.com", "s1", Some(vec!["Subject"]))],
                "dkim.headers",
            ),
            (
                vec![raw("a.com", "s1", Some(vec!["From", "X:Y"]))],
                "dkim.headers",
            ),
        ];
        for (tables, key) in cases {
            let err = build_dkim(tables).unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }
}
