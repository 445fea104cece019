//! Regression tests for the defects of issue 10, each against the real
//! binary the way a misconfigured peer or a hostile client met it: mail
//! loops, memory one client can pin, DSN lines over 998 octets, replies
//! misread as permanent (552 to RCPT, SMTPUTF8 without need).

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Writes `toml` to a config file of its own; returns its path.
fn config(toml: &str) -> String {
    let path = tempfile::tempdir().unwrap().keep().join("extra.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_string()
}

/// Starts a spate with `toml` as its config file and `extra` flags.
fn with_config(extra: &[&str], toml: &str) -> Spate {
    let cfg = config(toml);
    let mut args = extra.to_vec();
    args.extend(["--config", &cfg]);
    Spate::start(&args)
}

fn received_fields(n: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..n {
        body.extend_from_slice(format!("Received: from hop{i}.test\r\n\tby hop{i}.test; Fri, 4 Dec 2026 10:00:00 +0000\r\n").as_bytes());
    }
    body.extend_from_slice(b"Subject: loop\r\n\r\nbody\r\n");
    body
}

#[test]
fn a_message_with_100_received_fields_is_refused_as_a_loop() {
    let mut spate = Spate::start(&["--smarthost", "127.0.0.1:9"]);
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    let mut body = received_fields(100);
    body.extend_from_slice(b".\r\n");
    let line = smtp.raw(&body).expect(554);
    assert!(line.contains("5.4.6"), "{line}");
    // 99 hops are not yet a loop, and the session is still in step.
    let id = smtp.transaction("s@a.test", &["r@b.test"], &received_fields(99));
    assert!(id.contains("queued as"), "{id}");
    spate.wait_for_log("as a mail loop: 100 Received header fields", LONG);
    assert_eq!(spate.stop(), 0);
    assert_eq!(read_spool(&spate.spool_dir()).len(), 1);
}

#[test]
fn a_route_to_spate_itself_is_never_taken() {
    let own = free_addr();
    let cfg = config(&format!(
        "[delivery]\nretry_initial_secs = 1\nretry_max_secs = 1\n[delivery.routes]\n\"loop.test\" = \"{own}\"\n"
    ));
    let mut looped = Spate::start_on(&own, &["--config", &cfg, "--cores", "1"]);
    looped
        .connect()
        .transaction("s@a.test", &["r@loop.test"], b"Subject: loop\r\n\r\nx\r\n");
    // Two attempts, each refused before connecting.
    wait_until(LONG, "two deferrals", || {
        log_of(&looped.log_dir(), "TransientFailure").len() >= 2
    });
    let deferred = &log_of(&looped.log_dir(), "TransientFailure")[0];
    let why = deferred["response"].as_str().unwrap();
    assert!(
        why.contains("mail for loop.test loops back to myself"),
        "{deferred}"
    );
    assert_eq!(
        log_of(&looped.log_dir(), "Reception").len(),
        1,
        "the message came back in"
    );
    assert_eq!(looped.stop(), 0);
}

/// Two spates that route a domain to each other: the message goes round
/// until it carries 100 Received fields, then the next spate refuses it as
/// a loop and the one before bounces it for that reason (not for its size).
#[test]
fn two_spates_routing_to_each_other_stop_the_loop_at_100_hops() {
    let (a, b) = (free_addr(), free_addr());
    let route_to = |to: &str| config(&format!("[delivery.routes]\n\"loop.test\" = \"{to}\"\n"));
    let (cfg_a, cfg_b) = (route_to(&b), route_to(&a));
    let mut spate_a = Spate::start_on(&a, &["--config", &cfg_a]);
    let mut spate_b = Spate::start_on(&b, &["--config", &cfg_b]);
    spate_a
        .connect()
        .transaction("s@a.test", &["r@loop.test"], b"Subject: round\r\n\r\nx\r\n");
    let bounces = || {
        let mut all = log_of(&spate_a.log_dir(), "Bounce");
        all.extend(log_of(&spate_b.log_dir(), "Bounce"));
        all
    };
    wait_until(LONG, "the loop's bounce", || !bounces().is_empty());
    let bounce = &bounces()[0];
    assert!(
        bounce["response"]
            .as_str()
            .unwrap()
            .starts_with("554 5.4.6"),
        "{bounce}"
    );
    // Counted once both have stopped: each core writes its own log, and
    // a stopped spate has written all of it.
    assert_eq!(spate_a.stop(), 0);
    assert_eq!(spate_b.stop(), 0);
    let receptions = log_of(&spate_a.log_dir(), "Reception").len()
        + log_of(&spate_b.log_dir(), "Reception").len();
    // One Received field per hop: the 101st hop is refused. (A retried
    // hop could add a duplicate, never an endless loop.)
    assert!((100..=102).contains(&receptions), "{receptions} receptions");
}

/// An MX that resolves to spate's own listening address bounces the mail
/// (RFC 5321 5.1) with a DSN, and one in `deny_networks` is not connected
/// to: the mail waits.
#[test]
fn an_mx_that_is_spate_itself_bounces_and_a_denied_mx_is_never_tried() {
    let own = free_addr();
    let (ip, port) = own.rsplit_once(':').unwrap();
    let sink = Sink::start(&free_addr(), &[]);
    let zone = format!(
        "  local-zone: \"test.\" static\n  local-data: \"self.test. 300 IN MX 10 mx.self.test.\"\n  local-data: \"mx.self.test. 300 IN A {ip}\"\n  local-data: \"inside.test. 300 IN MX 10 mx.inside.test.\"\n  local-data: \"mx.inside.test. 300 IN A 10.1.2.3\"\n"
    );
    let dns = Unbound::start(&zone);
    // The bounce notice goes to the sender's domain, routed to the sink.
    let cfg = config(&format!(
        "[delivery]\nmx_port = {port}\ndeny_networks = [\"10.0.0.0/8\"]\nretry_initial_secs = 1\nretry_max_secs = 1\n[delivery.routes]\n\"sender.test\" = \"{}\"\n",
        sink.addr
    ));
    let mut s = Spate::start_on(&own, &["--dns", &dns.addr, "--config", &cfg]);
    let mut smtp = s.connect();
    smtp.transaction(
        "s@sender.test",
        &["r@self.test"],
        b"Subject: self\r\n\r\nx\r\n",
    );
    smtp.transaction(
        "s@sender.test",
        &["r@inside.test"],
        b"Subject: inside\r\n\r\nx\r\n",
    );
    wait_until(LONG, "the bounce", || {
        !log_of(&s.log_dir(), "Bounce").is_empty()
    });
    let bounce = &log_of(&s.log_dir(), "Bounce")[0];
    let why = bounce["response"].as_str().unwrap();
    assert!(
        why.starts_with("554 5.4.6 mail for self.test loops back to myself"),
        "{bounce}"
    );
    wait_until(LONG, "the bounce notice", || sink.count() == 1);
    assert!(sink.messages()[0].contains("loops back to myself"));
    wait_until(LONG, "deferrals of inside.test", || {
        log_of(&s.log_dir(), "TransientFailure")
            .iter()
            .filter(|r| r["domain"] == "inside.test")
            .count()
            >= 2
    });
    let deferred = log_of(&s.log_dir(), "TransientFailure")
        .into_iter()
        .find(|r| r["domain"] == "inside.test")
        .unwrap();
    assert!(
        deferred["response"]
            .as_str()
            .unwrap()
            .contains("deny_networks"),
        "{deferred}"
    );
    assert!(log_of(&s.log_dir(), "Delivery")
        .iter()
        .all(|r| r["domain"] != "inside.test"));
    assert_eq!(s.stop(), 0);
}

/// Reads /proc/<pid>/status's `key` in kB.
fn status_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 30 sessions each send 24 MiB of DATA and wait before the final dot.
/// With a 64 MiB budget, spate's resident memory stays under the budget
/// plus a fixed overhead, a normal client is served meanwhile, and the
/// sessions past the budget get 452 4.3.1 at their dot.
#[test]
fn a_flood_of_large_unfinished_data_stays_within_the_memory_budget() {
    const SESSIONS: usize = 30;
    const BODY: usize = 24 << 20;
    const BUDGET: u64 = 64 << 20;
    let mut spate = with_config(
        &["--cores", "1", "--smarthost", "127.0.0.1:9"],
        &format!(
            "[server]\nmax_message_bytes = {}\nmax_data_bytes_in_flight_per_core = {BUDGET}\n",
            32 << 20
        ),
    );
    let pid = spate.child.as_ref().unwrap().id();
    let before_kb = status_kb(pid, "VmRSS:");
    let line = {
        let mut l = vec![b'x'; 998];
        l.extend_from_slice(b"\r\n");
        l
    };
    let writers: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let mut smtp = spate.connect();
            let line = line.clone();
            std::thread::spawn(move || {
                smtp.send("EHLO flood.test").expect(250);
                smtp.send("MAIL FROM:<s@a.test>").expect(250);
                smtp.send("RCPT TO:<r@b.test>").expect(250);
                smtp.send("DATA").expect(354);
                smtp.stream.write_all(b"Subject: big\r\n\r\n").unwrap();
                let mut chunk = Vec::with_capacity(1 << 20);
                while chunk.len() + line.len() <= 1 << 20 {
                    chunk.extend_from_slice(&line);
                }
                let mut sent = 0;
                while sent < BODY {
                    smtp.stream.write_all(&chunk).unwrap();
                    sent += chunk.len();
                }
                smtp
            })
        })
        .collect();
    let mut held: Vec<Smtp> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    // Every byte is written; while the sessions wait, a normal client on
    // another connection still gets its message taken.
    let (ok, out) = run(
        "swaks",
        &[
            "--server",
            &spate.addr,
            "--from",
            "s@a.test",
            "--to",
            "r@b.test",
            "--body",
            "small",
            "--timeout",
            "60",
        ],
    );
    assert!(ok && out.contains("queued as"), "swaks: {out}");
    let mut codes = Vec::new();
    for smtp in &mut held {
        smtp.raw(b".\r\n");
        codes.push(smtp.reply());
    }
    let peak_kb = status_kb(pid, "VmHWM:");
    let accepted = codes.iter().filter(|(c, _)| *c == 250).count();
    let refused = codes
        .iter()
        .filter(|(c, l)| *c == 452 && l[0].contains("4.3.1"))
        .count();
    assert_eq!(accepted + refused, SESSIONS, "{codes:?}");
    // The last session to hold memory is never refused; two of 24 MiB
    // (buffers grow by doubling, to 32 MiB) never fit in 64 MiB.
    assert!(
        (1..=2).contains(&accepted),
        "{accepted} fit in the budget: {codes:?}"
    );
    // Without the budget this was 30 x 24 MiB = 720 MiB.
    let overhead_kb = 64 << 10;
    assert!(
        peak_kb < before_kb + (BUDGET >> 10) + overhead_kb,
        "peak resident {peak_kb} kB, at start {before_kb} kB"
    );
    drop(held);
    assert_eq!(spate.stop(), 0);
}

/// A 64-octet local part at a long domain (252 octets in all), refused
/// with a long multi-word reply: every line of the DSN is at most 998
/// octets, so a strict receiver (a second spate) takes it.
#[test]
fn a_dsn_for_a_long_address_and_reply_has_no_line_over_998_octets() {
    let receiver = Spate::start(&[]);
    let reply = format!("550 5.1.1 {}", "no such user here ".repeat(50));
    let refusing = Sink::start(&free_addr(), &["-f", "RCPT", "-B", &reply]);
    let mut spate = with_config(
        &["--smarthost", &refusing.addr],
        &format!(
            "[delivery.routes]\n\"sender.test\" = \"{}\"\n",
            receiver.addr
        ),
    );
    let local = "l".repeat(64);
    // Labels of at most 63 octets (RFC 1035).
    let domain = format!(
        "{}.{}.{}.test",
        "a".repeat(61),
        "b".repeat(61),
        "c".repeat(58)
    );
    let rcpt = format!("{local}@{domain}");
    assert_eq!(rcpt.len(), 252);
    spate
        .connect()
        .transaction("s@sender.test", &[&rcpt], b"Subject: long\r\n\r\nx\r\n");
    wait_until(LONG, "the DSN at the receiver", || {
        !log_of(&receiver.log_dir(), "Reception").is_empty()
    });
    let dsn = read_spool(&receiver.spool_dir());
    let body = dsn[0].client_body();
    let longest = body.split(|&b| b == b'\n').map(|l| l.len()).max().unwrap();
    assert!(longest <= 999, "a line of {longest} octets with CR");
    let text = String::from_utf8_lossy(body);
    assert!(
        text.contains(&format!("Final-Recipient: rfc822; {rcpt}")),
        "{text}"
    );
    assert!(text.contains("no such user here"), "{text}");
    assert_eq!(spate.stop(), 0);
}

/// A bounce notice that bounces itself cannot be reported to anyone: it
/// gets a DoubleBounce record of its own.
#[test]
fn a_bounce_notice_that_bounces_is_logged_as_a_double_bounce() {
    let refusing = Sink::start(&free_addr(), &["-f", "RCPT"]);
    let mut spate = Spate::start(&["--smarthost", &refusing.addr]);
    spate
        .connect()
        .transaction("", &["r@b.test"], b"Subject: notice\r\n\r\nx\r\n");
    wait_until(LONG, "the double bounce", || {
        !log_of(&spate.log_dir(), "DoubleBounce").is_empty()
    });
    let record = &log_of(&spate.log_dir(), "DoubleBounce")[0];
    assert_eq!(record["recipient"], "r@b.test");
    assert!(
        record["response"]
            .as_str()
            .unwrap()
            .contains("null sender: 500"),
        "{record}"
    );
    assert_eq!(log_of(&spate.log_dir(), "Bounce").len(), 1);
    assert_eq!(spate.stop(), 0);
}

#[test]
fn a_552_to_rcpt_defers_instead_of_bouncing() {
    let refusing = Sink::start(
        &free_addr(),
        &["-f", "RCPT", "-B", "552 5.5.3 Too many recipients"],
    );
    let mut spate = Spate::start(&["--smarthost", &refusing.addr]);
    spate
        .connect()
        .transaction("s@a.test", &["r@b.test"], b"Subject: 552\r\n\r\nx\r\n");
    let deferred = {
        wait_until(LONG, "a deferral", || {
            !log_of(&spate.log_dir(), "TransientFailure").is_empty()
        });
        log_of(&spate.log_dir(), "TransientFailure").swap_remove(0)
    };
    assert!(
        deferred["response"]
            .as_str()
            .unwrap()
            .starts_with("552 5.5.3"),
        "{deferred}"
    );
    assert!(log_of(&spate.log_dir(), "Bounce").is_empty());
    assert_eq!(spate.stop(), 0);
}

/// A destination that takes two recipients per transaction and answers 552
/// to the rest: every recipient arrives, in as many transactions as needed.
#[test]
fn recipients_refused_with_552_go_in_the_next_transaction() {
    let mx = ScriptedMx::start(|taken| {
        if taken < 2 {
            b"250 2.1.5 ok\r\n"
        } else {
            b"552 5.5.3 Too many recipients\r\n"
        }
    });
    let mut spate = Spate::start(&["--smarthost", &mx.addr]);
    let to: Vec<String> = (0..5).map(|i| format!("r{i}@b.test")).collect();
    let to: Vec<&str> = to.iter().map(|s| s.as_str()).collect();
    spate
        .connect()
        .transaction("s@a.test", &to, b"Subject: five\r\n\r\nx\r\n");
    wait_until(LONG, "five deliveries", || {
        log_of(&spate.log_dir(), "Delivery").len() == 5
    });
    assert!(log_of(&spate.log_dir(), "Bounce").is_empty());
    let mut got = mx.recipients.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, to);
    assert_eq!(spate.stop(), 0);
}

/// Sent with SMTPUTF8 but all ASCII: delivered to a server without
/// SMTPUTF8 (smtp-sink offers none), without the parameter. With UTF-8 in
/// its header it bounces there.
#[test]
fn smtputf8_is_needed_only_for_utf8_content() {
    let sink = Sink::start(&free_addr(), &[]);
    let mut spate = Spate::start(&["--smarthost", &sink.addr]);
    let mut smtp = spate.connect();
    for subject in ["plain ascii", "gr\u{fc}\u{df}e"] {
        smtp.send("EHLO c.test").expect(250);
        // The null sender: the bounce makes no notice to the sink.
        smtp.send("MAIL FROM:<> SMTPUTF8").expect(250);
        smtp.send("RCPT TO:<r@b.test>").expect(250);
        smtp.send("DATA").expect(354);
        smtp.raw(format!("Subject: {subject}\r\n\r\nx\r\n.\r\n").as_bytes())
            .expect(250);
    }
    wait_until(LONG, "one delivery and one bounce", || {
        log_of(&spate.log_dir(), "Delivery").len() == 1
            && log_of(&spate.log_dir(), "Bounce").len() == 1
    });
    let bounce = &log_of(&spate.log_dir(), "Bounce")[0];
    assert!(
        bounce["response"]
            .as_str()
            .unwrap()
            .starts_with("553 5.6.7"),
        "{bounce}"
    );
    wait_until(LONG, "the sink's copy", || sink.count() == 1);
    assert!(sink.messages()[0].contains("Subject: plain ascii"));
    assert_eq!(spate.stop(), 0);
}

/// RFC 5321 4.5.1: `RCPT TO:<Postmaster>` without a domain is accepted,
/// and the mail goes to `server.postmaster` (postmaster@ the host name by
/// default).
#[test]
fn postmaster_without_a_domain_is_accepted() {
    let mut spate = Spate::start(&["--smarthost", "127.0.0.1:9"]);
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<Postmaster>").expect(250);
    smtp.send("DATA").expect(354);
    smtp.raw(b"Subject: hello postmaster\r\n\r\nx\r\n.\r\n")
        .expect(250);
    assert_eq!(spate.stop(), 0);
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored[0].recipients, ["postmaster@spate.test"]);
}

/// A reply in several lines whose codes disagree is out of step: the
/// recipient is deferred as a protocol error, never decided by one line.
#[test]
fn a_reply_whose_lines_carry_different_codes_defers() {
    let mx = ScriptedMx::start(|_| b"250-accepted, or\r\n550 5.1.1 not?\r\n");
    let mut spate = Spate::start(&["--smarthost", &mx.addr]);
    spate
        .connect()
        .transaction("s@a.test", &["r@b.test"], b"Subject: mixed\r\n\r\nx\r\n");
    wait_until(LONG, "a deferral", || {
        !log_of(&spate.log_dir(), "TransientFailure").is_empty()
    });
    let deferred = &log_of(&spate.log_dir(), "TransientFailure")[0];
    assert!(
        deferred["response"]
            .as_str()
            .unwrap()
            .contains("reply lines carry different codes"),
        "{deferred}"
    );
    assert!(log_of(&spate.log_dir(), "Bounce").is_empty());
    assert!(log_of(&spate.log_dir(), "Delivery").is_empty());
    assert_eq!(spate.stop(), 0);
}

/// The reply a [`ScriptedMx`] gives to a RCPT, given how many recipients
/// it has taken in the transaction; one starting with 250 takes it.
type RcptReply = fn(usize) -> &'static [u8];

/// A scripted destination for replies no real server can be told to give:
/// PIPELINING, RCPT answered by a function, records whom it accepted mail
/// for.
struct ScriptedMx {
    addr: String,
    recipients: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ScriptedMx {
    fn start(rcpt: RcptReply) -> ScriptedMx {
        let listener = std::net::TcpListener::bind(free_addr()).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let recipients = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let got = recipients.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let got = got.clone();
                std::thread::spawn(move || scripted_session(stream, rcpt, &got));
            }
        });
        ScriptedMx { addr, recipients }
    }
}

fn scripted_session(stream: TcpStream, rcpt: RcptReply, got: &std::sync::Mutex<Vec<String>>) {
    use std::io::BufRead;
    let mut w = stream.try_clone().unwrap();
    let mut r = std::io::BufReader::new(stream);
    let _ = w.write_all(b"220 scripted.mx ESMTP\r\n");
    let (mut line, mut taken, mut in_data) = (String::new(), Vec::new(), false);
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        let cmd = line.trim_end().to_string();
        line.clear();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if in_data {
            if cmd != "." {
                continue;
            }
            in_data = false;
            got.lock().unwrap().append(&mut taken);
            b"250 2.0.0 queued\r\n"
        } else if upper.starts_with("EHLO") {
            b"250-scripted.mx\r\n250 PIPELINING\r\n"
        } else if upper.starts_with("RCPT TO:<") {
            let reply = rcpt(taken.len());
            if reply.starts_with(b"250 ") {
                taken.push(cmd[9..cmd.len() - 1].to_string());
            }
            reply
        } else if upper == "DATA" {
            in_data = true;
            b"354 go\r\n"
        } else if upper == "QUIT" {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            taken.clear();
            b"250 ok\r\n"
        };
        if w.write_all(reply).is_err() {
            return;
        }
    }
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
}
