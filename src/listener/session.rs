//! One SMTP session (RFC 5321, with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES and STARTTLS).
//!
//! The session must never reply 250 to DATA before the spool has made the
//! message durable, and must never read plaintext buffered before STARTTLS
//! as part of the TLS session.

use super::admission::DataLease;
use super::command::{self, Command, MailParams, COMMAND_LINE_BYTES_MAX};
use super::data::{DataError, DataReceiver, TEXT_LINE_BYTES_MAX};
use super::reply::Reply;
use crate::conn::Conn;
use crate::dkim::SignError;
use crate::engine::{Accepted, Core};
use crate::spool::SpoolError;
use futures_lite::{AsyncRead, AsyncWrite};
use spool_format::{MessageBuilder, FLAG_8BITMIME, FLAG_SMTPUTF8};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// How a session ended.
pub enum End<S> {
    Closed,
    /// The client asked for STARTTLS and got 220: hand the stream to TLS.
    StartTls(S),
}

struct Transaction {
    sender: String,
    params: MailParams,
    recipients: Vec<String>,
    /// RCPTs refused with 452 because `recipients` was full.
    overshoot: u32,
    /// The recipients are `feedback.addresses`: the message is a
    /// complaint report, taken in here rather than relayed.
    feedback: bool,
}

pub struct Session<S> {
    conn: Conn<S>,
    core: Rc<Core>,
    peer: SocketAddr,
    tls: bool,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
}

/// A command line read from the client.
enum Line {
    Command(Vec<u8>),
    TooLong,
    BareLf,
}

/// Why the session stops reading.
enum Stop {
    Eof,
    Timeout,
    Shutdown,
    Io,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub fn new(stream: S, core: Rc<Core>, peer: SocketAddr, tls: bool) -> Session<S> {
        Session {
            conn: Conn::new(stream),
            core,
            peer,
            tls,
            helo: None,
            esmtp: false,
            tx: None,
            errors: 0,
        }
    }

    pub async fn run(mut self, greet: bool) -> End<S> {
        if greet {
            let hello = format!("220 {} ESMTP spate", self.core.cfg.hostname);
            self.conn.queue_line(&hello);
        }
        loop {
            let line = match self.read_line().await {
                Ok(line) => line,
                Err(stop) => return self.stop(stop).await,
            };
            let reply = match line {
                Line::TooLong => Some(Reply::new(500, "5.5.2 Line too long")),
                Line::BareLf => Some(Reply::new(500, "5.5.2 Commands must end with CRLF")),
                Line::Command(bytes) => match command::parse(&bytes) {
                    Err(reply) => Some(reply),
                    Ok(Command::Quit) => {
                        self.conn.queue_line("221 2.0.0 Bye");
                        let _ = self.conn.flush().await;
                        return End::Closed;
                    }
                    Ok(Command::StartTls) if self.core.tls.is_some() && !self.tls => {
                        self.conn.queue_line("220 2.0.0 Ready to start TLS");
                        if self.conn.flush().await.is_err() {
                            return End::Closed;
                        }
                        self.conn.discard_input();
                        return End::StartTls(self.conn.into_stream());
                    }
                    Ok(Command::Data) => match self.data().await {
                        Ok(reply) => Some(reply),
                        Err(stop) => return self.stop(stop).await,
                    },
                    Ok(cmd) => self.command(cmd),
                },
            };
            if let Some(reply) = reply {
                self.conn.queue_line(&reply.line());
                if reply.code == 421 {
                    // RFC 5321 3.8: after 421 the server closes the connection.
                    let _ = self.conn.flush().await;
                    return End::Closed;
                }
                // A 452 for too many recipients counts only past the
                // overshoot allowance, so a flood of RCPTs still ends at the
                // error limit.
                if reply.is_client_error() && reply.code != 552
                    || reply.code == 452 && self.counts_452(&reply)
                {
                    self.errors += 1;
                    if self.errors >= self.core.cfg.max_errors {
                        self.conn
                            .queue_line("421 4.7.0 Too many errors, closing connection");
                        let _ = self.conn.flush().await;
                        return End::Closed;
                    }
                }
            }
        }
    }

    /// Whether a 452 just sent counts toward `max_errors`: one for a full
    /// recipient list (4.5.3) does only past `max_recipient_overshoot` of
    /// them in the transaction; any other 452 (a full disk) always does.
    fn counts_452(&self, reply: &Reply) -> bool {
        if !reply.text.starts_with("4.5.3") {
            return true;
        }
        self.tx
            .as_ref()
            .is_none_or(|tx| tx.overshoot > self.core.cfg.max_recipient_overshoot)
    }

    async fn stop(&mut self, why: Stop) -> End<S> {
        let line = match why {
            Stop::Eof | Stop::Io => return End::Closed,
            Stop::Timeout => format!(
                "421 4.4.2 {} Timeout, closing connection",
                self.core.cfg.hostname
            ),
            Stop::Shutdown => format!(
                "421 4.3.2 {} Shutting down, try again later",
                self.core.cfg.hostname
            ),
        };
        self.conn.queue_line(&line);
        let _ = self.conn.flush().await;
        End::Closed
    }

    /// Reads the next command line. Between transactions a shutdown ends the
    /// wait; inside one the client may finish.
    async fn read_line(&mut self) -> Result<Line, Stop> {
        let mut discarding = false;
        // The whole line must arrive within the command timeout: a client
        // that trickles bytes (slowloris) does not reset it.
        let deadline = Instant::now() + self.core.cfg.command_timeout;
        loop {
            let buf = self.conn.buffered();
            if let Some(lf) = memchr::memchr(b'\n', buf) {
                let too_long = discarding || lf + 1 > COMMAND_LINE_BYTES_MAX;
                let bare = lf == 0 || buf[lf - 1] != b'\r';
                let line = buf[..lf.saturating_sub(1)].to_vec();
                self.conn.consume(lf + 1);
                return Ok(if too_long {
                    Line::TooLong
                } else if bare {
                    Line::BareLf
                } else {
                    Line::Command(line)
                });
            }
            if buf.len() >= COMMAND_LINE_BYTES_MAX {
                let n = buf.len();
                self.conn.consume(n);
                discarding = true;
            }
            self.fill_command(deadline).await?;
        }
    }

    async fn fill_command(&mut self, deadline: Instant) -> Result<(), Stop> {
        let timeout = deadline
            .checked_duration_since(Instant::now())
            .ok_or(Stop::Timeout)?;
        let idle = self.tx.is_none() && self.conn.buffered().is_empty();
        let read = async { Some(self.conn.fill(timeout).await) };
        let stop = async {
            if idle {
                self.core.stop.wait().await;
                None
            } else {
                std::future::pending().await
            }
        };
        match futures_lite::future::or(read, stop).await {
            Some(Ok(0)) => Err(Stop::Eof),
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => Err(Stop::Timeout),
            Some(Err(_)) => Err(Stop::Io),
            None => Err(Stop::Shutdown),
        }
    }

    fn command(&mut self, cmd: Command) -> Option<Reply> {
        Some(match cmd {
            Command::Ehlo(domain) => {
                self.ehlo_reply(&domain);
                self.helo = Some(domain);
                self.esmtp = true;
                self.tx = None;
                return None;
            }
            Command::Helo(domain) => {
                self.helo = Some(domain);
                self.esmtp = false;
                self.tx = None;
                Reply::new(250, self.core.cfg.hostname.clone())
            }
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to } => self.rcpt(to),
            Command::Rset => {
                self.tx = None;
                Reply::new(250, "2.0.0 Ok")
            }
            Command::Noop => Reply::new(250, "2.0.0 Ok"),
            Command::Vrfy => Reply::new(
                252,
                "2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Command::Expn => Reply::new(502, "5.5.1 EXPN not implemented"),
            Command::Help => Reply::new(214, "2.0.0 See RFC 5321"),
            Command::StartTls if self.tls => Reply::new(503, "5.5.1 TLS already active"),
            Command::StartTls => Reply::new(502, "5.5.1 STARTTLS not available"),
            Command::Quit | Command::Data => unreachable!("handled by run"),
        })
    }

    fn ehlo_reply(&mut self, domain: &str) {
        let cfg = &self.core.cfg;
        let mut lines = vec![
            format!("{} Hello {domain}", cfg.hostname),
            "PIPELINING".to_string(),
            format!("SIZE {}", cfg.max_message_bytes),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
        ];
        if self.core.tls.is_some() && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        let last = lines.len() - 1;
        for (i, l) in lines.iter().enumerate() {
            self.conn
                .queue_line(&format!("250{}{l}", if i == last { ' ' } else { '-' }));
        }
    }

    fn mail(&mut self, from: String, params: MailParams) -> Reply {
        if self.helo.is_none() {
            return Reply::new(503, "5.5.1 Send EHLO or HELO first");
        }
        if self.tx.is_some() {
            return Reply::new(503, "5.5.1 Nested MAIL command");
        }
        if (params.body_8bit || params.smtputf8 || params.size.is_some()) && !self.esmtp {
            return Reply::new(555, "5.5.4 MAIL parameters need EHLO");
        }
        if !from.is_ascii() && !params.smtputf8 {
            return Reply::new(553, "5.6.7 Non-ASCII address needs SMTPUTF8");
        }
        if params
            .size
            .is_some_and(|s| s > self.core.cfg.max_message_bytes)
        {
            return Reply::new(552, "5.3.4 Message size exceeds fixed limit");
        }
        self.tx = Some(Transaction {
            sender: from,
            params,
            recipients: Vec::new(),
            overshoot: 0,
            feedback: false,
        });
        Reply::new(250, "2.1.0 Ok")
    }

    fn rcpt(&mut self, to: String) -> Reply {
        let relay_ok = self.relay_allowed();
        let may_report = self.may_report();
        let max = self.core.cfg.max_recipients as usize;
        let Some(tx) = self.tx.as_mut() else {
            return Reply::new(503, "5.5.1 Need MAIL before RCPT");
        };
        let platform = &self.core.cfg.platform;
        let feedback = platform
            .feedback_addresses
            .contains(&to.to_ascii_lowercase());
        if !relay_ok && !feedback {
            return Reply::new(550, "5.7.1 Relaying denied");
        }
        if feedback && !may_report {
            return Reply::new(550, "5.7.1 Reports are not taken from this address");
        }
        if !tx.recipients.is_empty() && tx.feedback != feedback {
            // Reports are taken in, other mail relayed: one kind a
            // transaction (the client sends the rest in another).
            return Reply::new(452, "4.5.3 Send this recipient in a transaction of its own");
        }
        if !feedback {
            if let Some(why) = self.core.suppression.check("", &to) {
                return Reply::new(550, format!("5.7.1 {why}"));
            }
        }
        tx.feedback = feedback;
        if !to.is_ascii() && !tx.params.smtputf8 {
            return Reply::new(553, "5.6.7 Non-ASCII address needs SMTPUTF8");
        }
        // The one address without a domain goes where the operator says.
        let to = if to == command::POSTMASTER {
            self.core.cfg.postmaster.clone()
        } else {
            to
        };
        if tx.recipients.len() >= max {
            tx.overshoot = tx.overshoot.saturating_add(1);
            return Reply::new(452, "4.5.3 Too many recipients");
        }
        tx.recipients.push(to);
        Reply::new(250, "2.1.5 Ok")
    }

    /// Whether this client may send complaint reports.
    fn may_report(&self) -> bool {
        let nets = &self.core.cfg.platform.feedback_accept_from;
        nets.is_empty() || nets.iter().any(|n| n.contains(&self.client_ip()))
    }

    fn relay_allowed(&self) -> bool {
        let ip = self.client_ip();
        self.core.cfg.relay_from.iter().any(|net| net.contains(&ip))
    }

    /// The client's address, an IPv4-mapped IPv6 one as IPv4.
    fn client_ip(&self) -> std::net::IpAddr {
        match self.peer.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        }
    }

    /// DATA: receive, spool, hand off, and only then 250.
    async fn data(&mut self) -> Result<Reply, Stop> {
        let Some(tx) = self.tx.take() else {
            return Ok(Reply::new(503, "5.5.1 Need MAIL command"));
        };
        if tx.recipients.is_empty() {
            return Ok(Reply::new(554, "5.5.1 No valid recipients"));
        }
        let id = self.core.spool.next_message_id();
        let received_ms = now_ms();
        let mut builder = self.start_record(id, received_ms, &tx);
        self.conn.queue_line("354 End data with <CR><LF>.<CR><LF>");
        let mut lease = self.core.inbound.data_lease();
        let message_id = match self.receive(&mut builder, &mut lease).await? {
            Ok(message_id) => message_id,
            Err(e) => return Ok(data_error_reply(e)),
        };
        if tx.feedback {
            return Ok(self.take_report(id, builder).await);
        }
        let dot = Instant::now();
        let reply = self
            .seal(id, received_ms, tx, builder, lease, message_id)
            .await;
        self.core.inbound.final_dot.observe_duration(dot.elapsed());
        reply
    }

    /// From the final dot to the reply: signs, appends and waits (within
    /// the deadline) for the record to be durable.
    async fn seal(
        &mut self,
        id: u64,
        received_ms: u64,
        tx: Transaction,
        mut builder: MessageBuilder,
        lease: DataLease,
        message_id: Option<String>,
    ) -> Result<Reply, Stop> {
        match self.core.dkim.sign_record(&mut builder) {
            Ok(()) => {}
            Err(SignError::TooBig) => {
                return Ok(Reply::new(
                    552,
                    "5.3.4 Too many copies of signed header fields",
                ))
            }
            Err(e) => {
                eprintln!("spate: core {}: {e}", self.core.index);
                return Ok(Reply::new(
                    451,
                    "4.7.0 Local error signing the message; try again later",
                ));
            }
        }
        let accepted = Accepted {
            id,
            received_ms,
            flags: record_flags(&tx.params),
            sender: tx.sender,
            recipients: tx.recipients,
            body_start: builder.body_start(),
            body_len: builder.body_len(),
            message_id,
        };
        // If the disk stalls past the deadline the client hears 451 and may
        // send again, while the append and hand-off finish in a task of
        // their own (a message made durable late is delivered; its client
        // was never told 250, so a duplicate is allowed, a loss is not).
        let core = self.core.clone();
        let record = builder.finish(id);
        // The lease goes with the record, whose buffer lives until the
        // append is done.
        let mut accept = Box::pin(async move {
            let durable = core.accept(accepted, record).await;
            drop(lease);
            durable
        });
        let deadline = self.core.cfg.ack_deadline;
        let late = async {
            glommio::timer::sleep(deadline).await;
            None
        };
        let answer = futures_lite::future::or(async { Some((&mut accept).await) }, late).await;
        if answer.is_none() {
            glommio::spawn_local(accept).detach();
        }
        match answer {
            Some(Ok(())) => Ok(Reply::new(250, format!("2.0.0 Ok: queued as {id:016x}"))),
            Some(Err(e)) => Ok(spool_error_reply(&e)),
            None => Ok(Reply::new(
                451,
                "4.3.0 The spool did not confirm in time; try again later",
            )),
        }
    }

    /// A complaint report: kept durably, then read and acted on.
    async fn take_report(&mut self, id: u64, builder: MessageBuilder) -> Reply {
        let report = builder.body().to_vec();
        match crate::complaints::keep(&self.core, id, &report).await {
            Ok(()) => {
                // Read before the reply: one report a session at a time,
                // its bytes within the DATA budget until it is done.
                crate::complaints::process(&self.core, id, &report).await;
                Reply::new(250, format!("2.0.0 Ok: report kept as {id:016x}"))
            }
            Err(e) => {
                eprintln!(
                    "spate: core {}: keeping complaint report {id:016x}: {e}",
                    self.core.index
                );
                Reply::new(451, "4.3.0 Local error keeping the report; try again later")
            }
        }
    }

    fn start_record(&self, id: u64, received_ms: u64, tx: &Transaction) -> MessageBuilder {
        let rcpts: Vec<&[u8]> = tx.recipients.iter().map(|r| r.as_bytes()).collect();
        let mut builder = MessageBuilder::new(
            Vec::with_capacity(8192),
            received_ms,
            record_flags(&tx.params),
            tx.sender.as_bytes(),
            &rcpts,
        );
        let proto = match (self.esmtp, self.tls) {
            (false, _) => "SMTP",
            (true, false) => "ESMTP",
            (true, true) => "ESMTPS",
        };
        let for_clause = match tx.recipients.as_slice() {
            [one] => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        let received = format!(
            "Received: from {}\r\n\tby {} (spate) with {proto} id {id:016x}{for_clause};\r\n\t{}\r\n",
            received_from(self.helo.as_deref(), self.peer.ip()),
            self.core.cfg.hostname,
            chrono::Utc::now().to_rfc2822(),
        );
        builder.body_mut().extend_from_slice(received.as_bytes());
        builder
    }

    /// Reads DATA up to its end. The outer `Err` ends the session (EOF,
    /// timeout); the inner one refuses the message with the session in step.
    ///
    /// The body's buffer grows only as far as `lease` covers it on the
    /// core's DATA budget; when the budget is spent, what was received is
    /// let go and the rest is read without being kept.
    async fn receive(
        &mut self,
        builder: &mut MessageBuilder,
        lease: &mut DataLease,
    ) -> Result<Result<Option<String>, DataError>, Stop> {
        let cfg = &self.core.cfg;
        let mut rx = DataReceiver::new(cfg.max_message_bytes as usize)
            .header_limit(cfg.max_header_bytes as usize)
            .loop_limit(cfg.max_received_headers as usize);
        // Room for the body, its longest line and the sealed record's
        // additions (DKIM fields, padding): the buffer never grows past it.
        let ceiling = builder.body_mut().len()
            + cfg.max_message_bytes as usize
            + TEXT_LINE_BYTES_MAX
            + RECORD_SLACK_BYTES;
        // Each read has `data_timeout`, and all of DATA `data_total_timeout`,
        // so a trickle of bytes cannot hold the session open for ever.
        let deadline = Instant::now() + cfg.data_total_timeout;
        loop {
            if !rx.is_refused()
                && !make_room(
                    builder.body_mut(),
                    self.conn.buffered().len(),
                    ceiling,
                    lease,
                )
            {
                rx.refuse(DataError::NoMemory);
                builder.clear_body();
                builder.body_mut().shrink_to(RECORD_SLACK_BYTES);
                lease.release();
            }
            let fed = rx.feed(self.conn.buffered(), builder.body_mut());
            self.conn.consume(fed.consumed);
            if let Some(mut done) = fed.done {
                if done.is_ok() {
                    done = rx.tags().map(|(tenant, campaign)| {
                        if !(tenant.is_empty() && campaign.is_empty()) {
                            builder.set_tags(tenant, campaign);
                        }
                    });
                }
                if done.is_err() {
                    builder.clear_body();
                }
                if done == Err(DataError::MailLoop) {
                    eprintln!(
                        "spate: core {}: refused a message from [{}] as a mail loop: {} Received header fields",
                        self.core.index,
                        self.peer.ip(),
                        rx.received_fields()
                    );
                }
                return Ok(done.map(|()| rx.message_id()));
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or(Stop::Timeout)?;
            match self.conn.fill(left.min(self.core.cfg.data_timeout)).await {
                Ok(0) => return Err(Stop::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Stop::Timeout),
                Err(_) => return Err(Stop::Io),
            }
        }
    }
}

/// Room the sealed record may need beyond the body: DKIM-Signature fields
/// and padding (a realloc at the end would double the buffer).
const RECORD_SLACK_BYTES: usize = 8 * 1024;

/// Makes `buf` able to take `incoming` more bytes without reallocating,
/// growing it (by doubling, up to `ceiling`) only as far as `lease` covers
/// on the core's DATA budget. False: the budget has no room.
fn make_room(buf: &mut Vec<u8>, incoming: usize, ceiling: usize, lease: &mut DataLease) -> bool {
    let need = buf.len() + incoming;
    if need <= buf.capacity() {
        return true;
    }
    let doubled = need.max(buf.capacity() * 2).min(ceiling.max(need)) + RECORD_SLACK_BYTES;
    let exact = need + RECORD_SLACK_BYTES;
    // Doubling keeps reallocations few; when the budget cannot spare the
    // double, the bytes really needed may still fit.
    let Some(target) = [doubled, exact].into_iter().find(|&t| lease.cover(t)) else {
        return false;
    };
    buf.reserve_exact(target - buf.len());
    // The allocator may round up; the lease follows what is really held.
    lease.cover(buf.capacity())
}

/// The Received field's "from" part: the EHLO name and the client's
/// address. An EHLO name that is no ASCII domain or address literal is not
/// copied as it is (the field must stay 7-bit and parseable, RFC 5321
/// 4.4): it becomes "unknown", with its bytes escaped in the comment.
fn received_from(helo: Option<&str>, ip: std::net::IpAddr) -> String {
    let helo = helo.unwrap_or("unknown");
    let domain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_';
    let literal = helo.starts_with('[')
        && helo.ends_with(']')
        && helo[1..helo.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'.');
    if literal || !helo.is_empty() && helo.bytes().all(domain) {
        return format!("{helo} ([{ip}])");
    }
    let mut escaped = String::with_capacity(helo.len());
    for b in helo.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'\\' | b'%') {
            escaped.push(b as char);
        } else {
            escaped.push_str(&format!("%{b:02X}"));
        }
    }
    format!("unknown ([{ip}] helo={escaped})")
}

fn record_flags(p: &MailParams) -> u32 {
    (if p.body_8bit { FLAG_8BITMIME } else { 0 }) | (if p.smtputf8 { FLAG_SMTPUTF8 } else { 0 })
}

fn data_error_reply(e: DataError) -> Reply {
    match e {
        DataError::BareLf | DataError::BareCr => Reply::new(
            550,
            "5.6.0 Bare CR or LF in message text is not allowed (RFC 5321 2.3.8)",
        ),
        DataError::LineTooLong => Reply::new(550, "5.6.0 Message line longer than 1000 octets"),
        DataError::TooBig => Reply::new(552, "5.3.4 Message size exceeds fixed limit"),
        DataError::HeaderTooBig => Reply::new(552, "5.3.4 Message header exceeds fixed limit"),
        DataError::MailLoop => Reply::new(554, "5.4.6 Mail loop: too many Received header fields"),
        DataError::BadTag => Reply::new(
            554,
            "5.6.0 X-Spate-Tenant and X-Spate-Campaign each name one tenant or campaign: 1 to 64 letters, digits, '.', '_' or '-', given once",
        ),
        DataError::NoMemory => {
            Reply::new(452, "4.3.1 Insufficient system resources; try again later")
        }
    }
}

fn spool_error_reply(e: &SpoolError) -> Reply {
    match e {
        SpoolError::Full => Reply::new(452, "4.3.1 Insufficient system storage"),
        SpoolError::Io(_) => Reply::new(
            451,
            "4.3.0 Local error writing the message; try again later",
        ),
        SpoolError::Closed => Reply::new(421, "4.3.2 Shutting down, try again later"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_ehlo_names_never_reach_the_received_field_as_they_are() {
        let ip = "192.0.2.1".parse().unwrap();
        assert_eq!(
            received_from(Some("mx.example"), ip),
            "mx.example ([192.0.2.1])"
        );
        assert_eq!(
            received_from(Some("[192.0.2.1]"), ip),
            "[192.0.2.1] ([192.0.2.1])"
        );
        assert_eq!(received_from(None, ip), "unknown ([192.0.2.1])");
        let odd = received_from(Some("h\u{e9}(x)\u{7f}"), ip);
        assert_eq!(odd, "unknown ([192.0.2.1] helo=h%C3%A9%28x%29%7F)");
        assert!(odd.is_ascii());
    }
}
