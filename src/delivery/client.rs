//! One delivery connection's SMTP conversation, client side (RFC 5321 with
//! PIPELINING, SIZE, 8BITMIME, SMTPUTF8 and STARTTLS).
//!
//! It must never emit a bare CR or LF, never read a line the server sent
//! before the TLS handshake as part of the TLS session, and never report a
//! recipient delivered without a 2yz reply to the final dot.

use super::connect::{server_name, start_connect, ClientStream};
use super::outcome::{classify, classify_rcpt, connection_lost, Outcome, SmtpReply};
use crate::conn::{with_timeout, Conn};
use crate::message::{Envelope, MessageHandle};
use rustls::ClientConfig;
use spool_format::{FLAG_8BITMIME, FLAG_SMTPUTF8};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Bodies up to this size are copied into the send buffer with their final
/// dot and go out in one write; larger ones are written from the mapping.
pub const INLINE_BODY_BYTES_MAX: usize = 64 * 1024;

/// Longest reply line accepted, and most lines in one reply.
pub const REPLY_LINE_BYTES_MAX: usize = 4096;
pub const REPLY_LINES_MAX: usize = 100;

/// What the server's EHLO reply offered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Caps {
    pub pipelining: bool,
    /// `Some(0)`: SIZE without a limit.
    pub size: Option<u64>,
    pub eightbit: bool,
    pub smtputf8: bool,
    pub starttls: bool,
}

impl Caps {
    /// Reads the keywords of an EHLO reply, given its whole lines ("250-...").
    pub fn parse(reply_lines: &[String]) -> Caps {
        let mut caps = Caps::default();
        for line in reply_lines.iter().skip(1) {
            let mut words = line.get(4..).unwrap_or("").split_ascii_whitespace();
            match words.next().map(|w| w.to_ascii_uppercase()).as_deref() {
                Some("PIPELINING") => caps.pipelining = true,
                Some("SIZE") => {
                    caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0))
                }
                Some("8BITMIME") => caps.eightbit = true,
                Some("SMTPUTF8") => caps.smtputf8 = true,
                Some("STARTTLS") => caps.starttls = true,
                _ => {}
            }
        }
        caps
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub final_reply: Duration,
}

/// Why a connection could not be made ready for transactions.
#[derive(Debug)]
pub enum OpenError {
    /// TCP, greeting or EHLO failed: try the next host.
    Unavailable(String),
    /// STARTTLS failed after the server offered it.
    Tls(String),
    /// TLS is required and the server does not offer it.
    NoTls,
}

/// How to open a connection.
pub struct OpenSpec<'a> {
    pub host: &'a str,
    pub ip: IpAddr,
    pub port: u16,
    pub source: Option<IpAddr>,
    pub ehlo_name: &'a str,
    pub tls: Option<Arc<ClientConfig>>,
    pub tls_required: bool,
    pub timeouts: Timeouts,
}

pub struct Client {
    conn: Conn<ClientStream>,
    /// The server said 421: it is closing the connection (RFC 5321 3.8).
    closing: bool,
    pub caps: Caps,
    pub host: String,
    pub ip: IpAddr,
    pub tls: bool,
    timeouts: Timeouts,
}

impl Client {
    /// Connects, reads the greeting, says EHLO, and does STARTTLS as `spec` asks.
    pub async fn open(spec: OpenSpec<'_>) -> Result<Client, OpenError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            OpenError::Unavailable(format!("{} [{}]: {what}: {e}", spec.host, spec.ip))
        };
        let tcp = start_connect(spec.ip, spec.port, spec.source)
            .map_err(|e| unavailable("connect", &e))?;
        let mut client = Client {
            conn: Conn::new(ClientStream::Plain(tcp)),
            closing: false,
            caps: Caps::default(),
            host: spec.host.to_string(),
            ip: spec.ip,
            tls: false,
            timeouts: spec.timeouts,
        };
        let greeting = client
            .read_reply(spec.timeouts.connect)
            .await
            .map_err(|e| unavailable("greeting", &e))?;
        if greeting.code != 220 {
            client.quit().await;
            return Err(unavailable("greeting", &greeting));
        }
        client
            .hello(spec.ehlo_name)
            .await
            .map_err(|e| unavailable("EHLO", &e))?;
        match (&spec.tls, client.caps.starttls) {
            (Some(config), true) => client.start_tls(config.clone(), spec.ehlo_name).await,
            (Some(_), false) if spec.tls_required => {
                client.quit().await;
                Err(OpenError::NoTls)
            }
            _ => Ok(client),
        }
    }

    async fn start_tls(
        mut self,
        config: Arc<ClientConfig>,
        ehlo_name: &str,
    ) -> Result<Client, OpenError> {
        let reply = self
            .command("STARTTLS")
            .await
            .map_err(|e| OpenError::Tls(format!("STARTTLS: {e}")))?;
        if reply.code != 220 {
            return Err(OpenError::Tls(format!("STARTTLS refused: {reply}")));
        }
        if !self.conn.buffered().is_empty() {
            // Bytes the server sent after its 220 but before the handshake
            // would be read as if they came through TLS: abort instead.
            return Err(OpenError::Tls(
                "server sent data before the TLS handshake".into(),
            ));
        }
        let ClientStream::Plain(tcp) = self.conn.into_stream() else {
            unreachable!("STARTTLS happens once")
        };
        let name = server_name(&self.host, self.ip);
        let connector = futures_rustls::TlsConnector::from(config);
        let tls = with_timeout(self.timeouts.command, connector.connect(name, tcp))
            .await
            .map_err(|e| OpenError::Tls(format!("TLS handshake with {}: {e}", self.host)))?;
        self.conn = Conn::new(ClientStream::Tls(Box::new(tls)));
        self.tls = true;
        // RFC 3207 4.2: forget what EHLO said before TLS and ask again.
        self.hello(ehlo_name)
            .await
            .map_err(|e| OpenError::Tls(format!("EHLO after STARTTLS: {e}")))?;
        Ok(self)
    }

    /// EHLO, falling back to HELO when the server refuses EHLO.
    async fn hello(&mut self, name: &str) -> io::Result<()> {
        let (code, lines) = self.command_lines(&format!("EHLO {name}")).await?;
        if code == 250 {
            self.caps = Caps::parse(&lines);
            return Ok(());
        }
        self.caps = Caps::default();
        let helo = self.command(&format!("HELO {name}")).await?;
        if helo.code == 250 {
            Ok(())
        } else {
            Err(io::Error::other(format!("HELO refused: {helo}")))
        }
    }

    async fn command(&mut self, line: &str) -> io::Result<SmtpReply> {
        self.conn.queue_line(line);
        self.read_reply(self.timeouts.command).await
    }

    async fn command_lines(&mut self, line: &str) -> io::Result<(u16, Vec<String>)> {
        self.conn.queue_line(line);
        self.read_reply_lines(self.timeouts.command).await
    }

    /// Reads one whole reply (flushing what is queued first).
    async fn read_reply(&mut self, timeout: Duration) -> io::Result<SmtpReply> {
        let (code, lines) = self.read_reply_lines(timeout).await?;
        self.closing |= code == 421;
        Ok(SmtpReply {
            code,
            text: lines
                .iter()
                .map(|l| l.get(4..).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(" "),
        })
    }

    async fn read_reply_lines(&mut self, timeout: Duration) -> io::Result<(u16, Vec<String>)> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(timeout).await?;
            let Some((code, last)) = reply_line(&line) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("malformed reply line {line:?}"),
                ));
            };
            // Every line of a reply carries the same code (RFC 5321
            // 4.2.1); a reply whose lines disagree is out of step, and
            // no line of it may decide a recipient's fate.
            if lines
                .first()
                .and_then(|l: &String| reply_line(l))
                .is_some_and(|(first, _)| first != code)
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "reply lines carry different codes: {:?} then {line:?}",
                        lines[0]
                    ),
                ));
            }
            lines.push(line);
            if last {
                return Ok((code, lines));
            }
            if lines.len() >= REPLY_LINES_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "reply has too many lines",
                ));
            }
        }
    }

    async fn read_line(&mut self, timeout: Duration) -> io::Result<String> {
        loop {
            let buf = self.conn.buffered();
            if let Some(lf) = memchr::memchr(b'\n', buf) {
                let line = String::from_utf8_lossy(&buf[..lf])
                    .trim_end_matches('\r')
                    .to_string();
                self.conn.consume(lf + 1);
                return Ok(line);
            }
            if buf.len() > REPLY_LINE_BYTES_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "reply line too long",
                ));
            }
            if self.conn.fill(timeout).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
        }
    }

    /// Sends one message to `rcpts` (index, address) and says what happened
    /// to each. `true` in the second place: the connection is no longer usable.
    pub async fn send(
        &mut self,
        msg: &MessageHandle,
        envelope: &Envelope,
        rcpts: &[(u32, &str)],
    ) -> (Vec<(u32, Outcome)>, bool) {
        if let Some(refusal) = self.refuse_before_sending(msg, envelope, rcpts) {
            return (
                rcpts.iter().map(|(i, _)| (*i, refusal.clone())).collect(),
                false,
            );
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; rcpts.len()];
        let result = self.transaction(msg, envelope, rcpts, &mut outcomes).await;
        let broken = result.is_err() || self.closing;
        let lost = result.err().map(|(stage, e)| connection_lost(stage, &e));
        let decided = rcpts.iter().zip(outcomes).map(|((i, _), o)| {
            (
                *i,
                o.or_else(|| lost.clone())
                    .expect("every recipient decided or the connection lost"),
            )
        });
        (decided.collect(), broken)
    }

    /// A message this server cannot take as it is bounces without a try.
    fn refuse_before_sending(
        &self,
        msg: &MessageHandle,
        envelope: &Envelope,
        rcpts: &[(u32, &str)],
    ) -> Option<Outcome> {
        if !self.caps.smtputf8 && needs_smtputf8(msg, envelope, rcpts) {
            return Some(Outcome::Bounced(format!(
                "553 5.6.7 {} does not support SMTPUTF8, which this message needs",
                self.host
            )));
        }
        match self.caps.size {
            Some(max) if max > 0 && msg.body_len() as u64 > max => Some(Outcome::Bounced(format!(
                "552 5.3.4 message of {} bytes exceeds the {max}-byte limit of {}",
                msg.body_len(),
                self.host
            ))),
            _ => None,
        }
    }

    fn mail_command(&self, msg: &MessageHandle, envelope: &Envelope) -> String {
        let flags = envelope.flags();
        let mut mail = format!("MAIL FROM:<{}>", envelope.sender());
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={}", msg.body_len()));
        }
        if flags & FLAG_8BITMIME != 0 && self.caps.eightbit {
            mail.push_str(" BODY=8BITMIME");
        }
        // Passed on where the server takes it; where it does not, the
        // message went on only because nothing in it needs UTF-8.
        if flags & FLAG_SMTPUTF8 != 0 && self.caps.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail
    }

    /// The envelope and body exchange. Errors carry the stage they broke in.
    async fn transaction(
        &mut self,
        msg: &MessageHandle,
        envelope: &Envelope,
        rcpts: &[(u32, &str)],
        out: &mut [Option<Outcome>],
    ) -> Result<(), (&'static str, io::Error)> {
        let (mail, rcpt_replies, data) = self.envelope(msg, envelope, rcpts).await?;
        if mail.code / 100 != 2 {
            out.iter_mut().for_each(|o| *o = Some(classify(&mail)));
            return self.reset().await;
        }
        let mut accepted = Vec::new();
        for (i, reply) in rcpt_replies.iter().enumerate() {
            match classify_rcpt(reply) {
                Outcome::Delivered(_) => accepted.push(i),
                other => out[i] = Some(other),
            }
        }
        if accepted.is_empty() {
            // Nothing to send. A 452 with no recipient accepted is a plain deferral.
            for o in out.iter_mut() {
                if let Some(Outcome::Retry(t)) = o {
                    *o = Some(Outcome::Deferred(t.clone()));
                }
            }
            if data.as_ref().is_some_and(|d| d.code == 354) {
                self.conn.queue_raw(b".\r\n");
                self.read_reply(self.timeouts.final_reply)
                    .await
                    .map_err(|e| ("after an empty DATA", e))?;
            }
            return self.reset().await;
        }
        let data = data.expect("DATA is sent when a recipient was accepted");
        if data.code < 400 && data.code != 354 {
            // No server answers DATA so: the replies are out of step, and a
            // 2yz here must never pass for a delivery.
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected reply to DATA: {data}"),
            );
            return Err(("after DATA", e));
        }
        if data.code != 354 {
            accepted
                .iter()
                .for_each(|&i| out[i] = Some(classify(&data)));
            return self.reset().await;
        }
        self.write_body(&msg.body())
            .await
            .map_err(|e| ("during DATA", e))?;
        let done = self
            .read_reply(self.timeouts.final_reply)
            .await
            .map_err(|e| ("after the final dot", e))?;
        accepted
            .iter()
            .for_each(|&i| out[i] = Some(classify(&done)));
        Ok(())
    }

    /// MAIL, RCPTs and DATA: in one write with PIPELINING, else in lockstep.
    /// DATA is only sent (or, pipelined, only read) when it can matter.
    #[allow(clippy::type_complexity)]
    async fn envelope(
        &mut self,
        msg: &MessageHandle,
        envelope: &Envelope,
        rcpts: &[(u32, &str)],
    ) -> Result<(SmtpReply, Vec<SmtpReply>, Option<SmtpReply>), (&'static str, io::Error)> {
        let t = self.timeouts.command;
        self.conn.queue_line(&self.mail_command(msg, envelope));
        if self.caps.pipelining {
            for (_, addr) in rcpts {
                self.conn.queue_line(&format!("RCPT TO:<{addr}>"));
            }
            self.conn.queue_line("DATA");
            let mail = self.read_reply(t).await.map_err(|e| ("after MAIL", e))?;
            let mut replies = Vec::with_capacity(rcpts.len());
            for _ in rcpts {
                replies.push(self.read_reply(t).await.map_err(|e| ("after RCPT", e))?);
            }
            let data = self.read_reply(t).await.map_err(|e| ("after DATA", e))?;
            return Ok((mail, replies, Some(data)));
        }
        let mail = self.read_reply(t).await.map_err(|e| ("after MAIL", e))?;
        let mut replies = Vec::with_capacity(rcpts.len());
        if mail.code / 100 == 2 {
            for (_, addr) in rcpts {
                replies.push(
                    self.command(&format!("RCPT TO:<{addr}>"))
                        .await
                        .map_err(|e| ("after RCPT", e))?,
                );
            }
        }
        let data = if replies.iter().any(|r| r.code / 100 == 2) {
            Some(self.command("DATA").await.map_err(|e| ("after DATA", e))?)
        } else {
            None
        };
        Ok((mail, replies, data))
    }

    async fn reset(&mut self) -> Result<(), (&'static str, io::Error)> {
        self.command("RSET")
            .await
            .map(|_| ())
            .map_err(|e| ("after RSET", e))
    }

    /// Streams the body from the spool mapping, dot-stuffing on the fly:
    /// a line that starts with "." gets one more.
    async fn write_body(&mut self, body: &[u8]) -> io::Result<()> {
        if body.len() <= INLINE_BODY_BYTES_MAX {
            // One send for body and final dot: a 4 KiB copy into the
            // connection's buffer costs far less than the extra syscalls
            // (measured: perf/results/). Large bodies go straight from the
            // mapping.
            for piece in crate::dot::pieces(body) {
                match piece {
                    crate::dot::Piece::Body(bytes) => self.conn.queue_raw(bytes),
                    crate::dot::Piece::Dot => self.conn.queue_raw(b"."),
                }
            }
            self.conn.queue_raw(crate::dot::terminator(body));
            return Ok(());
        }
        for piece in crate::dot::pieces(body) {
            match piece {
                crate::dot::Piece::Body(bytes) => self.conn.write_direct(bytes).await?,
                crate::dot::Piece::Dot => self.conn.queue_raw(b"."),
            }
        }
        self.conn.queue_raw(crate::dot::terminator(body));
        Ok(())
    }

    /// Says QUIT and waits briefly for the reply; the connection is done either way.
    pub async fn quit(mut self) {
        self.conn.queue_line("QUIT");
        let _ = self
            .read_reply(Duration::from_secs(5).min(self.timeouts.command))
            .await;
    }
}

/// Whether this transaction needs a server that offers SMTPUTF8: decided
/// by the content, not by the client's parameter (RFC 6531 3.4). It does
/// when it was sent with SMTPUTF8 and the sender, a recipient of this
/// transaction or the header section is not all ASCII. (A body of 8-bit
/// text needs only 8BITMIME.)
fn needs_smtputf8(msg: &MessageHandle, envelope: &Envelope, rcpts: &[(u32, &str)]) -> bool {
    if envelope.flags() & FLAG_SMTPUTF8 == 0 {
        return false;
    }
    if !envelope.sender().is_ascii() || rcpts.iter().any(|(_, a)| !a.is_ascii()) {
        return true;
    }
    let body = msg.body();
    let header_end = memchr::memmem::find(&body, b"\r\n\r\n").map_or(body.len(), |p| p + 2);
    !body[..header_end].is_ascii()
}

/// Reads one reply line: its code (200 to 599) and whether it is the last
/// line of the reply; `None` if it is no reply line.
pub fn reply_line(line: &str) -> Option<(u16, bool)> {
    let code = line
        .get(..3)?
        .parse::<u16>()
        .ok()
        .filter(|c| (200..600).contains(c))?;
    match line.as_bytes().get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(reply_line("250 ok"), Some((250, true)));
        assert_eq!(reply_line("250-more"), Some((250, false)));
        assert_eq!(reply_line("250"), Some((250, true)));
        assert_eq!(reply_line("2500 x"), None);
        assert_eq!(reply_line("999 x"), None);
        assert_eq!(reply_line("é"), None);
    }

    #[test]
    fn ehlo_keywords() {
        let lines: Vec<String> = [
            "250-mx.test Hello",
            "250-PIPELINING",
            "250-SIZE 1000",
            "250-8BITMIME",
            "250-starttls",
            "250 SMTPUTF8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let caps = Caps::parse(&lines);
        assert_eq!(
            caps,
            Caps {
                pipelining: true,
                size: Some(1000),
                eightbit: true,
                smtputf8: true,
                starttls: true
            }
        );
    }
}
