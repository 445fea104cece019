//! STARTTLS with a real certificate: swaks negotiates it, pipelined
//! plaintext before the handshake is thrown away, and the session starts
//! over inside TLS.

mod common;
use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::time::Duration;

fn make_cert(dir: &std::path::Path) -> (String, String) {
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

fn start_tls_spate() -> Spate {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path());
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

/// Accepts any certificate: the test checks spate's TLS session, not PKI.
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
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

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let conn = ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("spate.test").unwrap(),
    )
    .unwrap();
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
