//! Messages injected by real clients (swaks, Postfix's smtp-source) and by
//! hand land in the spool byte-exact, and only after the spool synced them.

mod common;
use common::*;

#[test]
fn swaks_pipelined_multi_recipient_message_is_spooled() {
    require("swaks");
    let spate = Spate::start(&[]);
    let data = spate.dir.path().join("data.txt");
    std::fs::write(&data, "Subject: swaks\r\n\r\n.dot line\r\nplain line\r\n").unwrap();
    let (ok, out) = run(
        "swaks",
        &[
            "--server",
            &spate.addr,
            "--pipeline",
            "--from",
            "s@sender.test",
            "--to",
            "a@one.test,b@two.test,c@three.test",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("250 2.0.0 Ok: queued as"), "{out}");
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sender, "s@sender.test");
    assert_eq!(
        stored[0].recipients,
        ["a@one.test", "b@two.test", "c@three.test"]
    );
    let body = stored[0].client_body();
    assert!(
        body.starts_with(b"Subject: swaks\r\n\r\n.dot line\r\nplain line\r\n"),
        "{}",
        String::from_utf8_lossy(body)
    );
}

#[test]
fn smtp_source_file_is_spooled_byte_exact() {
    require("smtp-source");
    let spate = Spate::start(&[]);
    let file = spate.dir.path().join("msg.txt");
    let lines = [
        "Subject: exact",
        "",
        ".starts with a dot",
        "..two dots",
        ".",
        "tail",
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (ok, out) = run(
        "smtp-source",
        &[
            "-s",
            "4",
            "-m",
            "40",
            "-d",
            "-F",
            file.to_str().unwrap(),
            "-f",
            "s@a.test",
            "-t",
            "r@b.test",
            &spate.addr,
        ],
    );
    assert!(ok, "{out}");
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored.len(), 40);
    // smtp-source ends the message with one empty line of its own.
    let expected = lines.join("\r\n") + "\r\n\r\n";
    for m in &stored {
        assert_eq!(m.client_body(), expected.as_bytes());
    }
}

#[test]
fn smtp_source_sessions_with_many_recipients() {
    require("smtp-source");
    let spate = Spate::start(&[]);
    let (ok, out) = run(
        "smtp-source",
        &[
            "-s",
            "10",
            "-m",
            "500",
            "-r",
            "3",
            "-l",
            "4096",
            "-d",
            "-f",
            "s@a.test",
            "-t",
            "r@b.test",
            &spate.addr,
        ],
    );
    assert!(ok, "{out}");
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored.len(), 500);
    assert!(stored
        .iter()
        .all(|m| m.recipients.len() == 3 && m.body.len() > 4096));
    let mut ids: Vec<u64> = stored.iter().map(|m| m.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 500, "message ids are unique");
    let (clean, report) = spate_cmd(&["spool", "verify", spate.spool_dir().to_str().unwrap()]);
    assert!(clean, "{report}");
}

#[test]
fn eight_bit_body_and_dot_stuffing_are_exact() {
    let spate = Spate::start(&[]);
    let mut smtp = spate.connect();
    smtp.send("EHLO client.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test> BODY=8BITMIME").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    let body =
        "Subject: caf\u{e9}\r\n\r\n\u{fc}ber gr\u{f6}\u{df}e\r\n..leading dot\r\n... three\r\n";
    smtp.raw(body.as_bytes()).raw(b".\r\n");
    let reply = smtp.expect(250);
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].flags & spool_format::FLAG_8BITMIME,
        spool_format::FLAG_8BITMIME
    );
    let expected =
        "Subject: caf\u{e9}\r\n\r\n\u{fc}ber gr\u{f6}\u{df}e\r\n.leading dot\r\n.. three\r\n";
    assert_eq!(stored[0].client_body(), expected.as_bytes());
    assert!(reply.contains(&format!("{:016x}", stored[0].id)));
    let received = String::from_utf8_lossy(&stored[0].body[..200]).to_string();
    assert!(
        received.contains("by spate.test (spate) with ESMTP id"),
        "{received}"
    );
}

#[test]
fn smtputf8_addresses_are_accepted_and_flagged() {
    let spate = Spate::start(&[]);
    let mut smtp = spate.connect();
    smtp.send("EHLO client.test").expect(250);
    smtp.send("MAIL FROM:<j\u{f6}rg@absender.test>").expect(553);
    smtp.send("MAIL FROM:<j\u{f6}rg@absender.test> SMTPUTF8")
        .expect(250);
    smtp.send("RCPT TO:<\u{7528}\u{6237}@\u{4f8b}\u{5b50}.test>")
        .expect(250);
    smtp.send("DATA").expect(354);
    smtp.raw(b"Subject: utf8\r\n\r\nhi\r\n.\r\n").expect(250);
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(
        stored[0].recipients,
        ["\u{7528}\u{6237}@\u{4f8b}\u{5b50}.test"]
    );
    assert_eq!(
        stored[0].flags & spool_format::FLAG_SMTPUTF8,
        spool_format::FLAG_SMTPUTF8
    );
}

#[test]
fn whole_transaction_in_one_write_gets_every_reply_in_order() {
    let spate = Spate::start(&[]);
    let mut smtp = spate.connect();
    smtp.raw(b"EHLO c.test\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<r1@b.test>\r\nRCPT TO:<r2@c.test>\r\nDATA\r\n");
    smtp.expect(250);
    smtp.expect(250);
    smtp.expect(250);
    smtp.expect(250);
    smtp.expect(354);
    smtp.raw(b"Subject: p\r\n\r\nx\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n");
    smtp.expect(250);
    smtp.expect(250);
    smtp.expect(250);
    smtp.expect(221);
    assert_eq!(read_spool(&spate.spool_dir()).len(), 1);
}

#[test]
fn a_failed_sync_gets_451_never_250() {
    let spate = Spate::start_with_env(&["--cores", "1"], &[("SPATE_FAULT_SYNC_FAIL", "1")]);
    let mut smtp = spate.connect();
    smtp.send("EHLO client.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    smtp.raw(b"Subject: one\r\n\r\nfirst\r\n.\r\n");
    let refused = smtp.expect(451);
    assert!(refused.contains("4.3.0"), "{refused}");
    let accepted = smtp.transaction("s@a.test", &["r@b.test"], b"Subject: two\r\n\r\nsecond\r\n");
    assert!(accepted.contains("queued as"));
}

/// RELIABILITY 22: a sync that takes seconds. The client hears 451 at the
/// configured deadline instead of waiting as long as the disk does.
#[test]
fn a_stalling_sync_gets_451_at_the_deadline_not_after_the_stall() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[spool]\nack_deadline_ms = 300\n").unwrap();
    let spate = Spate::start_with_env(
        &["--cores", "1", "--config", cfg.to_str().unwrap()],
        &[("SPATE_FAULT_SYNC_DELAY_MS", "3000")],
    );
    let mut smtp = spate.connect();
    smtp.send("EHLO client.test").expect(250);
    for _ in 0..2 {
        smtp.send("MAIL FROM:<s@a.test>").expect(250);
        smtp.send("RCPT TO:<r@b.test>").expect(250);
        smtp.send("DATA").expect(354);
        let sent = std::time::Instant::now();
        let line = smtp
            .raw(b"Subject: slow disk\r\n\r\nx\r\n.\r\n")
            .expect(451);
        let waited = sent.elapsed();
        assert!(line.contains("4.3.0"), "{line}");
        assert!(
            waited < std::time::Duration::from_millis(2500),
            "the reply waited {waited:?}, as long as the stalled sync"
        );
    }
}
