//! The admin server's bearer tokens: read from `admin.token_file` (lines
//! of `NAME:TOKEN`; a line with no name is the token "admin"), or, when
//! none is configured, made fresh at each start and written to
//! `<spool dir>/admin.token` (mode 0600) for `spate ctl` on the same
//! machine. Loaded once, on the main thread, before the cores start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file spate writes its token to when none is configured.
pub const GENERATED_FILE: &str = "admin.token";
/// Tokens shorter than this are refused: a guessable token is no lock.
pub const TOKEN_CHARS_MIN: usize = 16;
pub const TOKENS_MAX: usize = 1000;

#[derive(Debug, Clone)]
pub struct Tokens {
    list: Vec<(String, String)>,
}

impl Tokens {
    /// The configured file's tokens, or a new one written beside the spool.
    pub fn load_or_make(file: Option<&Path>, spool_dir: &Path) -> Result<Tokens, String> {
        match file {
            Some(path) => Tokens::load(path),
            None => Tokens::make(&spool_dir.join(GENERATED_FILE)),
        }
    }

    pub fn load(path: &Path) -> Result<Tokens, String> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("admin token file {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o004 != 0 {
            return Err(format!(
                "admin token file {}: readable by every user (mode {:o}); chmod o-r it",
                path.display(),
                mode & 0o777
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("admin token file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("admin token file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut list = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = line.split_once(':').unwrap_or(("admin", line));
            let (name, token) = (name.trim(), token.trim());
            if token.len() < TOKEN_CHARS_MIN || token.chars().any(|c| c.is_whitespace()) {
                return Err(format!(
                    "line {}: a token is at least {TOKEN_CHARS_MIN} characters, without spaces",
                    n + 1
                ));
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!(
                    "line {}: a name is letters, digits, '.', '_' or '-'",
                    n + 1
                ));
            }
            list.push((name.to_string(), token.to_string()));
        }
        if list.is_empty() {
            return Err("no tokens".into());
        }
        if list.len() > TOKENS_MAX {
            return Err(format!("more than {TOKENS_MAX} tokens"));
        }
        Ok(Tokens { list })
    }

    /// A fresh random token, written to `path` (replacing the last run's).
    fn make(path: &Path) -> Result<Tokens, String> {
        let mut bytes = [0u8; 24];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = path.with_extension("token.new");
        let io = |e: std::io::Error| format!("admin token {}: {e}", path.display());
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        writeln!(f, "admin:{token}").map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(Tokens {
            list: vec![("admin".into(), token)],
        })
    }

    /// The name of the token in an `Authorization` header's value.
    pub fn who(&self, authorization: Option<&str>) -> Option<&str> {
        // The scheme's name is case-insensitive (RFC 9110 11.1).
        let (scheme, given) = authorization?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let given = given.trim();
        self.list
            .iter()
            .find(|(_, t)| same(t.as_bytes(), given.as_bytes()))
            .map(|(name, _)| name.as_str())
    }

    /// The first token, for `spate ctl`.
    pub fn first(&self) -> &str {
        &self.list[0].1
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where `spate ctl` looks for a token by default: the generated file in
/// the configured spool directory.
pub fn default_file(spool_dir: &Path) -> PathBuf {
    spool_dir.join(GENERATED_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tokens_and_refuses_short_ones() {
        let t = Tokens::parse("# ops\nalice:0123456789abcdef0\n0123456789abcdefXYZ\n").unwrap();
        assert_eq!(t.who(Some("Bearer 0123456789abcdef0")), Some("alice"));
        assert_eq!(t.who(Some("Bearer 0123456789abcdefXYZ")), Some("admin"));
        assert_eq!(t.who(Some("bearer 0123456789abcdefXYZ")), Some("admin"));
        assert_eq!(t.who(Some("Basic 0123456789abcdefXYZ")), None);
        assert_eq!(t.who(Some("Bearer 0123456789abcdef1")), None);
        assert_eq!(t.who(Some("0123456789abcdef0")), None);
        assert_eq!(t.who(None), None);
        assert!(Tokens::parse("bob:short\n").is_err());
        assert!(Tokens::parse("\n").is_err());
    }

    #[test]
    fn a_made_token_is_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::load_or_make(None, dir.path()).unwrap();
        let path = dir.path().join(GENERATED_FILE);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = Tokens::load(&path).unwrap();
        assert_eq!(again.first(), t.first());
    }
}
