//! Webhooks against the binary and a real HTTP receiver that nobody here
//! wrote the server of (Python's http.server, `tests/webhook_receiver.py`,
//! which checks every signature itself): the receiver fails, hangs, goes
//! down and comes back, spate is killed with SIGKILL mid-stream and
//! restarted, and in the end every record of the delivery logs has been
//! acknowledged, each batch holds exactly its byte range's records in log
//! order, and no core's batches ever skip ahead. Also: https with a
//! `ca_file`, and a world-readable secret refused at start.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);
const SECRET: &str = "a test secret, long enough\n";

/// The Python receiver on its own loopback address. Killed on drop.
struct Receiver {
    child: Option<Child>,
    addr: String,
    secret: PathBuf,
    out: PathBuf,
}

impl Receiver {
    fn new(dir: &Path) -> Receiver {
        let secret = dir.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        Receiver {
            child: None,
            addr: free_addr(),
            secret,
            out: dir.join("received.jsonl"),
        }
    }

    /// Starts it (again, on the same address and file); returns once it
    /// accepts connections.
    fn start(&mut self, flags: &[&str]) {
        assert!(self.child.is_none());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook_receiver.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(&self.addr)
            .arg(&self.secret)
            .arg(&self.out)
            .args(flags)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3");
        let start = Instant::now();
        while std::net::TcpStream::connect(&self.addr).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the receiver on {} exited with {status}", self.addr);
            }
            assert!(start.elapsed() < LONG, "the receiver did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Every request it has logged (whole lines only).
    fn entries(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One whole line of a core's delivery log: its byte range and, if it is
/// JSON, the record.
struct Line {
    start: u64,
    end: u64,
    record: Option<Value>,
}

fn log_lines(log_dir: &Path, core: usize) -> Vec<Line> {
    let bytes =
        std::fs::read(log_dir.join(format!("delivery-core{core}.jsonl"))).unwrap_or_default();
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') {
        let end = start + nl + 1;
        out.push(Line {
            start: start as u64,
            end: end as u64,
            record: serde_json::from_slice(&bytes[start..end - 1]).ok(),
        });
        start = end;
    }
    out
}

/// An acknowledged batch: (core, start, end, events).
type Acked = (usize, u64, u64, Vec<Value>);

fn acked(receiver: &Receiver) -> Vec<Acked> {
    receiver
        .entries()
        .into_iter()
        .filter(|e| e["status"] == 200)
        .map(|e| {
            let id = e["batch"].as_str().unwrap().to_string();
            let parts: Vec<u64> = id.split('-').map(|p| p.parse().unwrap()).collect();
            assert_eq!(parts.len(), 3, "{id}");
            assert_eq!(e["body"]["core"].as_u64(), Some(parts[0]), "{id}");
            let events = e["body"]["events"].as_array().unwrap().clone();
            (parts[0] as usize, parts[1], parts[2], events)
        })
        .collect()
}

/// How far each core's acknowledged batches reach without a gap; panics
/// on a batch that skips ahead of what was acknowledged before it.
fn covered(batches: &[Acked], cores: usize) -> Vec<u64> {
    let mut reach = vec![0u64; cores];
    for (core, start, end, _) in batches {
        assert!(
            *start <= reach[*core] && start < end,
            "core {core}: batch {start}-{end} after {} was acknowledged: a gap",
            reach[*core]
        );
        reach[*core] = reach[*core].max(*end);
    }
    reach
}

fn all_received(log_dir: &Path, receiver: &Receiver, cores: usize) -> bool {
    let reach = covered(&acked(receiver), cores);
    (0..cores).all(|c| {
        log_lines(log_dir, c)
            .last()
            .is_none_or(|l| l.end <= reach[c])
    })
}

fn recipients_with(log_dir: &Path, kind: &str) -> std::collections::HashSet<String> {
    (0..2)
        .flat_map(|c| log_lines(log_dir, c))
        .filter_map(|l| l.record)
        .filter(|r| r["type"] == kind)
        .map(|r| r["recipient"].as_str().unwrap().to_string())
        .collect()
}

/// `count` messages, one recipient each, over six domains and a dead one.
fn send_round(spate: &Spate, round: usize, count: usize) -> Vec<String> {
    let mut smtp = spate.connect();
    let mut rcpts = Vec::new();
    for i in 0..count {
        let rcpt = if i % 7 == 6 {
            format!("r{round}-{i}@dead.test")
        } else {
            format!("r{round}-{i}@d{}.test", i % 6)
        };
        let body = format!("Subject: m-{round}-{i}\r\n\r\nx\r\n");
        smtp.transaction("s@src.test", &[&rcpt], body.as_bytes());
        rcpts.push(rcpt);
    }
    rcpts
}

fn acked_recipient(receiver: &Receiver, prefix: &str) -> bool {
    acked(receiver).iter().any(|(_, _, _, events)| {
        events.iter().any(|e| {
            e["recipient"]
                .as_str()
                .is_some_and(|r| r.starts_with(prefix))
        })
    })
}

fn metrics_text(spate: &Spate) -> String {
    ureq::get(format!("{}/metrics", spate.admin_url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// The value of one sample line of `/metrics`, e.g.
/// `spate_webhook_backlog_bytes{webhook="t",core="0"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn every_event_arrives_in_order_through_failures_hangs_outages_and_a_kill_9() {
    let sink = Sink::start(&free_addr(), &[]);
    let work = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(work.path());
    std::fs::set_permissions(
        &receiver.secret,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // Two 500s, then a request that hangs past spate's timeout.
    receiver.start(&["--fail", "2", "--hang", "1", "--hang-s", "3"]);
    let config = work.path().join("spate.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhook]]\nname = \"t\"\nurl = \"http://{}/hook\"\nsecret_file = \"{}\"\n\
             batch_max = 5\ninterval_ms = 200\ntimeout_ms = 1000\nbackoff_max_ms = 2000\n",
            receiver.addr,
            receiver.secret.display()
        ),
    )
    .unwrap();
    let route = "dead.test=127.0.0.1:9";
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--smarthost",
        &sink.addr,
        "--route",
        route,
        "--cores",
        "0-1",
    ];
    let mut spate = Spate::start(&args);
    let log_dir = spate.log_dir();

    // Failures and a hang, then acknowledgements.
    let mut sent = send_round(&spate, 1, 10);
    wait_until(LONG, "two 500s, a hang, then a 200", || {
        let e = receiver.entries();
        let n = |s: Value| e.iter().filter(|x| x["status"] == s).count();
        n(500.into()) == 2 && n("hung".into()) == 1 && n(200.into()) >= 1
    });

    // The receiver goes down: spate's connections are refused.
    receiver.stop();
    sent.extend(send_round(&spate, 2, 10));
    wait_until(LONG, "a refused connection", || {
        let log = spate.log.lock().unwrap();
        log.iter()
            .any(|l| l.contains("webhook t: batch") && l.contains("Connection refused"))
    });
    receiver.start(&[]);
    wait_until(LONG, "round 2 acknowledged", || {
        acked_recipient(&receiver, "r2-")
    });

    // kill -9 while round 3 streams out; a restart picks up at the cursor.
    sent.extend(send_round(&spate, 3, 30));
    wait_until(LONG, "round 3 under way", || {
        acked_recipient(&receiver, "r3-")
    });
    spate.kill9();
    spate.launch();
    let last = send_round(&spate, 4, 10);
    sent.extend(last.iter().cloned());

    let live: Vec<&String> = last.iter().filter(|r| !r.ends_with("@dead.test")).collect();
    wait_until(LONG, "round 4 delivered and logged", || {
        let delivered = recipients_with(&log_dir, "Delivery");
        live.iter().all(|r| delivered.contains(*r))
    });
    wait_until(LONG, "every logged record acknowledged", || {
        all_received(&log_dir, &receiver, 2)
    });

    // Every batch holds exactly the records of its byte range, in order,
    // and only records (a torn line of the kill is never sent).
    let batches = acked(&receiver);
    for (core, start, end, events) in &batches {
        let lines = log_lines(&log_dir, *core);
        let want: Vec<&Value> = lines
            .iter()
            .filter(|l| l.start >= *start && l.end <= *end)
            .filter_map(|l| l.record.as_ref())
            .collect();
        assert_eq!(
            events.iter().collect::<Vec<_>>(),
            want,
            "core {core} batch {start}-{end}"
        );
    }
    let reach = covered(&batches, 2);
    for (core, reach) in reach.iter().enumerate() {
        let lines = log_lines(&log_dir, core);
        assert!(lines.iter().all(|l| l.end <= *reach), "core {core}");
        assert!(lines.iter().filter(|l| l.record.is_some()).count() > 0);
    }
    // Round 3's last Reception records may have been in the log's memory
    // buffer at the kill (lost to the log, and so to webhooks, by design);
    // every other round's are all there.
    let received = recipients_with(&log_dir, "Reception");
    let missing: Vec<&String> = sent
        .iter()
        .filter(|r| !r.starts_with("r3-") && !received.contains(*r))
        .collect();
    assert!(missing.is_empty(), "not logged: {missing:?}");
    eprintln!(
        "{} requests, {} batches acknowledged, reach {reach:?}",
        receiver.entries().len(),
        batches.len()
    );
    if std::env::var_os("WEBHOOK_TEST_DEBUG").is_some() {
        for e in receiver.entries() {
            eprintln!("{} {}", e["status"], e["batch"]);
        }
        eprintln!("{}", spate.log_text());
    }
    for e in receiver.entries() {
        assert_eq!(e["sig_ok"], true, "{e}");
        assert_eq!(e["webhook"], "t");
        assert_eq!(e["content_type"], "application/json");
        assert_eq!(e["body"]["webhook"], "t");
    }
    let kinds: std::collections::BTreeSet<String> = batches
        .iter()
        .flat_map(|b| b.3.iter().map(|e| e["type"].as_str().unwrap().to_string()))
        .collect();
    for kind in ["Reception", "Delivery", "TransientFailure"] {
        assert!(kinds.contains(kind), "{kinds:?}");
    }

    // Metrics: nothing left behind on either core.
    wait_until(LONG, "no backlog in /metrics", || {
        let text = metrics_text(&spate);
        (0..2).all(|c| {
            sample(
                &text,
                &format!("spate_webhook_backlog_bytes{{webhook=\"t\",core=\"{c}\"}}"),
            ) == Some(0.0)
        })
    });
    let text = metrics_text(&spate);
    let mut check = Command::new("/usr/bin/python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/metrics_check.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    assert!(
        check.wait().unwrap().success(),
        "Prometheus's parser refused:\n{text}"
    );
    let events: f64 = (0..2)
        .filter_map(|c| {
            sample(
                &text,
                &format!("spate_webhook_events_total{{webhook=\"t\",core=\"{c}\"}}"),
            )
        })
        .sum();
    assert!(events > 0.0, "{text}");
    assert!(text.contains("spate_webhook_failures_total{webhook=\"t\",core=\"0\"}"));
    let per_core: BTreeMap<usize, usize> = batches.iter().fold(BTreeMap::new(), |mut m, b| {
        *m.entry(b.0).or_default() += 1;
        m
    });
    assert_eq!(per_core.len(), 2, "both cores sent batches: {per_core:?}");
}

/// An https:// receiver whose certificate chains to `ca_file` gets the
/// batches; every record logged arrives, signed.
#[test]
fn https_with_a_ca_file_delivers_every_record() {
    let sink = Sink::start(&free_addr(), &[]);
    let work = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(work.path());
    let ip = receiver.addr.rsplit_once(':').unwrap().0.to_string();
    let (cert, key) = certificate(work.path(), &format!("IP:{ip}"), true);
    std::fs::set_permissions(
        &receiver.secret,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    receiver.start(&["--tls", &cert, &key]);
    let config = work.path().join("spate.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhook]]\nname = \"tls\"\nurl = \"https://{}/hook\"\nsecret_file = \"{}\"\n\
             ca_file = \"{cert}\"\nevents = [\"received\", \"delivered\"]\ninterval_ms = 100\n",
            receiver.addr,
            receiver.secret.display()
        ),
    )
    .unwrap();
    let spate = Spate::start(&[
        "--config",
        config.to_str().unwrap(),
        "--smarthost",
        &sink.addr,
        "--cores",
        "0-1",
    ]);
    let rcpts = send_round(&spate, 1, 6);
    let log_dir = spate.log_dir();
    wait_until(LONG, "every message delivered and logged", || {
        let delivered = recipients_with(&log_dir, "Delivery");
        rcpts
            .iter()
            .all(|r| delivered.contains(r) || r.ends_with("@dead.test"))
    });
    wait_until(LONG, "every logged record acknowledged", || {
        all_received(&log_dir, &receiver, 2)
    });
    let mut got = Vec::new();
    for (_, _, _, events) in acked(&receiver) {
        got.extend(events);
    }
    assert!(got
        .iter()
        .all(|e| e["type"] == "Reception" || e["type"] == "Delivery"));
    let live = rcpts.iter().filter(|r| !r.ends_with("@dead.test")).count();
    assert_eq!(got.iter().filter(|e| e["type"] == "Delivery").count(), live);
    assert!(receiver.entries().iter().all(|e| e["sig_ok"] == true));
}

/// A world-readable secret stops the start, naming the file.
#[test]
fn a_secret_every_user_can_read_is_refused_at_start() {
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let config = work.path().join("spate.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhook]]\nname = \"t\"\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let spool = work.path().join("spool");
    let (ok, out) = spate_cmd(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--spool",
        spool.to_str().unwrap(),
        "--listen",
        &free_addr(),
        "--admin",
        "",
    ]);
    assert!(!ok && out.contains("readable by every user"), "{out}");
}
