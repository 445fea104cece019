//! One-click unsubscribe tokens (RFC 8058): spate puts
//! `List-Unsubscribe: <https://HOST/u/TOKEN>` and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click` into the mail it
//! composes, and a POST to that URL suppresses the recipient for the
//! tenant.
//!
//! Owns: making a token that names a tenant and an address, and telling a
//! genuine token from a forged one. A token carries its tenant and address
//! itself, with an HMAC-SHA256 over them under a secret key, so checking
//! one needs no storage; a token never expires (RFC 8058 asks that the
//! URL keep working for as long as the mail might be read).
//!
//! Layout, before base64url (RFC 4648 section 5, no padding):
//! `[version 1][tenant length][tenant][address][HMAC-SHA256, 32 bytes]`,
//! the MAC taken over [`MAC_CONTEXT`] and every byte before it. A tenant
//! and address at their limits ([`TENANT_BYTES_MAX`],
//! [`ADDRESS_BYTES_MAX`]) make the longest token, [`TOKEN_CHARS_MAX`]
//! (472) characters: a URL a header line holds easily (998). A typical
//! one (`acme`, `bob@example.com`) is 71.
//!
//! The address is taken byte for byte: callers that want `Bob@Example.com`
//! and `bob@example.com` to be one subscriber normalise before signing.
//! Must never accept a token whose MAC is not checked in constant time,
//! and never do I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

/// A tenant name's longest (the listener's limit on `X-Spate-Tenant`).
pub const TENANT_BYTES_MAX: usize = 64;
/// An address's longest (the listener's limit on a path).
pub const ADDRESS_BYTES_MAX: usize = crate::listener::command::PATH_BYTES_MAX;
/// The shortest secret [`Signer::new`] takes.
pub const SECRET_BYTES_MIN: usize = 16;
/// Bytes of a token before encoding, at most.
pub const TOKEN_BYTES_MAX: usize = HEADER_BYTES + TENANT_BYTES_MAX + ADDRESS_BYTES_MAX + TAG_BYTES;
/// Characters of a token, at most; [`Signer::check`] refuses longer ones
/// unread.
pub const TOKEN_CHARS_MAX: usize = (TOKEN_BYTES_MAX * 4).div_ceil(3);
/// What the MAC is taken over first, so that a key shared by mistake with
/// another use of HMAC-SHA256 cannot sign tokens.
pub const MAC_CONTEXT: &[u8] = b"spate one-click unsubscribe\0";

const VERSION: u8 = 1;
/// The version byte and the tenant length byte.
const HEADER_BYTES: usize = 2;
const TAG_BYTES: usize = 32;

const _: () = assert!(TENANT_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(TOKEN_CHARS_MAX < 998 - "List-Unsubscribe: <https:///u/>".len() - 253);

/// Makes and checks tokens under one secret key.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { .. }") // never the key
    }
}

impl Signer {
    /// A signer with `secret` as its HMAC key (32 random bytes is right).
    ///
    /// Panics if `secret` is shorter than [`SECRET_BYTES_MIN`]: the
    /// configuration is checked before this.
    pub fn new(secret: &[u8]) -> Signer {
        assert!(
            secret.len() >= SECRET_BYTES_MIN,
            "an unsubscribe secret of {} bytes, fewer than {SECRET_BYTES_MIN}",
            secret.len()
        );
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A URL-safe token (base64url, no padding, at most
    /// [`TOKEN_CHARS_MAX`] characters) naming `tenant` (empty: none) and
    /// `address`, and their MAC; `None` if `tenant` is longer than
    /// [`TENANT_BYTES_MAX`] or `address` is empty or longer than
    /// [`ADDRESS_BYTES_MAX`] (such a message gets no link).
    pub fn token(&self, tenant: &str, address: &str) -> Option<String> {
        if tenant.len() > TENANT_BYTES_MAX || !(1..=ADDRESS_BYTES_MAX).contains(&address.len()) {
            return None;
        }
        let mut raw = Vec::with_capacity(TOKEN_BYTES_MAX);
        raw.push(VERSION);
        raw.push(tenant.len() as u8);
        raw.extend_from_slice(tenant.as_bytes());
        raw.extend_from_slice(address.as_bytes());
        let tag = hmac::sign(&self.key, &mac_input(&raw));
        raw.extend_from_slice(tag.as_ref());
        debug_assert!(raw.len() <= TOKEN_BYTES_MAX);
        Some(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The tenant and address if the token is genuine (made by a signer
    /// with this key); `None` for anything else. The MAC is checked in
    /// constant time (`ring::hmac::verify`) before anything in the token
    /// is believed.
    pub fn check(&self, token: &str) -> Option<(String, String)> {
        if token.len() > TOKEN_CHARS_MAX {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let (signed, tag) = raw.split_at_checked(raw.len().checked_sub(TAG_BYTES)?)?;
        let (&[version, tenant_len], names) = signed.split_first_chunk::<HEADER_BYTES>()?;
        if version != VERSION {
            return None;
        }
        let (tenant, address) = names.split_at_checked(tenant_len as usize)?;
        hmac::verify(&self.key, &mac_input(signed), tag).ok()?;
        // Genuine from here on; the checks below hold for any token that
        // `token` made, so they only guard against a leaked key.
        let ok =
            tenant.len() <= TENANT_BYTES_MAX && (1..=ADDRESS_BYTES_MAX).contains(&address.len());
        if !ok {
            return None;
        }
        let tenant = std::str::from_utf8(tenant).ok()?;
        let address = std::str::from_utf8(address).ok()?;
        Some((tenant.to_string(), address.to_string()))
    }
}

/// [`MAC_CONTEXT`] then the token's bytes before the tag.
fn mac_input(signed: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(MAC_CONTEXT.len() + signed.len());
    input.extend_from_slice(MAC_CONTEXT);
    input.extend_from_slice(signed);
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn signer() -> Signer {
        Signer::new(KEY)
    }

    #[test]
    fn round_trip() {
        let s = signer();
        for (tenant, address) in [
            ("acme", "bob@example.com"),
            ("", "carol@example.net"),
            ("t.1_x-y", "\"odd local\"@example.org"),
            ("acme", "jos\u{e9}@b\u{fc}cher.example"),
        ] {
            let t = s.token(tenant, address).unwrap();
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(s.check(&t), Some((tenant.to_string(), address.to_string())));
        }
    }

    #[test]
    fn tokens_are_deterministic_and_distinct() {
        let s = signer();
        assert_eq!(
            s.token("acme", "bob@example.com").unwrap(),
            s.token("acme", "bob@example.com").unwrap()
        );
        assert_ne!(
            s.token("acme", "bob@example.com").unwrap(),
            s.token("acme", "Bob@example.com").unwrap()
        );
        // The tenant length byte keeps the split unambiguous.
        assert_ne!(s.token("ab", "c@x").unwrap(), s.token("a", "bc@x").unwrap());
        assert_eq!(s.token("acme", "bob@example.com").unwrap().len(), 71);
    }

    #[test]
    fn every_flipped_byte_fails() {
        let s = signer();
        let raw = URL_SAFE_NO_PAD
            .decode(s.token("acme", "bob@example.com").unwrap())
            .unwrap();
        for i in 0..raw.len() {
            for bit in [0x01, 0x80] {
                let mut forged = raw.clone();
                forged[i] ^= bit;
                assert_eq!(s.check(&URL_SAFE_NO_PAD.encode(&forged)), None, "byte {i}");
            }
        }
    }

    #[test]
    fn a_changed_address_with_the_old_tag_fails() {
        let s = signer();
        let mut raw = URL_SAFE_NO_PAD
            .decode(s.token("acme", "bob@example.com").unwrap())
            .unwrap();
        let at = raw.iter().position(|&b| b == b'b').unwrap();
        raw[at] = b'r'; // "rob@example.com", tag unchanged
        assert_eq!(s.check(&URL_SAFE_NO_PAD.encode(&raw)), None);
    }

    #[test]
    fn wrong_key_fails() {
        let t = signer().token("acme", "bob@example.com").unwrap();
        let other = Signer::new(b"fedcba9876543210fedcba9876543210");
        assert_eq!(other.check(&t), None);
    }

    #[test]
    fn garbage_fails() {
        let s = signer();
        let t = s.token("acme", "bob@example.com").unwrap();
        for bad in [
            "",
            "A",
            "AQ",
            "not base64 at all!",
            "////",
            &format!("{t}="),  // padding
            &format!("{t}A"),  // one more character
            &t[..t.len() - 1], // one fewer
            &t[1..],
        ] {
            assert_eq!(s.check(bad), None, "{bad:?}");
        }
        // Short raw tokens of every length up to a whole tag and header.
        for n in 0..=HEADER_BYTES + TAG_BYTES + 1 {
            let raw = vec![VERSION; n];
            assert_eq!(s.check(&URL_SAFE_NO_PAD.encode(&raw)), None, "{n} bytes");
        }
        // A tenant length past the end.
        let mut raw = vec![VERSION, 200];
        raw.extend_from_slice(&[0; TAG_BYTES + 4]);
        assert_eq!(s.check(&URL_SAFE_NO_PAD.encode(&raw)), None);
    }

    #[test]
    fn length_limits() {
        let s = signer();
        let tenant = "t".repeat(TENANT_BYTES_MAX);
        let address = format!("{}@example.com", "a".repeat(ADDRESS_BYTES_MAX - 12));
        let t = s.token(&tenant, &address).unwrap();
        assert_eq!(t.len(), TOKEN_CHARS_MAX);
        assert_eq!(TOKEN_CHARS_MAX, 472);
        assert_eq!(s.check(&t), Some((tenant, address)));
        let too_long = "A".repeat(TOKEN_CHARS_MAX + 4);
        assert_eq!(s.check(&too_long), None);
    }

    #[test]
    fn a_tenant_or_address_over_the_limit_gets_no_token() {
        assert_eq!(
            signer().token(&"t".repeat(TENANT_BYTES_MAX + 1), "bob@example.com"),
            None
        );
        assert_eq!(
            signer().token("acme", &"a".repeat(ADDRESS_BYTES_MAX + 1)),
            None
        );
        assert_eq!(signer().token("acme", ""), None);
    }

    #[test]
    #[should_panic(expected = "fewer than 16")]
    fn a_short_secret_is_refused() {
        Signer::new(b"short");
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(format!("{:?}", signer()), "Signer { .. }");
    }
}
