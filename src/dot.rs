//! Dot-stuffing on the way out (RFC 5321 4.5.2): a line that starts with
//! "." gets one more, and the message ends with CRLF "." CRLF. Pure; the
//! body is walked as slices, never copied, so the delivery client can write
//! them straight from the spool mapping.

/// One piece of the stuffed body, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes of the body, as they are.
    Body(&'a [u8]),
    /// The extra "." in front of a line that starts with one.
    Dot,
}

/// The pieces of `body`, dot-stuffed. The terminator is not included: see
/// [`terminator`].
pub fn pieces(body: &[u8]) -> impl Iterator<Item = Piece<'_>> {
    let starts_with_dot = body.first() == Some(&b'.');
    let mut starts = memchr::memmem::find_iter(body, b"\n.").map(|lf| lf + 1);
    let mut next_start = 0;
    let mut pending_dot = starts_with_dot;
    let mut done = false;
    std::iter::from_fn(move || {
        if pending_dot {
            pending_dot = false;
            return Some(Piece::Dot);
        }
        if done {
            return None;
        }
        let from = next_start;
        match starts.next() {
            Some(line) => {
                next_start = line;
                pending_dot = true;
                Some(Piece::Body(&body[from..line]))
            }
            None => {
                done = true;
                (from < body.len()).then(|| Piece::Body(&body[from..]))
            }
        }
    })
}

/// What follows the body: ".\r\n", with a CRLF first if the body does not
/// end in one (spate's own bodies always do).
pub fn terminator(body: &[u8]) -> &'static [u8] {
    if body.is_empty() || body.ends_with(b"\r\n") {
        b".\r\n"
    } else {
        b"\r\n.\r\n"
    }
}

/// The whole stuffed message with its terminator, appended to `out`.
pub fn stuff_into(body: &[u8], out: &mut Vec<u8>) {
    for piece in pieces(body) {
        match piece {
            Piece::Body(b) => out.extend_from_slice(b),
            Piece::Dot => out.push(b'.'),
        }
    }
    out.extend_from_slice(terminator(body));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::data::DataReceiver;

    fn stuffed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        stuff_into(body, &mut out);
        out
    }

    #[test]
    fn lines_starting_with_a_dot_get_one_more() {
        assert_eq!(stuffed(b".a\r\nb\r\n..c\r\n"), b"..a\r\nb\r\n...c\r\n.\r\n");
        assert_eq!(stuffed(b"no dots\r\n"), b"no dots\r\n.\r\n");
        assert_eq!(stuffed(b""), b".\r\n");
        assert_eq!(stuffed(b"x"), b"x\r\n.\r\n");
        assert_eq!(stuffed(b"a\r\n."), b"a\r\n..\r\n.\r\n");
    }

    #[test]
    fn the_receiver_undoes_exactly_what_is_stuffed() {
        for body in [
            &b"a\r\n.\r\n..\r\n.x\r\n"[..],
            b".\r\n",
            b"plain\r\n",
            b"\r\n.\r\n\r\n",
        ] {
            let wire = stuffed(body);
            let mut out = Vec::new();
            let fed = DataReceiver::new(1 << 20).feed(&wire, &mut out);
            assert_eq!(fed.done, Some(Ok(())), "{body:?}");
            assert_eq!(fed.consumed, wire.len());
            assert_eq!(out, body);
        }
    }
}
