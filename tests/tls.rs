//! STARTTLS with a real certificate: swaks negotiates it, pipelined
//! plaintext before the handshake is thrown away, and the session starts
//! over inside TLS.

mod common;
use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

fn start_tls_spate() -> Spate {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let spate = Spate::start(&["--tls-cert", &cert, "--tls-key", &key]);
    std::mem::forget(dir);
    spate
}

#[test]
fn swaks_sends_over_starttls() {
    require("swaks");
    require("openssl");
    let spate = start_tls_spate();
    let (ok, out) = run(
        "swaks",
        &[
            "--server",
            &spate.addr,
            "--tls",
            "--from",
            "s@a.test",
            "--to",
            "r@b.test",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("TLS started"), "{out}");
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored.len(), 1);
    assert!(String::from_utf8_lossy(&stored[0].body).contains("with ESMTPS id"));
}

#[test]
fn plaintext_pipelined_after_starttls_is_discarded_and_state_resets() {
    require("openssl");
    let spate = start_tls_spate();
    let mut smtp = spate.connect();
    let ehlo = smtp.send("EHLO c.test").reply().1;
    assert!(ehlo.iter().any(|l| l.ends_with("STARTTLS")), "{ehlo:?}");
    smtp.raw(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<injected@a.test>\r\n");
    smtp.expect(220);
    // Nothing else may come back in plaintext: the NOOP was thrown away.
    smtp.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut probe = [0u8; 1];
    let peeked = smtp.stream.peek(&mut probe);
    assert!(
        peeked.is_err(),
        "server answered buffered plaintext: {peeked:?}"
    );
    smtp.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // spate's own opportunistic client configuration accepts any
    // certificate: this test checks the TLS session, not the PKI.
    let config = spate::delivery::TlsClients::new(None).unwrap().any_cert;
    let conn = ClientConnection::new(config, ServerName::try_from("spate.test").unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, smtp.stream.try_clone().unwrap());
    let say =
        |tls: &mut StreamOwned<ClientConnection, std::net::TcpStream>, line: &str| -> Vec<String> {
            tls.write_all(format!("{line}\r\n").as_bytes()).unwrap();
            tls.flush().unwrap();
            let mut reader = BufReader::new(tls);
            let mut lines = Vec::new();
            loop {
                let mut l = String::new();
                reader.read_line(&mut l).unwrap();
                let done = l.as_bytes().get(3) == Some(&b' ');
                lines.push(l.trim_end().to_string());
                if done {
                    return lines;
                }
            }
        };
    let reply = say(&mut tls, "MAIL FROM:<s@a.test>");
    assert!(
        reply[0].starts_with("503"),
        "MAIL before EHLO inside TLS: {reply:?}"
    );
    let ehlo = say(&mut tls, "EHLO c.test");
    assert!(
        ehlo.last().unwrap().starts_with("250 ") && !ehlo.iter().any(|l| l.contains("STARTTLS")),
        "{ehlo:?}"
    );
    let again = say(&mut tls, "STARTTLS");
    assert!(again[0].starts_with("5"), "{again:?}");
    assert!(say(&mut tls, "MAIL FROM:<s@a.test>")[0].starts_with("250"));
    assert!(say(&mut tls, "RCPT TO:<r@b.test>")[0].starts_with("250"));
    assert!(say(&mut tls, "DATA")[0].starts_with("354"));
    let done = say(&mut tls, "Subject: tls\r\n\r\nsecret\r\n.");
    assert!(done[0].starts_with("250"), "{done:?}");
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sender, "s@a.test");
}
