//! Shared harness for the integration tests: start the real `spate` binary
//! on a loopback address with its own spool, talk SMTP to it with a tiny
//! session language, run real peers (swaks, smtp-source), and read the spool
//! back with the `spool-format` decoder.
#![allow(dead_code)]

use spool_format::{MessageView, RecordKind, ScanItem, Scanner, SegmentHeader};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The port every test server listens on. Each server gets an address of
/// its own instead, so the port can be fixed; and it lies below the
/// kernel's ephemeral range, so no outgoing connection anywhere on the
/// machine can take it.
const TEST_PORT: u16 = 10025;

/// A distinct loopback address per test process and call, so tests can run
/// in parallel. An address where something already listens (a stray server
/// from an earlier run) is passed over.
///
/// The check connects; it never binds. A probe socket bound and closed here
/// can live on for a moment in a child that another test thread is forking
/// (until the child's exec closes it), and the caller's own bind then fails
/// with "address in use": CI hit exactly that.
pub fn free_addr() -> String {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let pid = std::process::id();
    for _ in 0..250 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let addr = format!(
            "127.{}.{}.{}:{TEST_PORT}",
            10 + (pid % 200),
            (pid / 200) % 250,
            1 + n % 250
        );
        let taken = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1));
        if taken.is_err() {
            return addr;
        }
    }
    panic!("no free loopback address for pid {pid}");
}

/// Fails the test loudly if a peer program is missing: never skip silently.
pub fn require(program: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed; .ci/run installs it (apt-get install postfix swaks)"
    );
}

pub struct Spate {
    pub child: Option<Child>,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub log: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    spool: Option<PathBuf>,
}

impl Spate {
    pub fn spool_dir(&self) -> PathBuf {
        self.spool
            .clone()
            .unwrap_or_else(|| self.dir.path().join("spool"))
    }

    /// Starts `spate serve` with a fresh spool and the extra flags given.
    pub fn start(extra: &[&str]) -> Spate {
        Spate::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Spate {
        Spate::start_full(extra, env, None, true)
    }

    /// Starts listening on `addr` instead of a fresh address.
    pub fn start_on(addr: &str, extra: &[&str]) -> Spate {
        let mut s = Spate::start_full(extra, &[], None, false);
        s.addr = addr.to_string();
        s.launch();
        s
    }

    /// Starts with the spool in `spool` instead of the test's own directory.
    pub fn start_with_spool(extra: &[&str], spool: &Path) -> Spate {
        Spate::start_full(extra, &[], Some(spool.to_path_buf()), true)
    }

    fn start_full(
        extra: &[&str],
        env: &[(&str, &str)],
        spool: Option<PathBuf>,
        launch: bool,
    ) -> Spate {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spate {
            child: None,
            addr: free_addr(),
            dir,
            log: Arc::new(Mutex::new(Vec::new())),
            args: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            spool,
        };
        if launch {
            s.launch();
        }
        s
    }

    /// (Re)starts the process on the same spool and address.
    pub fn launch(&mut self) {
        assert!(self.child.is_none());
        self.log.lock().unwrap().clear();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spate"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(&self.addr)
            .arg("--spool")
            .arg(self.spool_dir())
            .arg("--log-dir")
            .arg(self.dir.path().join("log"))
            .arg("--hostname")
            .arg("spate.test")
            .args(&self.args)
            // Never ask a real resolver from a test: nothing answers on the
            // discard port, so lookups fail fast as temporary errors.
            .args(if self.args.iter().any(|a| a == "--dns") {
                &[][..]
            } else {
                &["--dns", "127.0.0.1:9"][..]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn spate");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let start = Instant::now();
        while !self
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("spate: ready"))
        {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "spate exited with {status} before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "spate not ready after 20s; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                start.elapsed() < limit,
                "no log line with {needle:?} after {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then wait; returns the exit status code.
    pub fn stop(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        signal(child.id(), 15);
        let status = wait_timeout(&mut child, Duration::from_secs(30));
        status.code().unwrap_or(-1)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn connect(&self) -> Smtp {
        Smtp::connect(&self.addr)
    }
}

impl Drop for Spate {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(pid: u32, sig: i32) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tiny SMTP session language: `smtp.send("RCPT TO:<a@b>").expect(250)`.
pub struct Smtp {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Smtp {
    pub fn connect(addr: &str) -> Smtp {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut s = Smtp { stream, reader };
        s.expect(220);
        s
    }

    /// Sends one command line (CRLF added).
    pub fn send(&mut self, line: &str) -> &mut Smtp {
        self.raw(format!("{line}\r\n").as_bytes())
    }

    /// Sends bytes as they are.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Smtp {
        self.stream.write_all(bytes).expect("write");
        self
    }

    /// Reads one whole (possibly multi-line) reply: (code, lines).
    pub fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read reply");
            assert!(
                n > 0,
                "connection closed while waiting for a reply; got {lines:?}"
            );
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
        }
        let code = lines.last().unwrap()[..3].parse().expect("reply code");
        (code, lines)
    }

    /// Reads a reply and checks its code; returns the last line.
    pub fn expect(&mut self, code: u16) -> String {
        let (got, lines) = self.reply();
        assert_eq!(got, code, "expected {code}, got {lines:?}");
        lines.last().unwrap().clone()
    }

    /// True if the server closes the connection (or sends nothing) within `limit`.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 256];
        matches!(self.reader.read(&mut buf), Ok(0))
    }

    /// EHLO, MAIL, RCPT for each recipient, DATA; then the body (already
    /// dot-stuffed, ending in CRLF) and the final dot. Returns the DATA reply.
    pub fn transaction(&mut self, from: &str, to: &[&str], body: &[u8]) -> String {
        self.send("EHLO client.test").expect(250);
        self.send(&format!("MAIL FROM:<{from}>")).expect(250);
        for r in to {
            self.send(&format!("RCPT TO:<{r}>")).expect(250);
        }
        self.send("DATA").expect(354);
        self.raw(body).raw(b".\r\n");
        self.expect(250)
    }
}

/// A message as the spool holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    pub flags: u32,
    pub body: Vec<u8>,
}

impl Stored {
    /// The body after spate's own Received header.
    pub fn client_body(&self) -> &[u8] {
        assert!(
            self.body.starts_with(b"Received: from "),
            "Received header first"
        );
        let mut pos = 0;
        loop {
            let lf = pos + self.body[pos..].iter().position(|&b| b == b'\n').unwrap();
            pos = lf + 1;
            if !matches!(self.body.get(pos), Some(b'\t') | Some(b' ')) {
                return &self.body[pos..];
            }
        }
    }
}

/// Every `Message` record in the spool, decoded.
pub fn read_spool(dir: &Path) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("seg-") {
            continue;
        }
        // The reclaimer may delete a segment between the listing and here.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.len() < 48 || bytes[..48].iter().all(|&b| b == 0) {
            continue; // a segment spate is creating right now
        }
        SegmentHeader::decode(&bytes).expect("segment header");
        for item in Scanner::new(&bytes) {
            if let ScanItem::Record {
                header, payload, ..
            } = item
            {
                if header.kind == RecordKind::Message {
                    let m = MessageView::decode(payload).unwrap();
                    out.push(Stored {
                        id: header.message_id,
                        sender: String::from_utf8(m.sender.to_vec()).unwrap(),
                        recipients: m
                            .recipients()
                            .map(|r| String::from_utf8(r.to_vec()).unwrap())
                            .collect(),
                        flags: m.flags,
                        body: m.body.to_vec(),
                    });
                }
            }
        }
    }
    out
}

/// Runs a program to completion, returning (success, stdout+stderr).
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn spate_cmd(args: &[&str]) -> (bool, String) {
    run(env!("CARGO_BIN_EXE_spate"), args)
}

/// Postfix's smtp-sink on `addr`, dumping every message into its own file
/// under `dump` (one file per transaction). Killed on drop.
pub struct Sink {
    pub child: Child,
    pub addr: String,
    pub dump: tempfile::TempDir,
}

impl Sink {
    /// `flags` are extra smtp-sink options, e.g. `["-r", "RCPT"]` to tempfail.
    pub fn start(addr: &str, flags: &[&str]) -> Sink {
        require("smtp-sink");
        let dump = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dump.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let template = format!("{}/%H%M%S.", dump.path().display());
        let child = Command::new("smtp-sink")
            .args(["-u", "nobody", "-d", &template])
            .args(flags)
            .arg(addr)
            .arg("256")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn smtp-sink");
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "smtp-sink did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sink {
            child,
            addr: addr.to_string(),
            dump,
        }
    }

    /// The messages received so far, as smtp-sink wrote them (LF line ends,
    /// its own X- and Received headers first).
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dump.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect()
    }

    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dump.path()).unwrap().count()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The delivery log records of every core, parsed.
pub fn delivery_log(log_dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return out;
    };
    for e in entries {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("log line is JSON")),
        );
    }
    out
}

/// Log records of one type ("Delivery", "Bounce", ...).
pub fn log_of(log_dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    delivery_log(log_dir)
        .into_iter()
        .filter(|r| r["type"] == kind)
        .collect()
}

/// Polls `cond` until it holds or `limit` passes; says what it waited for.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Spate {
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }
}

/// Debian's unbound serving `local_data` (unbound.conf `local-zone:` /
/// `local-data:` lines) on its own loopback address. Killed on drop.
pub struct Unbound {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Unbound {
    pub fn start(local_data: &str) -> Unbound {
        require("unbound");
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let (ip, port) = addr.rsplit_once(':').unwrap();
        let conf = format!(
            "server:\n  interface: {ip}\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n{local_data}\n",
            dir = dir.path().display()
        );
        let path = dir.path().join("unbound.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start unbound");
        let unbound = Unbound {
            child,
            addr,
            _dir: dir,
        };
        wait_until(Duration::from_secs(10), "unbound to answer", || {
            unbound.answers()
        });
        unbound
    }

    /// Sends a minimal query for `test. SOA` and waits briefly for any reply.
    fn answers(&self) -> bool {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let query = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, b't', b'e', b's', b't', 0, 0, 6, 0, 1,
        ];
        if sock.send_to(&query, &self.addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        sock.recv_from(&mut buf).is_ok()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The distinct (core, connection) pairs that delivered the logged records.
pub fn connections_used(records: &[serde_json::Value]) -> usize {
    let mut pairs: Vec<(u64, u64)> = records
        .iter()
        .map(|r| {
            (
                r["core"].as_u64().unwrap(),
                r["connection"].as_u64().unwrap(),
            )
        })
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs.len()
}

/// A self-signed certificate for `spate.test` made by openssl in `dir`:
/// (cert.pem, key.pem).
pub fn self_signed_cert(dir: &Path) -> (String, String) {
    require("openssl");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (ok, out) = run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=spate.test",
            "-addext",
            "subjectAltName=DNS:spate.test",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    )
}

/// How a [`FakeMx`] misbehaves when asked for STARTTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFault {
    /// Says 220, then sends bytes that are no TLS handshake and hangs up.
    BrokenHandshake,
    /// Says 220 and, in the same write, an extra line before any handshake.
    LinesBeforeHandshake,
}

/// A scripted SMTP server for destination faults no real server can be
/// told to make. It offers STARTTLS and fails it as asked; without
/// STARTTLS it takes mail, counting messages. Runs until dropped.
pub struct FakeMx {
    pub addr: String,
    pub messages: Arc<std::sync::atomic::AtomicUsize>,
    pub tls_attempts: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeMx {
    pub fn start(fault: TlsFault) -> FakeMx {
        let listener = std::net::TcpListener::bind(free_addr()).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let messages = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tls_attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, t) = (messages.clone(), tls_attempts.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (m, t) = (m.clone(), t.clone());
                std::thread::spawn(move || fake_session(stream, fault, &m, &t));
            }
        });
        FakeMx {
            addr,
            messages,
            tls_attempts,
        }
    }
}

fn fake_session(
    stream: TcpStream,
    fault: TlsFault,
    messages: &std::sync::atomic::AtomicUsize,
    tls: &std::sync::atomic::AtomicUsize,
) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let _ = w.write_all(b"220 fake.mx ESMTP\r\n");
    let mut line = String::new();
    let mut in_data = false;
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        let cmd = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if in_data {
            if cmd == "." {
                in_data = false;
                messages.fetch_add(1, SeqCst);
                b"250 2.0.0 queued\r\n"
            } else {
                b""
            }
        } else if cmd.starts_with("EHLO") {
            b"250-fake.mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
        } else if cmd == "STARTTLS" {
            tls.fetch_add(1, SeqCst);
            match fault {
                TlsFault::BrokenHandshake => {
                    let _ = w.write_all(b"220 2.0.0 go ahead\r\n");
                    let _ = w.write_all(b"this is not a TLS server hello\r\n");
                }
                TlsFault::LinesBeforeHandshake => {
                    let _ =
                        w.write_all(b"220 2.0.0 go ahead\r\n250 injected before the handshake\r\n");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            return;
        } else if cmd == "DATA" {
            in_data = true;
            b"354 go\r\n"
        } else if cmd == "QUIT" {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 ok\r\n"
        };
        if !reply.is_empty() && w.write_all(reply).is_err() {
            return;
        }
        line.clear();
    }
}
