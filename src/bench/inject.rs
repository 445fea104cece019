//! `spate bench inject`: a pipelining SMTP load generator over reused
//! connections. Recipient domains are drawn from a Zipf-like mix (a few
//! huge mailbox providers and a long tail). It reports msgs/s and the
//! latency of the reply to the final dot (hdrhistogram).
//!
//! Every body carries a checksum header that `spate bench sink
//! --check-bodies` verifies, so corruption anywhere on the path shows.

use crate::conn::Conn;
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
const SUM_HEADER: &str = "X-Spate-Bench-Sum: ";
/// The big mailbox providers at the head of the domain mix.
const HEAD_DOMAINS: [&str; 5] = ["gmail", "yahoo", "outlook", "icloud", "gmx"];

#[derive(Debug, Clone)]
pub struct InjectSpec {
    pub target: SocketAddr,
    pub messages: u64,
    pub concurrency: usize,
    pub size: usize,
    pub domains: usize,
    pub recipients: usize,
    /// Messages per second to aim at; `None`: as fast as replies come.
    pub rate: Option<f64>,
    pub progress: bool,
}

/// What a run measured.
pub struct InjectReport {
    pub spec: InjectSpec,
    pub accepted: u64,
    pub elapsed: Duration,
    /// Final replies by code; 0 counts messages lost to connection errors.
    pub replies: BTreeMap<u16, u64>,
    /// Microseconds from writing the final dot to reading its reply.
    pub latency_us: Histogram<u64>,
}

impl InjectReport {
    pub fn msgs_per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    pub fn print(&self) {
        let s = &self.spec;
        println!(
            "spate bench inject: {} of {} messages accepted ({} bytes, {} recipients each, {} domains) over {} connections in {:.3} s: {:.0} msgs/s",
            self.accepted, s.messages, s.size, s.recipients, s.domains, s.concurrency, self.elapsed.as_secs_f64(), self.msgs_per_sec()
        );
        let codes: Vec<String> = self
            .replies
            .iter()
            .map(|(c, n)| {
                if *c == 0 {
                    format!("connection errors x{n}")
                } else {
                    format!("{c} x{n}")
                }
            })
            .collect();
        println!("  final replies: {}", codes.join(", "));
        let h = &self.latency_us;
        println!(
            "  final-dot reply latency (us): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}

/// Recipient domains with Zipf weights (the k-th has weight 1/k).
pub struct DomainMix {
    names: Vec<String>,
    cdf: Vec<f64>,
}

impl DomainMix {
    pub fn new(count: usize) -> DomainMix {
        let names: Vec<String> = (0..count.max(1))
            .map(|k| match HEAD_DOMAINS.get(k) {
                Some(head) => format!("{head}.bench.test"),
                None => format!("d{k}.bench.test"),
            })
            .collect();
        let total: f64 = (1..=names.len()).map(|k| 1.0 / k as f64).sum();
        let mut acc = 0.0;
        let cdf = (1..=names.len())
            .map(|k| {
                acc += 1.0 / k as f64 / total;
                acc
            })
            .collect();
        DomainMix { names, cdf }
    }

    pub fn pick(&self) -> &str {
        let x = fastrand::f64();
        let i = self
            .cdf
            .partition_point(|&c| c < x)
            .min(self.names.len() - 1);
        &self.names[i]
    }
}

/// The message body (about `size` bytes), with its checksum header.
pub fn make_body(size: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(size + 80);
    let mut i = 0;
    while text.len() < size {
        // Every eighth line starts with a dot, to exercise dot-stuffing.
        let lead = if i % 8 == 0 { "." } else { "" };
        text.extend_from_slice(format!("{lead}line {i:05} of spate bench filler text, quite long enough to wrap nowhere\r\n").as_bytes());
        i += 1;
    }
    let header = format!(
        "From: <bench@inject.test>\r\nSubject: spate bench\r\n{SUM_HEADER}{:08x} {}\r\n\r\n",
        crc32c::crc32c(&text),
        text.len()
    );
    let mut body = header.into_bytes();
    body.extend_from_slice(&text);
    body
}

/// True if the message's own header (not a quoted one, as in a DSN) carries
/// the generator's checksum.
pub fn from_generator(body: &[u8]) -> bool {
    let header_end = memchr::memmem::find(body, b"\r\n\r\n").unwrap_or(body.len());
    memchr::memmem::find(&body[..header_end], SUM_HEADER.as_bytes()).is_some()
}

/// True if a body received with `make_body`'s header still matches it.
pub fn body_is_intact(body: &[u8]) -> bool {
    let Some(at) = memchr::memmem::find(body, SUM_HEADER.as_bytes()) else {
        return false;
    };
    let rest = &body[at + SUM_HEADER.len()..];
    let Some(eol) = memchr::memmem::find(rest, b"\r\n") else {
        return false;
    };
    let Some((sum, len)) = std::str::from_utf8(&rest[..eol])
        .ok()
        .and_then(|l| l.split_once(' '))
    else {
        return false;
    };
    let Some(blank) = memchr::memmem::find(rest, b"\r\n\r\n") else {
        return false;
    };
    let text = &rest[blank + 4..];
    len.parse() == Ok(text.len()) && u32::from_str_radix(sum, 16) == Ok(crc32c::crc32c(text))
}

struct Shared {
    spec: InjectSpec,
    next: Cell<u64>,
    start: Instant,
    wire: Vec<u8>,
    body_len: usize,
    domains: DomainMix,
    replies: RefCell<BTreeMap<u16, u64>>,
    latency: RefCell<Histogram<u64>>,
    bar: indicatif::ProgressBar,
}

/// Runs the generator to completion on one executor.
pub fn run(spec: InjectSpec) -> Result<InjectReport, String> {
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("bench-inject")
        .spawn(move || async move { run_local(spec).await })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|e| e.to_string())?
}

async fn run_local(spec: InjectSpec) -> Result<InjectReport, String> {
    let body = make_body(spec.size);
    let mut wire = Vec::with_capacity(body.len() + 64);
    crate::dot::stuff_into(&body, &mut wire);
    let bar = if spec.progress {
        indicatif::ProgressBar::new(spec.messages)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} msgs  {per_sec}  eta {eta}")
            .map_err(|e| e.to_string())?,
    );
    let shared = Rc::new(Shared {
        domains: DomainMix::new(spec.domains),
        next: Cell::new(0),
        start: Instant::now(),
        body_len: body.len(),
        wire,
        replies: RefCell::new(BTreeMap::new()),
        latency: RefCell::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")),
        bar,
        spec: spec.clone(),
    });
    let workers: Vec<_> = (0..spec.concurrency.max(1))
        .map(|_| glommio::spawn_local(worker(shared.clone())))
        .collect();
    let mut first_error = None;
    for w in workers {
        if let Err(e) = w.await {
            first_error.get_or_insert(e);
        }
    }
    shared.bar.finish_and_clear();
    let replies = shared.replies.borrow().clone();
    let accepted = replies
        .iter()
        .filter(|(c, _)| (200..300).contains(*c))
        .map(|(_, n)| n)
        .sum();
    if accepted == 0 {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    let latency_us = shared.latency.borrow().clone();
    Ok(InjectReport {
        spec,
        accepted,
        elapsed: shared.start.elapsed(),
        replies,
        latency_us,
    })
}

/// One connection: sends messages until none are left, reconnecting after errors.
async fn worker(shared: Rc<Shared>) -> Result<(), String> {
    let mut errors = 0;
    while shared.next.get() < shared.spec.messages {
        let mut conn = match open(shared.spec.target).await {
            Ok(c) => c,
            Err(e) => {
                errors += 1;
                if errors > 10 {
                    return Err(format!("connect {}: {e}", shared.spec.target));
                }
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let n = shared.next.get();
            if n >= shared.spec.messages {
                conn.queue_line("QUIT");
                let _ = read_reply(&mut conn).await;
                return Ok(());
            }
            shared.next.set(n + 1);
            pace(&shared, n).await;
            if let Err(e) = send_one(&shared, &mut conn, n).await {
                *shared.replies.borrow_mut().entry(0).or_default() += 1;
                shared.bar.inc(1);
                errors += 1;
                if errors > 1000 {
                    return Err(e.to_string());
                }
                break;
            }
        }
    }
    Ok(())
}

/// With `--rate`, message `n` waits for its slot.
async fn pace(shared: &Shared, n: u64) {
    if let Some(rate) = shared.spec.rate {
        let due = shared.start + Duration::from_secs_f64(n as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            glommio::timer::sleep(wait).await;
        }
    }
}

async fn open(target: SocketAddr) -> io::Result<Conn<TcpStream>> {
    let stream = TcpStream::connect(target).await.map_err(io::Error::from)?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    expect(read_reply(&mut conn).await?, 220)?;
    conn.queue_line("EHLO inject.bench.test");
    expect(read_reply(&mut conn).await?, 250)?;
    Ok(conn)
}

fn expect(code: u16, want: u16) -> io::Result<()> {
    if code == want {
        Ok(())
    } else {
        Err(io::Error::other(format!("expected {want}, got {code}")))
    }
}

/// MAIL, RCPTs and DATA in one write; then the body; records the final reply.
async fn send_one(shared: &Shared, conn: &mut Conn<TcpStream>, n: u64) -> io::Result<()> {
    let spec = &shared.spec;
    conn.queue_line(&format!(
        "MAIL FROM:<bench@inject.test> SIZE={}",
        shared.body_len
    ));
    for r in 0..spec.recipients {
        conn.queue_line(&format!("RCPT TO:<user{n}.{r}@{}>", shared.domains.pick()));
    }
    conn.queue_line("DATA");
    let mail = read_reply(conn).await?;
    let mut accepted = 0;
    for _ in 0..spec.recipients {
        accepted += u64::from(read_reply(conn).await? / 100 == 2);
    }
    let data = read_reply(conn).await?;
    let code = if mail / 100 != 2 || accepted == 0 || data != 354 {
        if data == 354 {
            conn.queue_raw(b".\r\n");
            read_reply(conn).await?;
        }
        conn.queue_line("RSET");
        read_reply(conn).await?;
        if mail / 100 != 2 {
            mail
        } else {
            data
        }
    } else {
        conn.write_direct(&shared.wire).await?;
        let sent = Instant::now();
        let code = read_reply(conn).await?;
        let us = sent.elapsed().as_micros() as u64;
        let _ = shared.latency.borrow_mut().record(us.max(1));
        code
    };
    *shared.replies.borrow_mut().entry(code).or_default() += 1;
    shared.bar.inc(1);
    Ok(())
}

/// Reads one reply (all its lines) and returns its code.
async fn read_reply(conn: &mut Conn<TcpStream>) -> io::Result<u16> {
    loop {
        let buf = conn.buffered();
        if let Some(lf) = memchr::memchr(b'\n', buf) {
            let line = &buf[..lf];
            let code = std::str::from_utf8(line.get(..3).unwrap_or(b""))
                .ok()
                .and_then(|c| c.parse().ok());
            let last = line.get(3) != Some(&b'-');
            conn.consume(lf + 1);
            let code =
                code.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed reply"))?;
            if last {
                return Ok(code);
            }
            continue;
        }
        if conn.fill(REPLY_TIMEOUT).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_check_and_detect_corruption() {
        let mut body = make_body(4096);
        assert!(body.len() >= 4096);
        assert!(body_is_intact(&body));
        let last = body.len() - 3;
        body[last] ^= 1;
        assert!(!body_is_intact(&body));
    }

    #[test]
    fn domain_mix_is_head_heavy() {
        let mix = DomainMix::new(100);
        let gmail = (0..10_000)
            .filter(|_| mix.pick() == "gmail.bench.test")
            .count();
        let tail = (0..10_000)
            .filter(|_| mix.pick() == "d99.bench.test")
            .count();
        assert!(gmail > 1500 && tail < 100, "gmail {gmail}, d99 {tail}");
    }
}
