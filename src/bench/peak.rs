//! `spate bench peak`: one command that starts a spate engine, a bench sink
//! behind it (as its smarthost) and the load generator, all on loopback, with
//! a peak-day profile, and prints the report.

use super::inject::{self, InjectSpec};
use super::sink::Faults;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long delivery may take after the last message was injected.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

pub struct PeakSpec {
    pub messages: u64,
    pub concurrency: usize,
    pub size: usize,
    pub domains: usize,
    pub recipients: usize,
    pub cores: Option<String>,
    pub faults: Faults,
}

struct Children(Vec<Child>, PathBuf);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn free_loopback() -> Result<std::net::SocketAddr, String> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    probe.local_addr().map_err(|e| e.to_string())
}

pub fn run(spec: PeakSpec) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("spate-peak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut children = Children(Vec::new(), dir.clone());
    let (sink_addr, spate_addr) = (free_loopback()?, free_loopback()?);
    let f = &spec.faults;
    let sink = Command::new(&exe)
        .args([
            "bench",
            "sink",
            "--listen",
            &sink_addr.to_string(),
            "--cores",
            "1",
            "--check-bodies",
        ])
        .args([
            "--tempfail",
            &f.tempfail.to_string(),
            "--permfail",
            &f.permfail.to_string(),
            "--banner-421",
            &f.banner_421.to_string(),
        ])
        .args([
            "--drop",
            &f.drop.to_string(),
            "--latency",
            &f.latency.as_millis().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sink.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("start the sink: {e}"))?;
    children.0.push(sink);
    let config = dir.join("spate.toml");
    std::fs::write(
        &config,
        "[delivery]\nretry_initial_secs = 1\nretry_max_secs = 2\n",
    )
    .map_err(|e| e.to_string())?;
    let mut serve = Command::new(&exe);
    serve.args([
        "serve",
        "--listen",
        &spate_addr.to_string(),
        "--smarthost",
        &sink_addr.to_string(),
        "--dns",
        "127.0.0.1:9",
    ]);
    serve
        .arg("--config")
        .arg(&config)
        .arg("--spool")
        .arg(dir.join("spool"))
        .arg("--log-dir")
        .arg(dir.join("log"));
    if let Some(cores) = &spec.cores {
        serve.args(["--cores", cores]);
    }
    let mut spate = serve
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start spate: {e}"))?;
    let ready = watch_ready(spate.stderr.take().expect("piped"));
    children.0.push(spate);
    ready
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "spate did not start".to_string())??;
    eprintln!(
        "spate bench peak: spate on {spate_addr}, sink on {sink_addr}, {} messages",
        spec.messages
    );
    let injected = Instant::now();
    let report = inject::run(InjectSpec {
        target: spate_addr,
        messages: spec.messages,
        concurrency: spec.concurrency,
        size: spec.size,
        domains: spec.domains,
        recipients: spec.recipients,
        rate: None,
        progress: true,
    })?;
    let want = report.accepted * spec.recipients as u64;
    let (settled, deferrals) = wait_settled(&dir.join("log"), want)?;
    let relay = injected.elapsed();
    report.print();
    println!(
        "  relay: {settled} of {want} recipients delivered or bounced in {:.3} s from the first injection: {:.0} msgs/s; {deferrals} deferrals on the way",
        relay.as_secs_f64(),
        settled as f64 / spec.recipients as f64 / relay.as_secs_f64()
    );
    let sink_log = std::fs::read_to_string(dir.join("sink.log")).unwrap_or_default();
    if let Some(last) = sink_log.lines().last() {
        println!("  {last}");
    }
    Ok(())
}

/// Forwards spate's stderr lines and says when it is ready.
fn watch_ready(stderr: std::process::ChildStderr) -> mpsc::Receiver<Result<(), String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("spate: ready") {
                let _ = tx.send(Ok(()));
            } else if line.contains("spate: ") && !line.contains("spool ") {
                eprintln!("{line}");
            }
        }
        let _ = tx.send(Err("spate exited".into()));
    });
    rx
}

/// Waits until the delivery logs show `want` final outcomes; returns them
/// and the number of deferrals seen.
fn wait_settled(log_dir: &Path, want: u64) -> Result<(u64, u64), String> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let (mut settled, mut deferred) = (0, 0);
        for entry in std::fs::read_dir(log_dir)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            // DSNs (from the null sender) are spate's own traffic: not counted.
            for line in text.lines().filter(|l| !l.contains("\"sender\":\"\"")) {
                if line.starts_with("{\"type\":\"Delivery\"")
                    || line.starts_with("{\"type\":\"Bounce\"")
                {
                    settled += 1;
                } else if line.starts_with("{\"type\":\"TransientFailure\"") {
                    deferred += 1;
                }
            }
        }
        if settled >= want || Instant::now() > deadline {
            return Ok((settled, deferred));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
