//! `spate bench sink`: a fast SMTP sink on spate's own thread-per-core
//! runtime, with fault profiles for realistic peaks. It counts what it
//! receives and can check bodies written by `spate bench inject`.
//!
//! It is a test peer, not part of the engine: it stores nothing.

use crate::conn::Conn;
use crate::listener::command::{self, Command};
use crate::listener::data::DataReceiver;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest message the sink takes.
const SINK_MESSAGE_BYTES_MAX: usize = 64 << 20;
const SINK_TIMEOUT: Duration = Duration::from_secs(120);

/// Fault probabilities (0.0 to 1.0) and the delay before the final reply.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub tempfail: f64,
    pub permfail: f64,
    pub banner_421: f64,
    pub drop: f64,
    pub latency: Duration,
}

/// What the sink saw, shared by its cores.
#[derive(Debug, Default)]
pub struct Counts {
    pub connections: AtomicU64,
    pub accepted: AtomicU64,
    pub recipients: AtomicU64,
    pub tempfailed: AtomicU64,
    pub permfailed: AtomicU64,
    pub dropped: AtomicU64,
    pub bytes: AtomicU64,
    pub bad_bodies: AtomicU64,
}

impl Counts {
    pub fn line(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "accepted {} messages ({} recipients, {} bytes) on {} connections; 451 {}, 550 {}, dropped {}, bad bodies {}",
            g(&self.accepted), g(&self.recipients), g(&self.bytes), g(&self.connections), g(&self.tempfailed), g(&self.permfailed), g(&self.dropped), g(&self.bad_bodies)
        )
    }
}

pub struct SinkSpec {
    pub listen: SocketAddr,
    pub cores: usize,
    pub faults: Faults,
    pub check_bodies: bool,
    /// Exit once this many messages were accepted.
    pub exit_after: Option<u64>,
}

/// Runs the sink until `exit_after` messages were accepted (or forever).
pub fn run(spec: SinkSpec) -> Result<(), String> {
    let counts = Arc::new(Counts::default());
    let spec = Arc::new(spec);
    for core in 0..spec.cores {
        let (spec, counts) = (spec.clone(), counts.clone());
        let join = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("sink-{core}"))
            .spawn(move || async move {
                let listener = TcpListener::bind(spec.listen)
                    .map_err(|e| format!("listen {}: {e}", spec.listen))?;
                loop {
                    let stream = listener.accept().await.map_err(|e| e.to_string())?;
                    counts.connections.fetch_add(1, Ordering::Relaxed);
                    let (spec, counts) = (spec.clone(), counts.clone());
                    glommio::spawn_local(async move {
                        let _ = stream.set_nodelay(true);
                        session(Conn::new(stream), &spec, &counts).await;
                    })
                    .detach();
                }
                #[allow(unreachable_code)]
                Ok::<(), String>(())
            })
            .map_err(|e| e.to_string())?;
        // The cores run until the process exits; a core that fails to bind says so.
        std::thread::spawn(move || {
            if let Ok(Err(e)) = join.join() {
                eprintln!("spate bench sink: {e}");
                std::process::exit(1);
            }
        });
    }
    eprintln!(
        "spate bench sink: listening on {} with {} cores",
        spec.listen, spec.cores
    );
    let start = Instant::now();
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let accepted = counts.accepted.load(Ordering::Relaxed);
        if spec.exit_after.is_some_and(|n| accepted >= n) {
            eprintln!(
                "spate bench sink: {} in {:.3} s",
                counts.line(),
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        let line = counts.line();
        if line != last {
            eprintln!("spate bench sink: {line}");
            last = line;
        }
    }
}

fn roll(p: f64) -> bool {
    p > 0.0 && fastrand::f64() < p
}

type Stream = glommio::net::TcpStream;

/// Queues a reply; `true`: the session goes on.
async fn reply(conn: &mut Conn<Stream>, line: &str) -> bool {
    conn.queue_line(line);
    true
}

/// One client session. Returns when the client quits or misbehaves.
async fn session(mut conn: Conn<Stream>, spec: &SinkSpec, counts: &Counts) {
    if roll(spec.faults.banner_421) {
        conn.queue_line("421 4.3.2 bench sink: try again later");
        let _ = conn.flush().await;
        return;
    }
    conn.queue_line("220 bench.sink ESMTP spate bench sink");
    let mut recipients = 0u64;
    let mut in_tx = false;
    loop {
        let Some(line) = read_line(&mut conn).await else {
            return;
        };
        let ok = match command::parse(&line) {
            Ok(Command::Ehlo(_)) => reply(&mut conn, "250-bench.sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 67108864").await,
            Ok(Command::Helo(_)) => reply(&mut conn, "250 bench.sink").await,
            Ok(Command::Mail { .. }) => {
                in_tx = true;
                recipients = 0;
                reply(&mut conn, "250 2.1.0 Ok").await
            }
            Ok(Command::Rcpt { .. }) if roll(spec.faults.tempfail / 2.0) => {
                counts.tempfailed.fetch_add(1, Ordering::Relaxed);
                reply(&mut conn, "451 4.7.1 bench sink: greylisted").await
            }
            Ok(Command::Rcpt { .. }) if roll(spec.faults.permfail / 2.0) => {
                counts.permfailed.fetch_add(1, Ordering::Relaxed);
                reply(&mut conn, "550 5.1.1 bench sink: no such user").await
            }
            Ok(Command::Rcpt { .. }) => {
                recipients += 1;
                reply(&mut conn, "250 2.1.5 Ok").await
            }
            Ok(Command::Data) if in_tx && recipients > 0 => {
                conn.queue_line("354 go ahead");
                in_tx = false;
                data(&mut conn, spec, counts, recipients).await
            }
            Ok(Command::Data) => reply(&mut conn, "554 5.5.1 no valid recipients").await,
            Ok(Command::Rset) => {
                in_tx = false;
                reply(&mut conn, "250 2.0.0 Ok").await
            }
            Ok(Command::Quit) => {
                conn.queue_line("221 2.0.0 Bye");
                let _ = conn.flush().await;
                return;
            }
            Ok(_) => reply(&mut conn, "250 2.0.0 Ok").await,
            Err(r) => reply(&mut conn, &r.line()).await,
        };
        if !ok {
            return;
        }
    }
}

async fn read_line(conn: &mut Conn<Stream>) -> Option<Vec<u8>> {
    loop {
        let buf = conn.buffered();
        if let Some(lf) = memchr::memchr(b'\n', buf) {
            let line = buf[..lf].strip_suffix(b"\r").unwrap_or(&buf[..lf]).to_vec();
            conn.consume(lf + 1);
            return Some(line);
        }
        if buf.len() > 4096 {
            return None;
        }
        match conn.fill(SINK_TIMEOUT).await {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
    }
}

/// Receives one message body and answers it, with the faults asked for.
async fn data(conn: &mut Conn<Stream>, spec: &SinkSpec, counts: &Counts, recipients: u64) -> bool {
    let drop_at = roll(spec.faults.drop).then(|| fastrand::usize(1..4096));
    let mut rx = DataReceiver::new(SINK_MESSAGE_BYTES_MAX);
    let mut body = Vec::new();
    let mut seen = 0;
    loop {
        let buf = conn.buffered();
        if drop_at.is_some_and(|at| seen + buf.len() >= at) {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let fed = rx.feed(buf, &mut body);
        seen += fed.consumed;
        conn.consume(fed.consumed);
        if let Some(done) = fed.done {
            if done.is_err() {
                return reply(conn, "550 5.6.0 bench sink: bad message text").await;
            }
            break;
        }
        if !matches!(conn.fill(SINK_TIMEOUT).await, Ok(n) if n > 0) {
            return false;
        }
    }
    if spec.check_bodies
        && super::inject::from_generator(&body)
        && !super::inject::body_is_intact(&body)
    {
        counts.bad_bodies.fetch_add(1, Ordering::Relaxed);
    }
    if !spec.faults.latency.is_zero() {
        glommio::timer::sleep(spec.faults.latency).await;
    }
    if roll(spec.faults.tempfail / 2.0) {
        counts.tempfailed.fetch_add(1, Ordering::Relaxed);
        return reply(conn, "451 4.3.0 bench sink: try again later").await;
    }
    if roll(spec.faults.permfail / 2.0) {
        counts.permfailed.fetch_add(1, Ordering::Relaxed);
        return reply(conn, "550 5.7.1 bench sink: content rejected").await;
    }
    counts.accepted.fetch_add(1, Ordering::Relaxed);
    counts.recipients.fetch_add(recipients, Ordering::Relaxed);
    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    reply(conn, "250 2.0.0 Ok: bench sink").await
}
