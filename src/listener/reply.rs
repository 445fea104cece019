//! An SMTP reply: a code and its text (which starts with the enhanced
//! status code, RFC 3463).

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            text: text.into(),
        }
    }

    /// The single reply line, without CRLF.
    pub fn line(&self) -> String {
        format!("{} {}", self.code, self.text)
    }

    /// Whether the client caused it (counts toward the error limit).
    pub fn is_client_error(&self) -> bool {
        (500..600).contains(&self.code)
    }
}
