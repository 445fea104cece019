//! DKIM signing end to end: spate signs with RSA and Ed25519 keys made by
//! openssl, relays to Postfix's smtp-sink, and dkimpy (Debian's
//! python3-dkim, a verifier nobody here wrote) checks every signature
//! against the public keys published in a real DNS server (unbound).

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A key pair made by openssl: the PEM file spate signs with, and the
/// `p=` value to publish.
fn key(dir: &Path, name: &str, genpkey: &str) -> (String, String) {
    let pem = dir.join(format!("{name}.pem")).display().to_string();
    sh(&format!("openssl genpkey {genpkey} -out {pem} 2>/dev/null"));
    let public = if genpkey.contains("ed25519") {
        // RFC 8463: p= is the raw 32-byte key, the tail of its SPKI DER.
        sh(&format!(
            "openssl pkey -in {pem} -pubout -outform DER | tail -c 32 | openssl base64 -A"
        ))
    } else {
        sh(&format!(
            "openssl pkey -in {pem} -pubout -outform DER | openssl base64 -A"
        ))
    };
    (pem, public)
}

/// A TXT record as unbound's local-data, split into strings of at most
/// 255 octets (RFC 1035 3.3.14).
fn txt_record(name: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", std::str::from_utf8(c).unwrap()))
        .collect();
    format!("  local-data: '{name} 300 IN TXT {}'\n", strings.join(" "))
}

/// dkimpy's verdict on each signature of `message`, in header order.
fn verify(message: &str, dns: &str) -> Vec<String> {
    let (ip, port) = dns.rsplit_once(':').unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dkim_verify.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .args([ip, port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (apt-get install python3-dkim python3-dnspython python3-nacl)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dkim_verify.py: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn sink_message_containing<'a>(messages: &'a [String], marker: &str) -> &'a str {
    messages
        .iter()
        .find(|m| m.contains(marker))
        .unwrap_or_else(|| panic!("no message with {marker} at the sink: {messages:#?}"))
}

#[test]
fn rsa_and_ed25519_signatures_verify_and_a_malformed_one_is_left_alone() {
    require("openssl");
    let keys = tempfile::tempdir().unwrap();
    let (rsa_pem, rsa_p) = key(
        keys.path(),
        "rsa",
        "-algorithm RSA -pkeyopt rsa_keygen_bits:2048",
    );
    let (ed_pem, ed_p) = key(keys.path(), "ed", "-algorithm ed25519");
    let mut zone = String::from("  local-zone: \"test.\" static\n");
    zone += &txt_record(
        "s1._domainkey.shop.test.",
        &format!("v=DKIM1; k=rsa; p={rsa_p}"),
    );
    zone += &txt_record(
        "e1._domainkey.ed.test.",
        &format!("v=DKIM1; k=ed25519; p={ed_p}"),
    );
    zone += &txt_record(
        "r1._domainkey.ed.test.",
        &format!("v=DKIM1; k=rsa; p={rsa_p}"),
    );
    let dns = Unbound::start(&zone);

    let sink = Sink::start(&free_addr(), &[]);
    let cfg = keys.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[dkim]]\ndomain = \"shop.test\"\nselector = \"s1\"\nprivate_key = \"{rsa_pem}\"\n\n\
             [[dkim]]\ndomain = \"ed.test\"\nselector = \"e1\"\nprivate_key = \"{ed_pem}\"\n\n\
             [[dkim]]\ndomain = \"ed.test\"\nselector = \"r1\"\nprivate_key = \"{rsa_pem}\"\n"
        ),
    )
    .unwrap();
    let mut spate = Spate::start(&["--smarthost", &sink.addr, "--config", cfg.to_str().unwrap()]);
    let mut smtp = spate.connect();
    // A From: in a subdomain of a signing domain; a dot-stuffed line.
    smtp.transaction(
        // The signing domain follows the From: field, not the envelope.
        "bounces@esp.test",
        &["r@b.test"],
        b"From: \"Shop, Inc\" <News@Mail.Shop.Test>\r\nTo: r@b.test\r\nSubject: rsa\r\n\
          Message-ID: <1@shop.test>\r\n\r\n..a dotted line\r\nbody  with  spaces \r\nend-rsa\r\n",
    );
    // RELIABILITY 17: a malformed DKIM-Signature from the client.
    let malformed = "DKIM-Signature: v=1; a=rsa-sha256; d=a.test; s=x; bh=AA; b=;\r\n\th=from:from:from:from; l=-5; x=0\r\n";
    smtp.transaction(
        "alerts@ed.test",
        &["r@b.test"],
        format!("{malformed}From: alerts@ed.test\r\nSubject: ed\r\n\r\nbody\r\nend-ed\r\n")
            .as_bytes(),
    );
    smtp.transaction(
        "alerts@ed.test",
        &["r@b.test"],
        b"From: x@other.test\r\nSubject: none\r\n\r\nbody\r\nend-none\r\n",
    );
    wait_until(LONG, "three messages at the sink", || sink.count() == 3);
    let messages = sink.messages();

    let rsa = sink_message_containing(&messages, "end-rsa");
    assert_eq!(verify(rsa, &dns.addr), ["d=shop.test s=s1 pass"], "{rsa}");
    assert!(rsa.contains("a=rsa-sha256"), "{rsa}");

    let ed = sink_message_containing(&messages, "end-ed");
    // spate's own signatures (dual: Ed25519 and RSA, in config order)
    // come first and verify; the client's malformed one is relayed byte
    // for byte and fails, and nothing crashes.
    assert_eq!(
        verify(ed, &dns.addr),
        [
            "d=ed.test s=e1 pass",
            "d=ed.test s=r1 pass",
            "d=a.test s=x fail"
        ],
        "{ed}"
    );
    assert!(ed.contains("a=ed25519-sha256"), "{ed}");
    assert!(ed.contains(&malformed.replace("\r\n", "\n")), "{ed}");

    // An envelope in a signing domain does not make a From: outside it signed.
    let unsigned = sink_message_containing(&messages, "end-none");
    assert!(!unsigned.contains("DKIM-Signature"), "{unsigned}");

    // The verifier does check: a changed Subject fails, and so does a
    // second Subject added on top (the fields are oversigned).
    let changed = rsa.replace("Subject: rsa", "Subject: RSA!");
    assert_eq!(verify(&changed, &dns.addr), ["d=shop.test s=s1 fail"]);
    let added = format!("Subject: added in transit\n{rsa}");
    assert_eq!(verify(&added, &dns.addr), ["d=shop.test s=s1 fail"]);
    // Thousands of copies of a signed field would make a signature as big
    // as the header section (h= names each copy): 552, nothing queued.
    let mut many = String::from("From: a@shop.test\r\n");
    for _ in 0..6000 {
        many.push_str("Cc: c@d.test\r\n");
    }
    many.push_str("\r\nbody\r\n");
    smtp.send("MAIL FROM:<a@shop.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    let reply = smtp.raw(many.as_bytes()).raw(b".\r\n").expect(552);
    assert!(reply.contains("5.3.4"), "{reply}");
    let changed = ed.replace("Subject: ed", "Subject: ED!");
    assert_eq!(
        verify(&changed, &dns.addr),
        [
            "d=ed.test s=e1 fail",
            "d=ed.test s=r1 fail",
            "d=a.test s=x fail"
        ]
    );
    assert_eq!(spate.stop(), 0);
}

#[test]
fn a_key_that_cannot_be_read_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key\n").unwrap();
    let missing = dir.path().join("no-such-key.pem");
    for key in [&missing, &junk] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[dkim]]\ndomain = \"shop.test\"\nselector = \"s1\"\nprivate_key = \"{}\"\n",
                key.display()
            ),
        )
        .unwrap();
        let spool = dir.path().join("spool");
        let (ok, out) = spate_cmd(&[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--spool",
            spool.to_str().unwrap(),
            "--log-dir",
            dir.path().join("log").to_str().unwrap(),
            "--listen",
            &free_addr(),
            "--dns",
            "127.0.0.1:9",
        ]);
        assert!(!ok, "{out}");
        assert!(
            out.contains(&format!("dkim key {} (for shop.test)", key.display())),
            "{out}"
        );
    }
}
