//! Every limit of the listener and its relay control: a clear reply, the
//! session kept in step, nothing spooled that should not be.

mod common;
use common::*;
use std::io::Write;
use std::time::Duration;

fn with_config(toml: &str) -> Spate {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spate.toml");
    std::fs::write(&path, toml).unwrap();
    let spate = Spate::start(&["--config", path.to_str().unwrap()]);
    std::mem::forget(dir);
    spate
}

#[test]
fn relay_is_refused_outside_the_relay_networks() {
    let spate = Spate::start(&["--relay-from", "192.0.2.0/24"]);
    let mut smtp = spate.connect();
    smtp.send("EHLO outsider.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    for rcpt in [
        "r@b.test",
        "user%other@b.test",
        "@relay.test:user@b.test",
        "\"user@other\"@b.test",
    ] {
        let line = smtp.send(&format!("RCPT TO:<{rcpt}>")).expect(550);
        assert!(line.contains("5.7.1"), "{line}");
    }
    smtp.send("DATA").expect(554);
    smtp.send("QUIT").expect(221);
    assert!(read_spool(&spate.spool_dir()).is_empty());
}

#[test]
fn recipients_over_the_limit_get_452_and_the_rest_are_kept() {
    let spate = with_config("[server]\nmax_recipients = 5\n");
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    for i in 0..5 {
        smtp.send(&format!("RCPT TO:<r{i}@b.test>")).expect(250);
    }
    let line = smtp.send("RCPT TO:<r5@b.test>").expect(452);
    assert!(line.contains("4.5.3"), "{line}");
    smtp.send("DATA").expect(354);
    smtp.raw(b"Subject: x\r\n\r\nbody\r\n.\r\n").expect(250);
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored[0].recipients.len(), 5);
}

#[test]
fn size_limit_at_mail_and_after_the_dot() {
    let spate = Spate::start(&["--max-message-size", "10000"]);
    let mut smtp = spate.connect();
    let ehlo = smtp.send("EHLO c.test").reply().1;
    assert!(ehlo.iter().any(|l| l == "250-SIZE 10000"), "{ehlo:?}");
    smtp.send("MAIL FROM:<s@a.test> SIZE=20000").expect(552);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    let line = format!("{}\r\n", "y".repeat(98));
    smtp.raw(line.repeat(110).as_bytes()).raw(b".\r\n");
    let refused = smtp.expect(552);
    assert!(refused.contains("5.3.4"), "{refused}");
    smtp.send("NOOP").expect(250);
    let ok = smtp.transaction("s@a.test", &["r@b.test"], line.repeat(90).as_bytes());
    assert!(ok.contains("queued"));
    assert_eq!(read_spool(&spate.spool_dir()).len(), 1);
}

#[test]
fn over_long_command_line_gets_500_and_session_survives() {
    let spate = Spate::start(&[]);
    let mut smtp = spate.connect();
    smtp.send(&format!("NOOP {}", "x".repeat(2044))).expect(500);
    smtp.send("NOOP").expect(250);
    smtp.send(&format!("EHLO {}", "h".repeat(600))).expect(500);
    smtp.send("EHLO ok.test").expect(250);
}

#[test]
fn command_ended_by_bare_lf_is_not_executed() {
    let spate = Spate::start(&[]);
    let mut smtp = spate.connect();
    smtp.raw(b"EHLO c.test\n").expect(500);
    smtp.send("MAIL FROM:<s@a.test>").expect(503);
    smtp.send("EHLO c.test").expect(250);
}

#[test]
fn nul_and_invalid_utf8_in_commands_get_501() {
    let spate = Spate::start(&[]);
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.raw(b"MAIL FROM:<a\0b@c.test>\r\n").expect(501);
    smtp.raw(b"MAIL FROM:<\xff\xfe@c.test>\r\n").expect(501);
    smtp.raw(b"MAIL FROM:<a@c.test> SIZE=10\rRCPT TO:<x@y>\r\n")
        .expect(501);
    smtp.send("MAIL FROM:<a@c.test>").expect(250);
}

#[test]
fn text_line_over_1000_octets_is_refused_after_the_dot() {
    let spate = Spate::start(&[]);
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    smtp.raw(format!("Subject: long\r\n\r\n{}\r\n.\r\n", "z".repeat(1500)).as_bytes());
    smtp.expect(550);
    smtp.send("NOOP").expect(250);
    assert!(read_spool(&spate.spool_dir()).is_empty());
}

#[test]
fn smuggled_end_of_data_never_makes_a_second_message() {
    let spate = Spate::start(&[]);
    let variants: [&[u8]; 7] = [
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r.\n",
        b"\r\n.\r",
        b"\r\n.\n",
        b"\r\n\x00.\r\n",
    ];
    for end in variants {
        let mut smtp = spate.connect();
        smtp.send("EHLO c.test").expect(250);
        smtp.send("MAIL FROM:<s@a.test>").expect(250);
        smtp.send("RCPT TO:<r@b.test>").expect(250);
        smtp.send("DATA").expect(354);
        let mut msg = b"Subject: smuggle\r\n\r\nhello".to_vec();
        msg.extend_from_slice(end);
        msg.extend_from_slice(b"MAIL FROM:<evil@a.test>\r\nRCPT TO:<victim@b.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n");
        smtp.raw(&msg);
        let (code, _) = smtp.reply();
        assert!(code == 550 || code == 250, "{end:?}: {code}");
        smtp.send("NOOP").expect(250);
    }
    let stored = read_spool(&spate.spool_dir());
    assert!(
        stored.len() <= 1,
        "{} messages from {} DATA commands",
        stored.len(),
        variants.len()
    );
    for m in stored {
        assert_eq!(
            m.recipients,
            ["r@b.test"],
            "a smuggled envelope was accepted"
        );
    }
}

#[test]
fn idle_session_is_closed_at_the_command_timeout() {
    let spate = with_config("[server]\ncommand_timeout_secs = 1\n");
    let mut smtp = spate.connect();
    let line = smtp.expect(421);
    assert!(line.contains("4.4.2"), "{line}");
    assert!(smtp.closed_within(Duration::from_secs(5)));
}

#[test]
fn stalled_data_is_closed_at_the_data_timeout_and_nothing_queued() {
    let spate = with_config("[server]\ndata_timeout_secs = 1\n");
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    smtp.raw(b"Subject: slow\r\n\r\npart");
    smtp.expect(421);
    assert!(read_spool(&spate.spool_dir()).is_empty());
}

#[test]
fn too_many_errors_close_the_session() {
    let spate = with_config("[server]\nmax_errors = 3\n");
    let mut smtp = spate.connect();
    smtp.send("BOGUS").expect(500);
    smtp.send("BOGUS").expect(500);
    smtp.send("BOGUS").expect(500);
    smtp.expect(421);
    assert!(smtp.closed_within(Duration::from_secs(5)));
}

#[test]
fn commands_out_of_order_get_503() {
    let spate = Spate::start(&[]);
    let mut smtp = spate.connect();
    smtp.send("MAIL FROM:<s@a.test>").expect(503);
    smtp.send("EHLO c.test").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(503);
    smtp.send("DATA").expect(503);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(503);
    smtp.send("VRFY someone").expect(252);
    smtp.send("RSET").expect(250);
    smtp.send("MAIL FROM:<> ").expect(250);
}

#[test]
fn connections_over_the_per_core_limit_get_421() {
    let spate = with_config("[server]\nmax_connections_per_core = 1\n[cores]\ncpus = \"1\"\n");
    let _first = spate.connect();
    let mut second = std::io::BufReader::new(std::net::TcpStream::connect(&spate.addr).unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut second, &mut line).unwrap();
    assert!(line.starts_with("421 4.7.0"), "{line}");
}

#[test]
fn connections_over_the_per_ip_limit_get_421() {
    let spate = with_config("[server]\nmax_connections_per_ip = 2\n[cores]\ncpus = \"1\"\n");
    let first = spate.connect();
    let _second = spate.connect();
    let mut third = std::io::BufReader::new(std::net::TcpStream::connect(&spate.addr).unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut third, &mut line).unwrap();
    assert!(
        line.starts_with("421 4.7.0") && line.contains("your address"),
        "{line}"
    );
    // spate counts the first connection out once it has seen it close,
    // which takes as long as it takes: until then a new one gets 421.
    drop(first);
    let start = std::time::Instant::now();
    let mut smtp = loop {
        match Smtp::try_connect(&spate.addr) {
            Ok(smtp) => break smtp,
            Err(refused) => assert!(
                refused.starts_with("421 4.7.0") && start.elapsed() < Duration::from_secs(10),
                "{refused}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    smtp.send("NOOP").expect(250);
}

#[test]
fn slowloris_command_is_cut_at_the_command_timeout() {
    let spate = with_config("[server]\ncommand_timeout_secs = 2\n");
    let mut smtp = spate.connect();
    let start = std::time::Instant::now();
    // One byte every 300 ms: each read succeeds, the line never ends.
    let mut cut = false;
    for b in b"NOOP and more and more and more".iter() {
        if smtp.stream.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let line = smtp.expect(421);
    assert!(line.contains("4.4.2"), "{line}");
    assert!(cut || start.elapsed() < Duration::from_secs(12));
}

#[test]
fn slowloris_data_is_cut_at_the_total_data_timeout_and_nothing_queued() {
    let spate = with_config("[server]\ndata_timeout_secs = 10\ndata_total_timeout_secs = 2\n");
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        if smtp.stream.write_all(b"x").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    smtp.expect(421);
    assert!(read_spool(&spate.spool_dir()).is_empty());
}

#[test]
fn a_recipient_flood_ends_at_the_error_limit() {
    let spate = with_config(
        "[server]\nmax_recipients = 5\nmax_errors = 20\nmax_recipient_overshoot = 30\n",
    );
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    let mut flood = Vec::new();
    for i in 0..10_000 {
        flood.extend_from_slice(format!("RCPT TO:<r{i}@b.test>\r\n").as_bytes());
    }
    let _ = smtp.stream.write_all(&flood);
    let mut codes = Vec::new();
    loop {
        let (code, _) = smtp.reply();
        codes.push(code);
        if code == 421 {
            break;
        }
        assert!(
            codes.len() < 100,
            "no disconnect after {} replies",
            codes.len()
        );
    }
    assert_eq!(codes.iter().filter(|&&c| c == 250).count(), 5);
    // 30 extra recipients are allowed for; past them each 452 is an error.
    assert_eq!(codes.iter().filter(|&&c| c == 452).count(), 30 + 20);
}

/// Regression (RFC 5321 4.5.3.1.10): a client that pipelines more RCPTs
/// than `max_recipients` gets 452 for the extra ones and keeps its
/// transaction; it used to get 421 at the error limit and lose it all.
#[test]
fn pipelined_recipients_past_the_limit_keep_the_transaction() {
    let spate = with_config("[server]\nmax_recipients = 5\nmax_errors = 20\n");
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    let mut batch = b"MAIL FROM:<s@a.test>\r\n".to_vec();
    for i in 0..30 {
        batch.extend_from_slice(format!("RCPT TO:<r{i}@b.test>\r\n").as_bytes());
    }
    batch.extend_from_slice(b"DATA\r\n");
    smtp.raw(&batch);
    smtp.expect(250);
    for _ in 0..5 {
        smtp.expect(250);
    }
    for _ in 0..25 {
        let line = smtp.expect(452);
        assert!(line.contains("4.5.3"), "{line}");
    }
    smtp.expect(354);
    smtp.raw(b"Subject: x\r\n\r\nbody\r\n.\r\n").expect(250);
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].recipients.len(), 5);
}

/// RELIABILITY 13: a huge header, or thousands of folded lines.
#[test]
fn a_header_section_over_the_limit_gets_552_and_nothing_is_queued() {
    let spate = with_config("[server]\nmax_header_bytes = 65536\n");
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    let mut folded = b"Subject: folded\r\nX-Long: start\r\n".to_vec();
    for i in 0..5000 {
        folded
            .extend_from_slice(format!("\tcontinuation line {i:05} of one header\r\n").as_bytes());
    }
    folded.extend_from_slice(b"\r\nbody\r\n");
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    smtp.raw(&folded);
    let line = smtp.raw(b".\r\n").expect(552);
    assert!(line.contains("header"), "{line}");
    assert!(read_spool(&spate.spool_dir()).is_empty());
    // The session is in step, and a body of the same size is fine.
    let mut big_body = b"Subject: big body\r\n\r\n".to_vec();
    for i in 0..5000 {
        big_body.extend_from_slice(format!("body line {i:05} of a long message\r\n").as_bytes());
    }
    let ok = smtp.transaction("s@a.test", &["r@b.test"], &big_body);
    assert!(ok.contains("queued as"), "{ok}");
    assert_eq!(read_spool(&spate.spool_dir()).len(), 1);
}

/// RELIABILITY 16: the client's connection is reset in the middle of DATA.
#[test]
fn a_reset_in_the_middle_of_data_queues_nothing_even_after_restart() {
    let mut spate = Spate::start(&[]);
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    smtp.raw(b"Subject: cut short\r\n\r\nhalf of the body\r\n");
    // SO_LINGER 0: close sends RST, not FIN.
    socket2::SockRef::from(&smtp.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(smtp);
    // Another session on the same engine is unaffected.
    let ok = spate
        .connect()
        .transaction("s@a.test", &["r@b.test"], b"Subject: whole\r\n\r\nx\r\n");
    assert!(ok.contains("queued as"), "{ok}");
    assert_eq!(spate.stop(), 0);
    spate.launch();
    assert_eq!(spate.stop(), 0);
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored.len(), 1, "only the whole message");
    assert!(stored[0].client_body().starts_with(b"Subject: whole"));
    let (ok, dump) = spate_cmd(&["spool", "dump", spate.spool_dir().to_str().unwrap()]);
    assert!(ok);
    assert!(!dump.contains("cut short"));
}

/// RELIABILITY 5, the other half: a text line of exactly 1000 octets
/// (CRLF included) is accepted and kept byte-exact.
#[test]
fn a_text_line_of_1000_octets_is_accepted_whole() {
    let spate = Spate::start(&[]);
    let line = "y".repeat(998);
    let body = format!("Subject: edge\r\n\r\n{line}\r\n");
    let ok = spate
        .connect()
        .transaction("s@a.test", &["r@b.test"], body.as_bytes());
    assert!(ok.contains("queued as"), "{ok}");
    assert_eq!(
        read_spool(&spate.spool_dir())[0].client_body(),
        body.as_bytes()
    );
}

/// RELIABILITY 8: shell metacharacters and odd quoted local parts are
/// opaque data from end to end; nothing runs them.
#[test]
fn shell_metacharacters_in_addresses_are_only_data() {
    let canary = std::env::temp_dir().join(format!("spate-canary-{}", std::process::id()));
    let _ = std::fs::remove_file(&canary);
    let sink = Sink::start(&free_addr(), &[]);
    let mut spate = Spate::start(&["--smarthost", &sink.addr]);
    let odd = [
        format!("\"$(touch {})\"@b.test", canary.display()),
        format!("`touch {}`@b.test", canary.display()),
        "a|b;c&d>e@b.test".to_string(),
        "\"quoted local part\"@b.test".to_string(),
        "$HOME@b.test".to_string(),
    ];
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s`ls`$HOME|x&y@a.test>").expect(250);
    let mut accepted = Vec::new();
    for rcpt in &odd {
        let (code, lines) = smtp.send(&format!("RCPT TO:<{rcpt}>")).reply();
        assert!(matches!(code, 250 | 501 | 553), "{rcpt}: {lines:?}");
        if code == 250 {
            accepted.push(rcpt.clone());
        }
    }
    assert!(accepted.len() >= 3, "most forms are accepted: {accepted:?}");
    smtp.send("DATA").expect(354);
    smtp.raw(b"Subject: odd\r\n\r\nx\r\n.\r\n").expect(250);
    wait_until(Duration::from_secs(30), "delivery", || sink.count() == 1);
    let got = &sink.messages()[0];
    for rcpt in &accepted {
        assert!(got.contains(rcpt.as_str()), "{rcpt} arrives as sent: {got}");
    }
    assert!(!canary.exists(), "something ran an address");
    assert_eq!(spate.stop(), 0);
}

/// RELIABILITY 9: RFC 5321's limits on local parts and paths.
#[test]
fn local_part_over_64_and_path_over_256_octets_get_501() {
    let spate = Spate::start(&[]);
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send(&format!("MAIL FROM:<{}@a.test>", "s".repeat(65)))
        .expect(501);
    smtp.send(&format!("MAIL FROM:<{}@a.test>", "s".repeat(64)))
        .expect(250);
    let long_domain = format!("{}.test", vec!["d".repeat(60); 5].join("."));
    let line = smtp.send(&format!("RCPT TO:<r@{long_domain}>")).expect(501);
    assert!(line.contains("256"), "{line}");
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    smtp.raw(b"Subject: limits\r\n\r\nx\r\n.\r\n").expect(250);
    assert_eq!(read_spool(&spate.spool_dir())[0].recipients, ["r@b.test"]);
}

/// Resident memory of a running spate, in KiB.
fn rss_kib(spate: &Spate) -> u64 {
    let pid = spate.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// "Memory stays bounded": 64 MiB of one endless command line, then 64 MiB
/// of DATA over a 1 MB size limit, grow spate by a few MiB at most.
#[test]
fn floods_of_bytes_leave_memory_bounded() {
    let spate = Spate::start(&["--max-message-size", "1000000", "--cores", "1"]);
    let before = rss_kib(&spate);
    let chunk = vec![b'A'; 1 << 20];
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    for _ in 0..64 {
        if smtp.stream.write_all(&chunk).is_err() {
            break; // spate may hang up on an endless line
        }
    }
    drop(smtp);
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    let line = [vec![b'b'; 998], b"\r\n".to_vec()].concat();
    let block: Vec<u8> = line.repeat(1024);
    for _ in 0..64 {
        smtp.raw(&block);
    }
    smtp.raw(b".\r\n").expect(552);
    let grown = rss_kib(&spate).saturating_sub(before);
    eprintln!("spate grew by {grown} KiB (from {before} KiB)");
    assert!(grown < 16 * 1024, "spate grew by {grown} KiB");
    assert!(read_spool(&spate.spool_dir()).is_empty());
}
