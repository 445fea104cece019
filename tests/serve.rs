//! `spate serve` as an operator runs it: defaults, config files and flags,
//! several cores, graceful stop.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs on the built-in defaults, DNS from /etc/resolv.conf included, so
/// the recipient is an address literal: delivery needs no DNS query (and
/// fails at once on 127.0.0.1:25, leaving the message queued).
#[test]
fn defaults_start_accept_from_swaks_and_stop_on_sigterm() {
    require("swaks");
    // spate listens with SO_REUSEPORT: a second one on the same address
    // would share its connections, not fail to start.
    assert!(
        std::net::TcpStream::connect("127.0.0.1:2525").is_err(),
        "something already listens on 127.0.0.1:2525, spate's default"
    );
    let cwd = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_spate"))
            .arg("serve")
            .current_dir(cwd.path())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(20))
        .and_then(|_| rx.recv_timeout(Duration::from_secs(20)))
        .unwrap();
    assert!(ready.contains("listening on 127.0.0.1:2525"), "{ready}");
    let (ok, out) = run(
        "swaks",
        &[
            "--server",
            "127.0.0.1:2525",
            "--from",
            "s@a.test",
            "--to",
            "r@[127.0.0.1]",
        ],
    );
    assert!(ok, "{out}");
    Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(read_spool(&cwd.path().join("spool")).len(), 1);
    assert!(cwd.path().join("log").is_dir());
}

/// Kills the process when the test ends, failed or not: a spate left
/// running on the fixed default address would spoil the next run.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn config_default_is_a_valid_config_file() {
    let (ok, text) = spate_cmd(&["config", "default"]);
    assert!(ok);
    assert!(
        text.contains("[server]") && text.contains("# "),
        "commented TOML"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spate.toml");
    std::fs::write(&path, &text).unwrap();
    let (ok, out) = spate_cmd(&["config", "check", "--config", path.to_str().unwrap()]);
    assert!(ok, "{out}");
}

#[test]
fn unknown_keys_and_bad_values_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nmax_recipeints = 5\n").unwrap();
    let (ok, out) = spate_cmd(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!ok && out.contains("max_recipeints"), "{out}");
    std::fs::write(&path, "[spool]\nsegment_bytes = 1000\n").unwrap();
    let (ok, out) = spate_cmd(&["serve", "--config", path.to_str().unwrap()]);
    assert!(
        !ok && out.contains("spool.segment_bytes") && out.contains("multiple of 4096"),
        "{out}"
    );
    let (ok, out) = spate_cmd(&["serve", "--cores", "0-999"]);
    assert!(!ok && out.contains("cores.cpus"), "{out}");
    let (ok, out) = spate_cmd(&["serve", "--listen", "nowhere"]);
    assert!(!ok && out.contains("server.listen"), "{out}");
    let (ok, out) = spate_cmd(&["serve", "--route", "example.com"]);
    assert!(!ok && out.contains("delivery.routes"), "{out}");
}

#[test]
fn address_in_use_is_a_clear_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = spate_cmd(&[
        "serve",
        "--listen",
        &addr,
        "--spool",
        dir.path().join("s").to_str().unwrap(),
        "--log-dir",
        dir.path().join("l").to_str().unwrap(),
    ]);
    assert!(!ok && out.contains(&addr), "{out}");
}

#[test]
fn recipients_are_split_between_the_cores_that_own_their_domains() {
    let mut spate = Spate::start(&["--cores", "2"]);
    let domains: Vec<String> = (0..20).map(|i| format!("r@domain{i}.test")).collect();
    let to: Vec<&str> = domains.iter().map(|s| s.as_str()).collect();
    let mut smtp = spate.connect();
    for _ in 0..5 {
        smtp.transaction("s@a.test", &to, b"Subject: split\r\n\r\nx\r\n");
    }
    assert_eq!(spate.stop(), 0);
    let log = spate.log_text();
    let mut per_core = Vec::new();
    for line in log.lines().filter(|l| l.contains("queued since start")) {
        // "... N messages (M recipients) queued since start; ..."
        let n: u64 = line
            .split("messages (")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        per_core.push(n);
    }
    assert_eq!(per_core.len(), 2, "{log}");
    assert_eq!(per_core.iter().sum::<u64>(), 100, "{log}");
    assert!(
        per_core.iter().all(|&n| n > 0),
        "both cores own some of 20 domains: {log}"
    );
}

#[test]
fn sigterm_lets_an_open_transaction_finish() {
    let mut spate = Spate::start(&[]);
    let mut idle = spate.connect();
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    let pid = spate.child.as_ref().unwrap().id();
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let line = idle.expect(421);
    assert!(
        line.contains("4.3.2"),
        "an idle session is told to come back: {line}"
    );
    smtp.send("DATA").expect(354);
    smtp.raw(b"Subject: late\r\n\r\nfinished after SIGTERM\r\n.\r\n")
        .expect(250);
    // The transaction is done; the session is now idle and is closed.
    smtp.expect(421);
    let status = spate.child.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(read_spool(&spate.spool_dir()).len(), 1);
}

#[test]
fn a_second_engine_on_the_same_spool_is_refused() {
    let spate = Spate::start(&[]);
    let (ok, out) = spate_cmd(&[
        "serve",
        "--listen",
        &free_addr(),
        "--spool",
        spate.spool_dir().to_str().unwrap(),
        "--log-dir",
        spate.log_dir().to_str().unwrap(),
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("in use by another spate"), "{out}");
}
