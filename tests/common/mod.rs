//! Shared harness for the integration tests: start the real `spate` binary
//! on a loopback address with its own spool, talk SMTP to it with a tiny
//! session language, run real peers (swaks, smtp-source), and read the spool
//! back with the `spool-format` decoder.
#![allow(dead_code)]

pub mod counting;

use spool_format::{Layout, MessageView, RecordKind, ScanItem, Scanner, SegmentHeader};
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
    /// The stderr lines of the current run (a fresh buffer per launch).
    pub log: Arc<Mutex<Vec<String>>>,
    /// The thread that reads the current run's stderr into `log`; it ends
    /// at EOF, once the process has exited.
    log_reader: Option<std::thread::JoinHandle<()>>,
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

    /// The admin server's address: the SMTP address's host, port 10026.
    pub fn admin_addr(&self) -> String {
        let host = self.addr.rsplit_once(':').unwrap().0;
        format!("{host}:{}", TEST_PORT + 1)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr())
    }

    /// The injection listener's address (when started with
    /// [`Spate::start_injecting`]): the SMTP address's host, port 10027.
    pub fn inject_addr(&self) -> String {
        let host = self.addr.rsplit_once(':').unwrap().0;
        format!("{host}:{}", TEST_PORT + 2)
    }

    pub fn inject_url(&self) -> String {
        format!("http://{}", self.inject_addr())
    }

    /// More flags for the next [`Spate::launch`].
    pub fn add_args(&mut self, more: &[&str]) {
        self.args.extend(more.iter().map(|s| s.to_string()));
    }

    /// Starts `spate serve` with the HTTP injection listener on too.
    pub fn start_injecting(extra: &[&str]) -> Spate {
        let mut s = Spate::start_full(extra, &[], None, false);
        let addr = s.inject_addr();
        s.args.extend(["--inject".to_string(), addr]);
        s.launch();
        s
    }

    /// The token spate made for its admin server.
    pub fn admin_token(&self) -> String {
        let text = std::fs::read_to_string(self.spool_dir().join("admin.token")).unwrap();
        text.trim().split_once(':').unwrap().1.to_string()
    }

    /// Runs `spate ctl` against this spate's admin server.
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let url = self.admin_url();
        let spool = self.spool_dir();
        let mut all = vec!["ctl", "--admin", &url, "--spool", spool.to_str().unwrap()];
        all.extend_from_slice(args);
        spate_cmd(&all)
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

    /// Prepares a spate with the extra flags given but does not start it:
    /// the test sets up its directories first, then calls [`Spate::launch`].
    pub fn unlaunched(extra: &[&str]) -> Spate {
        Spate::start_full(extra, &[], None, false)
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
            log_reader: None,
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

    /// (Re)starts the process on the same spool and address, and returns
    /// once it has logged "spate: ready" (it listens on every core then).
    pub fn launch(&mut self) {
        assert!(self.child.is_none());
        // A buffer of its own for this run: nothing of an earlier run can
        // land in it, even from a reader thread that had not finished.
        self.log = Arc::new(Mutex::new(Vec::new()));
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
            // The admin server on this test's own address: never the
            // default 127.0.0.1:8025, which parallel tests would share.
            .args(if self.args.iter().any(|a| a == "--admin") {
                Vec::new()
            } else {
                vec!["--admin".to_string(), self.admin_addr()]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn spate");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        self.log_reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        }));
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
                self.child = None;
                self.join_log_reader();
                panic!(
                    "spate exited with {status} before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            // Generous: every test of a binary starts its own spate at once,
            // each core creates and syncs a 64 MiB segment, and the machine
            // may be busy with more than this suite.
            let pid = self.child.as_ref().unwrap().id();
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "spate not ready after 60s; its threads:\n{}\nlog:\n{}",
                threads_of(pid),
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

    /// SIGTERM, then wait; returns the exit status code. Returns with the
    /// whole stderr of the run in `log`, its shutdown report included.
    pub fn stop(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        signal(child.id(), 15);
        // spate may take its whole shutdown grace (30 s by default) to let
        // open transactions finish, then closes the spool (up to 10 s).
        let status = wait_timeout(&mut child, Duration::from_secs(60));
        self.join_log_reader();
        status.code().unwrap_or(-1)
    }

    /// kill -9, then wait; returns with the whole stderr of the run in `log`.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        self.join_log_reader();
    }

    /// Waits for the stderr reader of the run that just ended: the process
    /// has exited, but the lines it wrote last may still be on their way
    /// through the pipe into `log`. The pipe's write end lives only in the
    /// child (std opens it close-on-exec), so EOF comes at once.
    fn join_log_reader(&mut self) {
        let Some(reader) = self.log_reader.take() else {
            return;
        };
        let start = Instant::now();
        while !reader.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "spate's stderr still open 10 s after it exited"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        reader.join().unwrap();
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

/// Each thread of a process with its state and what it waits in, for the
/// message when a process seems stuck.
fn threads_of(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("(process {pid} is gone)");
    };
    let mut lines: Vec<String> = tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            let stat = read("stat");
            let state = stat.rsplit_once(") ").map_or("?", |(_, rest)| &rest[..1]);
            Some(format!(
                "  {} {} {state} wchan={}",
                dir.file_name()?.to_string_lossy(),
                read("comm").trim(),
                read("wchan")
            ))
        })
        .collect();
    lines.sort();
    lines.join("\n")
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
        Smtp::try_connect(addr).unwrap_or_else(|line| panic!("expected 220, got {line:?}"))
    }

    /// Connects and reads the greeting: the session if it is 220, else the
    /// greeting's last line.
    pub fn try_connect(addr: &str) -> Result<Smtp, String> {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut s = Smtp { stream, reader };
        match s.reply() {
            (220, _) => Ok(s),
            (_, lines) => Err(lines.last().unwrap().clone()),
        }
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
    /// The record's tenant and campaign (empty: none).
    pub tenant: String,
    pub campaign: String,
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

/// Every message in the spool, decoded: one per message id, in the order
/// of the segment files and of the records in them.
///
/// Safe to call while spate runs on the spool:
/// - a segment the reclaimer deletes between the listing and the read is
///   passed over;
/// - a segment being created is empty, then all zeros (preallocated) until
///   its header is written: passed over;
/// - a record being appended is not yet whole and fails its checksum: the
///   scanner reports it as damage, and only whole records count;
/// - compaction copies a message's record into the active segment before it
///   deletes the old segment (and a crash or stop in between leaves both):
///   a message may be in the spool twice, as recovery knows. Copies are
///   counted once, and must be the same message.
pub fn read_spool(dir: &Path) -> Vec<Stored> {
    let mut out: Vec<Stored> = Vec::new();
    let mut seen = std::collections::HashMap::new();
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
        let Some((bytes, layout)) = read_segment(&path) else {
            continue;
        };
        for item in Scanner::new(&bytes, layout) {
            if let ScanItem::Record {
                header, payload, ..
            } = item
            {
                if header.kind == RecordKind::Message {
                    let m = MessageView::decode(payload).unwrap();
                    let stored = Stored {
                        id: header.message_id,
                        sender: String::from_utf8(m.sender.to_vec()).unwrap(),
                        recipients: m
                            .recipients()
                            .map(|r| String::from_utf8(r.to_vec()).unwrap())
                            .collect(),
                        flags: m.flags,
                        tenant: String::from_utf8(m.tenant.to_vec()).unwrap(),
                        campaign: String::from_utf8(m.campaign.to_vec()).unwrap(),
                        body: m.body.to_vec(),
                    };
                    if let Some(&i) = seen.get(&stored.id) {
                        let first: &Stored = &out[i];
                        assert!(
                            first.sender == stored.sender
                                && first.recipients == stored.recipients
                                && first.flags == stored.flags
                                && first.body == stored.body,
                            "two different messages with id {:016x} in {}",
                            stored.id,
                            dir.display()
                        );
                        continue;
                    }
                    seen.insert(stored.id, out.len());
                    out.push(stored);
                }
            }
        }
    }
    out
}

/// A segment file's bytes and how its records are sealed, or `None` if it
/// is gone or not written yet.
fn read_segment(path: &Path) -> Option<(Vec<u8>, Layout)> {
    // The header is written with one write into a zeroed block; a read
    // racing with that write may, in principle, see part of it. Read again
    // before calling the header broken.
    let mut attempts = 0;
    loop {
        // The reclaimer may delete a segment between the listing and here.
        let bytes = std::fs::read(path).ok()?;
        if bytes.len() < 48 || bytes[..48].iter().all(|&b| b == 0) {
            return None; // a segment spate is creating right now
        }
        match SegmentHeader::decode(&bytes) {
            Ok(header) => return Some((bytes, header.layout())),
            Err(e) if attempts == 10 => panic!("segment header of {}: {e:?}", path.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
        attempts += 1;
    }
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
///
/// A dump file is written while its transaction goes on: smtp-sink creates
/// it (O_CREAT|O_EXCL) when it has accepted MAIL FROM, writes the headers
/// and the body through a buffer of its own as they arrive, and closes it
/// at the final dot, before it replies to the dot. A transaction that ends
/// any other way (RSET, HELO/EHLO, a lost connection) unlinks its file,
/// then closes it. So a file in `dump` may be half written, or about to go;
/// [`Sink::count`] and [`Sink::messages`] see only whole messages (see
/// [`Sink::whole_files`] for how).
pub struct Sink {
    pub child: Child,
    pub addr: String,
    pub dump: tempfile::TempDir,
    /// smtp-sink's stderr, for the message when it fails to start.
    log: tempfile::NamedTempFile,
}

impl Sink {
    /// `flags` are extra smtp-sink options, e.g. `["-r", "RCPT"]` to tempfail.
    /// Returns once smtp-sink accepts connections on `addr`.
    pub fn start(addr: &str, flags: &[&str]) -> Sink {
        require("smtp-sink");
        // Else the wait below would find that listener, not this sink.
        assert!(
            TcpStream::connect(addr).is_err(),
            "something already listens on {addr}"
        );
        let dump = tempfile::tempdir().unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let template = format!("{}/%H%M%S.", dump.path().display());
        // smtp-sink runs as the test's own user: it must be told a user when
        // it starts as root, and a process that changed its uid is not
        // dumpable, so without CAP_SYS_PTRACE (a container's usual lot) its
        // /proc/<pid>/fd, which `whole_files` reads, could not be read.
        let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        let user: &[&str] = if euid == 0 { &["-u", "root"] } else { &[] };
        let mut child = Command::new("smtp-sink")
            .args(user)
            .args(["-d", &template])
            .args(flags)
            .arg(addr)
            .arg("256")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("spawn smtp-sink");
        // Connecting is a session to smtp-sink, but no transaction: it
        // greets, sees EOF and hangs up ("lost connection" on its stderr).
        // No dump file is made before MAIL FROM, and it ignores SIGPIPE.
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "smtp-sink on {addr} exited with {status}: {}",
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "smtp-sink did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // `whole_files` needs to see what smtp-sink has open: its stderr, for one.
        let stderr = format!("/proc/{}/fd/2", child.id());
        if let Err(e) = std::fs::metadata(&stderr) {
            panic!("cannot see smtp-sink's open files ({stderr}): {e}");
        }
        Sink {
            child,
            addr: addr.to_string(),
            dump,
            log,
        }
    }

    /// The whole messages received so far, as smtp-sink wrote them (LF line
    /// ends, its own X- and Received headers first), in the order of their
    /// file names (the second each transaction began, then at random).
    pub fn messages(&self) -> Vec<String> {
        self.whole_files()
            .iter()
            .map(|path| {
                // Whole files never change and are never unlinked.
                let bytes =
                    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect()
    }

    /// How many whole messages smtp-sink has received.
    pub fn count(&self) -> usize {
        self.whole_files().len()
    }

    /// The dump files that hold a whole message, in name order.
    ///
    /// smtp-sink is one process. A file is whole once that process has
    /// closed it and has not unlinked it, and closed files never change.
    /// The checks, in this order:
    /// 1. list `dump` and keep the files that are not empty. A file is
    ///    empty until smtp-sink writes through its descriptor, and in
    ///    particular during the instant inside open(2) when the file exists
    ///    but its descriptor is not installed yet (and so not in step 2);
    /// 2. then read what smtp-sink has open (/proc/<pid>/fd) and drop the
    ///    files still open. A file not empty in step 1 had its descriptor
    ///    by then, so if it is not open now it was closed in between;
    /// 3. then look each file left up again: one whose transaction was
    ///    aborted was unlinked before it was closed, so it is gone now. (The
    ///    name must still lead to the inode listed.)
    ///
    /// No file is kept open: there may be more of them than descriptors.
    fn whole_files(&self) -> Vec<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let mut listed: Vec<(PathBuf, (u64, u64))> = std::fs::read_dir(self.dump.path())
            .unwrap()
            .filter_map(|e| {
                let path = e.ok()?.path();
                // Gone already: an aborted transaction.
                let meta = std::fs::metadata(&path).ok()?;
                (meta.len() > 0).then(|| (path, (meta.dev(), meta.ino())))
            })
            .collect();
        listed.sort();
        let pid = self.child.id();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap_or_else(|e| panic!("smtp-sink on {} is gone: {e}", self.addr));
        // An entry can go while we read (smtp-sink closed that descriptor).
        let open: std::collections::HashSet<(u64, u64)> = fds
            .filter_map(|e| match std::fs::metadata(e.ok()?.path()) {
                Ok(meta) => Some((meta.dev(), meta.ino())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("smtp-sink's open files: {e}"),
            })
            .collect();
        // A process that has exited has no descriptors: nothing would look
        // open, half-written files included.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
        assert!(
            matches!(state, Some(s) if s != "Z" && s != "X"),
            "smtp-sink on {} has exited: {}",
            self.addr,
            std::fs::read_to_string(self.log.path()).unwrap_or_default()
        );
        listed
            .into_iter()
            .filter(|(path, id)| {
                !open.contains(id)
                    && std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == *id)
            })
            .map(|(path, _)| path)
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The delivery log records of every core, parsed: the whole lines only.
///
/// spate buffers records and appends the buffer to its core's file every
/// 100 ms; a read racing with that write can end anywhere in it, even in
/// the middle of a UTF-8 sequence. What ends in '\n' was written whole (a
/// reader never sees a byte past the file size before the bytes below it
/// are written), and every such line must be a JSON record. (A kill -9 in
/// the middle of a write can leave a line torn for good, with the next
/// run's records appended to it: tests read the log only of runs that were
/// not killed.)
pub fn delivery_log(log_dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        let whole = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(last) => &bytes[..last],
            None => continue,
        };
        for (n, line) in whole.split(|&b| b == b'\n').enumerate() {
            let record = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "{} line {}: not a JSON record ({e}): {:?}",
                    path.display(),
                    n + 1,
                    String::from_utf8_lossy(line)
                )
            });
            out.push(record);
        }
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
        wait_until(Duration::from_secs(30), "unbound to answer", || {
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
    certificate(dir, "DNS:spate.test", false)
}

/// A self-signed certificate and its key, for `names` (a subjectAltName
/// value, e.g. "IP:127.0.0.5"); `leaf`: marked not a CA, so that webpki
/// (rustls clients) takes it as a server's own certificate.
pub fn certificate(dir: &Path, names: &str, leaf: bool) -> (String, String) {
    require("openssl");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let san = format!("subjectAltName={names}");
    let mut args = vec![
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
        &san,
    ];
    if leaf {
        args.extend(["-addext", "basicConstraints=critical,CA:FALSE"]);
    }
    args.extend([
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let (ok, out) = run("openssl", &args);
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

/// An HTTP client for the admin and injection APIs: statuses are answers,
/// not errors, and every request is bounded by `limit`, so a server that
/// never answers fails the test instead of hanging it.
pub fn http_agent(limit: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(limit))
        .build()
        .new_agent()
}

/// A POST to `url` with an optional bearer token; its status and body
/// (JSON when it parses, else the text as a JSON string).
pub fn http_post(
    url: &str,
    token: Option<&str>,
    body: &str,
    limit: Duration,
) -> (u16, serde_json::Value) {
    let mut req = http_agent(limit).post(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut r = req.send(body).unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (r.status().as_u16(), v)
}
