//! The shared secret of a webhook and the `X-Spate-Signature` it makes:
//! `sha256=` and the lowercase hex HMAC-SHA256 (RFC 2104) of the whole
//! body. The secret file is read once, on the main thread before the
//! cores start, and refused when every user may read it (as the admin
//! token file is). A trailing line end is not part of the secret.

use std::path::Path;

/// A secret shorter than this is refused: a guessable key signs nothing.
pub const SECRET_BYTES_MIN: usize = 16;
pub const SECRET_BYTES_MAX: usize = 4096;

/// A loaded key; its Debug shows no secret.
#[derive(Clone)]
pub struct Secret(ring::hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(bytes: &[u8]) -> Secret {
        Secret(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }

    pub fn load(path: &Path) -> Result<Secret, String> {
        use std::os::unix::fs::PermissionsExt;
        let what =
            |e: &dyn std::fmt::Display| format!("webhook secret file {}: {e}", path.display());
        let mode = std::fs::metadata(path)
            .map_err(|e| what(&e))?
            .permissions()
            .mode();
        if mode & 0o004 != 0 {
            return Err(what(&format!(
                "readable by every user (mode {:o}); chmod o-r it",
                mode & 0o777
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| what(&e))?;
        let trimmed = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(&bytes);
        if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&trimmed.len()) {
            return Err(what(&format!(
                "a secret is {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes"
            )));
        }
        Ok(Secret::new(trimmed))
    }

    /// The header value for `body`.
    pub fn signature(&self, body: &[u8]) -> String {
        let tag = ring::hmac::sign(&self.0, body);
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256=");
        for b in tag.as_ref() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// RFC 4231, test case 2 (HMAC-SHA256).
    #[test]
    fn rfc_4231_case_2() {
        let s = Secret::new(b"Jefe");
        assert_eq!(
            s.signature(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_file_every_user_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Secret::load(&path).unwrap_err();
        assert!(err.contains("readable by every user"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Secret::load(&path).unwrap();
        // The line end is not part of the key.
        assert_eq!(
            s.signature(b"x"),
            Secret::new(b"0123456789abcdef0123").signature(b"x")
        );
        std::fs::write(&path, "short\n").unwrap();
        assert!(Secret::load(&path).unwrap_err().contains("16 to"));
        assert!(Secret::load(&dir.path().join("none")).is_err());
    }
}
