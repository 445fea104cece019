//! STARTTLS on the way out, against a second spate with a real certificate:
//! opportunistic by default, required per route (checked against a CA the
//! operator configures), and expiry of mail that cannot be delivered.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// A CA and a server certificate for `ip` signed by it: (ca.pem, cert.pem, key.pem).
fn ca_and_cert(dir: &Path, ip: &str) -> (String, String, String) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let openssl = |args: &[&str]| {
        let (ok, out) = run("openssl", args);
        assert!(ok, "openssl {args:?}: {out}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=spate test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=mx.test",
        "-keyout",
        &p("key.pem"),
        "-out",
        &p("leaf.csr"),
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("cert.pem"),
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

struct Pair {
    sender: Spate,
    receiver: Spate,
    _dir: tempfile::TempDir,
}

/// A receiving spate with STARTTLS, and a sending spate routing b.test to it
/// with `route_table` (TOML inline table fields besides next_hop) and `extra`
/// `[delivery]` settings.
fn pair(route_table: &str, extra: &str, trust_ca: bool) -> Pair {
    require("openssl");
    let dir = tempfile::tempdir().unwrap();
    let recv_addr = free_addr();
    let ip = recv_addr.rsplit_once(':').unwrap().0.to_string();
    let (ca, cert, key) = ca_and_cert(dir.path(), &ip);
    let receiver = Spate::start_on(&recv_addr, &["--tls-cert", &cert, "--tls-key", &key]);
    let ca_line = if trust_ca {
        format!("tls_ca_file = \"{ca}\"\n")
    } else {
        String::new()
    };
    let toml = format!("[delivery]\nretry_initial_secs = 3600\n{ca_line}{extra}\n[delivery.routes]\n\"b.test\" = {{ next_hop = \"{}\"{route_table} }}\n", receiver.addr);
    let cfg = dir.path().join("sender.toml");
    std::fs::write(&cfg, toml).unwrap();
    let sender = Spate::start(&["--config", cfg.to_str().unwrap()]);
    Pair {
        sender,
        receiver,
        _dir: dir,
    }
}

fn received_by_receiver(p: &Pair) -> Vec<Stored> {
    read_spool(&p.receiver.spool_dir())
        .into_iter()
        .filter(|m| m.sender == "s@a.test")
        .collect()
}

#[test]
fn opportunistic_tls_is_used_when_offered() {
    let mut p = pair("", "", false);
    p.sender
        .connect()
        .transaction("s@a.test", &["r@b.test"], b"Subject: tls\r\n\r\nx\r\n");
    wait_until(LONG, "delivery", || !received_by_receiver(&p).is_empty());
    let got = &received_by_receiver(&p)[0];
    let header = String::from_utf8_lossy(&got.body[..300]).to_string();
    assert!(header.contains("with ESMTPS"), "{header}");
    assert_eq!(p.sender.stop(), 0);
}

#[test]
fn required_tls_with_a_trusted_ca_delivers() {
    let mut p = pair(", tls = \"required\"", "", true);
    p.sender
        .connect()
        .transaction("s@a.test", &["r@b.test"], b"Subject: tls\r\n\r\nx\r\n");
    wait_until(Duration::from_secs(10), "delivery", || {
        let failures = log_of(&p.sender.log_dir(), "TransientFailure");
        assert!(failures.is_empty(), "{failures:?}");
        !received_by_receiver(&p).is_empty()
    });
    assert_eq!(p.sender.stop(), 0);
    assert_eq!(log_of(&p.sender.log_dir(), "Delivery").len(), 1);
}

#[test]
fn required_tls_with_an_untrusted_certificate_defers() {
    let mut p = pair(", tls = \"required\"", "", false);
    p.sender
        .connect()
        .transaction("s@a.test", &["r@b.test"], b"Subject: tls\r\n\r\nx\r\n");
    wait_until(LONG, "a deferral", || {
        !log_of(&p.sender.log_dir(), "TransientFailure").is_empty()
    });
    assert_eq!(p.sender.stop(), 0);
    let failure = &log_of(&p.sender.log_dir(), "TransientFailure")[0];
    assert!(
        failure["response"].as_str().unwrap().contains("TLS"),
        "{failure}"
    );
    assert!(
        received_by_receiver(&p).is_empty(),
        "nothing went in plaintext"
    );
}

#[test]
fn tls_disabled_per_route_sends_in_plaintext() {
    let mut p = pair(", tls = \"disabled\"", "", false);
    p.sender
        .connect()
        .transaction("s@a.test", &["r@b.test"], b"Subject: plain\r\n\r\nx\r\n");
    wait_until(LONG, "delivery", || !received_by_receiver(&p).is_empty());
    let header = String::from_utf8_lossy(&received_by_receiver(&p)[0].body[..300]).to_string();
    assert!(header.contains("with ESMTP id"), "{header}");
    assert_eq!(p.sender.stop(), 0);
}

#[test]
fn undeliverable_mail_expires_into_a_dsn() {
    let senders = Sink::start(&free_addr(), &[]);
    let dead = free_addr();
    let cfg = tempfile::tempdir().unwrap();
    let path = cfg.path().join("c.toml");
    std::fs::write(&path, "[delivery]\nretry_initial_secs = 1\nretry_max_secs = 1\nexpire_secs = 2\nconnect_timeout_secs = 1\n").unwrap();
    let mut spate = Spate::start(&[
        "--config",
        path.to_str().unwrap(),
        "--route",
        &format!("b.test={dead}"),
        "--route",
        &format!("a.test={}", senders.addr),
    ]);
    spate.connect().transaction(
        "owner@a.test",
        &["r@b.test"],
        b"Subject: expire\r\n\r\nx\r\n",
    );
    wait_until(LONG, "the expiry DSN", || senders.count() == 1);
    assert_eq!(spate.stop(), 0);
    assert_eq!(log_of(&spate.log_dir(), "Expiration").len(), 1);
    assert!(!log_of(&spate.log_dir(), "TransientFailure").is_empty());
    let dsn = &senders.messages()[0];
    assert!(
        dsn.contains("Status: 4.4.7") && dsn.contains("Final-Recipient: rfc822; r@b.test"),
        "{dsn}"
    );
}

/// Opportunistic TLS that fails at the handshake falls back to plaintext;
/// required TLS defers instead.
fn starttls_fault(fault: TlsFault) {
    let mx = FakeMx::start(fault);
    let mut spate = Spate::start(&["--smarthost", &mx.addr]);
    spate
        .connect()
        .transaction("s@a.test", &["r@b.test"], b"Subject: fallback\r\n\r\nx\r\n");
    wait_until(LONG, "delivery in plaintext", || {
        mx.messages.load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    assert!(
        mx.tls_attempts.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "STARTTLS was tried first"
    );
    assert_eq!(spate.stop(), 0);
    assert_eq!(log_of(&spate.log_dir(), "Delivery").len(), 1);

    let mx = FakeMx::start(fault);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[delivery]\ntls = \"required\"\n").unwrap();
    let mut spate = Spate::start(&["--smarthost", &mx.addr, "--config", cfg.to_str().unwrap()]);
    spate
        .connect()
        .transaction("s@a.test", &["r@b.test"], b"Subject: required\r\n\r\nx\r\n");
    wait_until(LONG, "a deferral", || {
        !log_of(&spate.log_dir(), "TransientFailure").is_empty()
    });
    assert_eq!(
        mx.messages.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing went in plaintext"
    );
    assert_eq!(spate.stop(), 0);
}

#[test]
fn broken_tls_handshake_falls_back_to_plaintext_unless_required() {
    starttls_fault(TlsFault::BrokenHandshake);
}

#[test]
fn lines_sent_before_the_tls_handshake_abort_that_session() {
    starttls_fault(TlsFault::LinesBeforeHandshake);
}
