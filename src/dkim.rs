//! DKIM signing (RFC 6376; Ed25519 per RFC 8463) of what spate spools: a
//! message whose From: domain has `[[dkim]]` tables gets a DKIM-Signature
//! header field per table (key), prepended before the record is sealed, so
//! that the signature is as durable as the message and every delivery
//! attempt sends the same bytes.
//!
//! Owns the signing keys: read once at start, then shared read-only by all
//! cores. Never does DNS, never verifies, and never changes a message except
//! by prepending its own header field. The cryptography, header selection
//! and canonicalization (relaxed/relaxed) are mail-auth's.

use crate::config::DkimDomain;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::PrivateKeyDer;
use spool_format::MessageBuilder;

/// Room the DKIM-Signature fields of one message may take. The list of
/// signed fields (`h=`) names every copy of a signed field, so a header
/// section repeating one thousands of times would make a signature of its
/// own size; such a message is refused instead.
pub const SIGNATURE_FIELDS_MAX: usize = 16 * 1024;

/// Why a message could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("its DKIM signatures would take over {SIGNATURE_FIELDS_MAX} bytes (signed header fields repeated)")]
    TooBig,
    #[error("DKIM signing for {domain} failed: {reason}")]
    Failed { domain: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("dkim key {path} (for {domain}): {reason}")]
    Key {
        path: String,
        domain: String,
        reason: String,
    },
}

/// The configured signing domains with their keys, most specific first.
pub struct Signers {
    signers: Vec<Signer>,
}

struct Signer {
    domain: String,
    key: Key,
}

enum Key {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

impl Signers {
    /// Reads every key; a missing or unreadable one stops the start.
    pub fn load(domains: &[DkimDomain]) -> Result<Signers, DkimError> {
        let keys = domains
            .iter()
            .map(|d| {
                std::fs::read(&d.private_key)
                    .map(|pem| (d.clone(), pem))
                    .map_err(|e| key_error(d, e.to_string()))
            })
            .collect::<Result<Vec<_>, DkimError>>()?;
        Signers::from_pems(&keys)
    }

    /// Signers from keys already read (PEM), one per domain table.
    pub fn from_pems(keys: &[(DkimDomain, Vec<u8>)]) -> Result<Signers, DkimError> {
        let mut signers = keys
            .iter()
            .map(|(d, pem)| {
                Ok(Signer {
                    domain: d.domain.clone(),
                    key: key_from_pem(d, pem)?,
                })
            })
            .collect::<Result<Vec<_>, DkimError>>()?;
        // Longest domain first, so the closest parent of a From: domain
        // wins; the sort is stable, so one domain's keys keep config order.
        signers.sort_by_key(|s| std::cmp::Reverse(s.domain.len()));
        Ok(Signers { signers })
    }

    /// The DKIM-Signature header fields (CRLF-terminated), one per key of
    /// the domain, to prepend to `message`; `None` when no signing domain
    /// covers its From: domain.
    pub fn sign(&self, message: &[u8]) -> Result<Option<String>, SignError> {
        if self.signers.is_empty() {
            return Ok(None);
        }
        let Some(from) = from_domain(message) else {
            return Ok(None);
        };
        let Some(domain) = self.domain_for(&from) else {
            return Ok(None);
        };
        // Every key of the domain, in config order: RFC 8463 dual signing
        // (RSA for receivers that do not know Ed25519 yet).
        let mut fields = String::new();
        for signer in self.signers.iter().filter(|s| s.domain == domain) {
            let signature = match &signer.key {
                Key::Rsa(s) => s.sign(message),
                Key::Ed25519(s) => s.sign(message),
            };
            let signature = signature.map_err(|e| SignError::Failed {
                domain: domain.to_string(),
                reason: e.to_string(),
            })?;
            fields.push_str(&signature.to_header());
        }
        if fields.len() > SIGNATURE_FIELDS_MAX {
            return Err(SignError::TooBig);
        }
        Ok(Some(fields))
    }

    /// Signs the message being built in `record` and puts the signature in
    /// front of it; a message no domain covers is left as it is.
    pub fn sign_record(&self, record: &mut MessageBuilder) -> Result<(), SignError> {
        if let Some(header) = self.sign(record.body())? {
            record.prepend_to_body(header.as_bytes());
        }
        Ok(())
    }

    /// The signing domain closest to `from`: itself, else its nearest parent.
    fn domain_for(&self, from: &str) -> Option<&str> {
        self.signers
            .iter()
            .find(|s| covers(&s.domain, from))
            .map(|s| s.domain.as_str())
    }
}

/// Whether signing domain `d` covers From: domain `from`: the same
/// domain or one below it (relaxed DMARC alignment), never a mere suffix.
fn covers(d: &str, from: &str) -> bool {
    from == d || from.strip_suffix(d).is_some_and(|rest| rest.ends_with('.'))
}

fn key_error(d: &DkimDomain, reason: String) -> DkimError {
    DkimError::Key {
        path: d.private_key.display().to_string(),
        domain: d.domain.clone(),
        reason,
    }
}

fn key_from_pem(d: &DkimDomain, pem: &[u8]) -> Result<Key, DkimError> {
    let fail = |reason: String| key_error(d, reason);
    let der = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("no private key in the file".into()))?;
    let rsa_error = match RsaKey::<Sha256>::from_key_der(der.clone_key()) {
        Ok(key) => return Ok(Key::Rsa(ready(DkimSigner::from_key(key), d))),
        Err(e) => e.to_string(),
    };
    // Not an RSA key ring takes (or one it refuses, e.g. under 2048 bits):
    // an Ed25519 key, or the RSA error is the one that explains.
    match &der {
        PrivateKeyDer::Pkcs8(p8) => {
            Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
                .map(|key| Key::Ed25519(ready(DkimSigner::from_key(key), d)))
                .map_err(|_| {
                    fail(format!(
                        "neither an Ed25519 key nor a usable RSA key ({rsa_error})"
                    ))
                })
        }
        _ => Err(fail(format!("not a usable RSA key ({rsa_error})"))),
    }
}

fn ready<T: mail_auth::common::crypto::SigningKey>(
    signer: DkimSigner<T>,
    d: &DkimDomain,
) -> DkimSigner<T, Done> {
    signer
        .domain(d.domain.clone())
        .selector(d.selector.clone())
        .headers(d.headers.iter().cloned())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// The domain of the From: address (RFC 5322.From, what DMARC aligns
/// with), lower case, IDNs in their A-label (xn--) form as in the config.
/// A header section with no From: field or several (RFC 5322 allows one,
/// and a receiver could show either) has none, so it is not signed.
fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let mut froms = parsed.header_values(mail_parser::HeaderName::From);
    let (Some(from), None) = (froms.next(), froms.next()) else {
        return None;
    };
    let address = from.as_address()?.first()?.address()?;
    let (_, domain) = address.rsplit_once('@')?;
    let ascii = idna::domain_to_ascii(domain.trim_end_matches('.')).ok()?;
    Some(ascii.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signers(domain: &str) -> Signers {
        let table = DkimDomain {
            domain: domain.into(),
            selector: "s1".into(),
            private_key: "test-key.pem".into(),
            headers: vec!["From".into(), "From".into(), "Subject".into()],
        };
        Signers::from_pems(&[(table, crate::fuzzing::TEST_ED25519_PEM.to_vec())]).unwrap()
    }

    #[test]
    fn signs_what_its_domain_covers_and_nothing_else() {
        let s = signers("shop.example");
        let signed = s
            .sign(b"From: MAILER-DAEMON@out.shop.example\r\nSubject: x\r\n\r\nbody\r\n")
            .unwrap()
            .unwrap();
        assert!(signed.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; s=s1; d=shop.example;"));
        assert!(signed.ends_with("\r\n"), "{signed}");
        for unsigned in [
            &b"From: a@other.example\r\n\r\nbody\r\n"[..],
            b"From: a@shop.example\r\nFrom: b@shop.example\r\n\r\nbody\r\n",
            b"Subject: no from\r\n\r\nbody\r\n",
            b"",
        ] {
            assert_eq!(s.sign(unsigned).unwrap(), None, "{unsigned:?}");
        }
    }

    #[test]
    fn a_key_that_is_no_key_is_refused_with_its_path() {
        let table = DkimDomain {
            domain: "shop.example".into(),
            selector: "s1".into(),
            private_key: "/keys/shop.pem".into(),
            headers: vec!["From".into()],
        };
        let err = Signers::from_pems(&[(table, b"hello".to_vec())])
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("dkim key /keys/shop.pem (for shop.example)"),
            "{err}"
        );
    }

    #[test]
    fn a_signing_domain_covers_itself_and_below_never_a_suffix() {
        assert!(covers("shop.test", "shop.test"));
        assert!(covers("shop.test", "mail.shop.test"));
        assert!(!covers("shop.test", "evilshop.test"));
        assert!(!covers("mail.shop.test", "shop.test"));
    }

    #[test]
    fn from_domain_reads_display_names_and_groups() {
        let cases: [(&[u8], Option<&str>); 6] = [
            (
                b"From: \"Shop, Inc\" <News@Mail.Shop.Example>\r\n\r\nx",
                Some("mail.shop.example"),
            ),
            (
                b"Subject: x\r\nFrom: a@b.example (c@d.example)\r\n\r\n",
                Some("b.example"),
            ),
            (
                b"From: list: one@g.example, two@h.example;\r\n\r\n",
                Some("g.example"),
            ),
            (b"Subject: no from\r\n\r\nFrom: x@y.example\r\n", None),
            (
                b"From: a@evil.example\r\nFrom: b@shop.example\r\n\r\n",
                None,
            ),
            (
                "From: a@b\u{fc}cher.example\r\n\r\n".as_bytes(),
                Some("xn--bcher-kva.example"),
            ),
        ];
        for (message, want) in cases {
            assert_eq!(from_domain(message).as_deref(), want, "{message:?}");
        }
    }
}
