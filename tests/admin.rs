//! The admin server and `spate ctl` against the binary, judged at real
//! sinks (Postfix's smtp-sink, the counting sink) and in the delivery log:
//! suspend stops delivery and resume restarts it; no token (or a wrong
//! one) changes nothing; bounce sends DSNs; reroute changes the
//! destination and the source; an override changes a rate and expires;
//! `/metrics` parses with Prometheus's own parser and matches the log;
//! events stream live; a trace finds a message; reload takes new rules.

mod common;
use common::counting::*;
use common::*;
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn ctl_json(spate: &Spate, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out) = spate.ctl(&all);
    assert!(ok, "spate ctl {args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn queue(spate: &Spate, domain: &str) -> Option<Value> {
    let (ok, out) = spate.ctl(&["--json", "queue", domain]);
    ok.then(|| serde_json::from_str(&out).unwrap())
}

fn agent() -> ureq::Agent {
    http_agent(LONG)
}

/// A POST to the admin API; its status and JSON.
fn post(spate: &Spate, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    http_post(&format!("{}{path}", spate.admin_url()), token, body, LONG)
}

fn send_as(spate: &Spate, from: &str, to: &str, count: usize) {
    let mut smtp = spate.connect();
    for i in 0..count {
        smtp.transaction(from, &[to], format!("Subject: {i}\r\n\r\nx\r\n").as_bytes());
    }
}

/// A suspension through `spate ctl` holds a destination's mail (the sink
/// gets only the other domain's) while a request without a valid token
/// changes nothing; resume lets the held mail go. Both are logged with
/// the token's name and the reason.
#[test]
fn suspend_stops_delivery_and_resume_restarts_it_and_no_token_changes_nothing() {
    let sink = Sink::start(&free_addr(), &[]);
    let spate = Spate::start(&["--smarthost", &sink.addr, "--cores", "0-1"]);
    let s = ctl_json(
        &spate,
        &[
            "suspend",
            "--domain",
            "held.test",
            "--for",
            "1h",
            "--reason",
            "peak day",
        ],
    );
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["kind"], "suspend");
    send(&spate, "r@held.test", 3);
    send(&spate, "r@free.test", 1);
    wait_until(LONG, "free.test delivered", || sink.count() == 1);
    wait_until(LONG, "held.test's 3 held", || {
        queue(&spate, "held.test").is_some_and(|q| q["suspended"] == 3 && q["ready"] == 0)
    });
    // No token, a wrong one: 401, and the suspension stays.
    let body = r#"{"reason": "x"}"#;
    for token in [None, Some("not-the-token-0123456789")] {
        let (status, v) = post(
            &spate,
            "/api/v1/suspend",
            token,
            r#"{"domain": "free.test", "duration_s": 60}"#,
        );
        assert_eq!(status, 401, "{v}");
        let mut req = agent()
            .delete(format!("{}/api/v1/suspend/{id}", spate.admin_url()))
            .force_send_body();
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        assert_eq!(req.send(body).unwrap().status().as_u16(), 401);
    }
    let actions = ctl_json(&spate, &["actions"]);
    assert_eq!(actions["actions"].as_array().unwrap().len(), 1, "{actions}");
    assert!(queue(&spate, "held.test").is_some_and(|q| q["suspended"] == 3));
    let (ok, table) = spate.ctl(&["queues"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("held.test"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        ok && row.split_whitespace().nth(4) == Some("3"),
        "the SUSPENDED column: {table}"
    );
    let held = queue(&spate, "held.test").unwrap();
    let listed = ctl_json(&spate, &["queues"])["queues"][0].clone();
    assert_eq!(listed["domain"], "held.test");
    assert!(
        listed["oldest_age_s"].as_f64() > Some(0.0) && held["oldest_age_s"].as_f64() > Some(0.0),
        "{listed} {held}"
    );
    let summary = ctl_json(&spate, &["summary"]);
    assert_eq!(
        (summary["suspended"].as_u64(), summary["delivered"].as_u64()),
        (Some(3), Some(1)),
        "{summary}"
    );
    assert_eq!(sink.count(), 1);
    let (ok, out) = spate.ctl(&["resume", &id, "--reason", "over"]);
    assert!(ok && out.contains("ended"), "{out}");
    wait_until(LONG, "held mail delivered", || sink.count() == 4);
    let log = spate.dir.path().join("log");
    wait_until(LONG, "two Admin records", || {
        log_of(&log, "Admin").len() == 2
    });
    let mut admin = log_of(&log, "Admin");
    admin.sort_by_key(|r| r["time_ms"].as_u64());
    assert_eq!(admin[0]["by"], "admin");
    assert_eq!(admin[0]["reason"], "peak day");
    assert!(admin[0]["response"]
        .as_str()
        .unwrap()
        .contains("suspend domain held.test"));
    assert_eq!(admin[1]["reason"], "over");
}

/// Bouncing a destination's queue sends each sender a DSN (through the
/// smarthost, to smtp-sink) and leaves nothing queued.
#[test]
fn bounce_sends_dsns_to_the_senders() {
    let sink = Sink::start(&free_addr(), &[]);
    let spate = Spate::start(&[
        "--smarthost",
        &sink.addr,
        "--route",
        "dead.test=127.0.0.1:9",
    ]);
    send_as(&spate, "s@back.test", "x@dead.test", 2);
    wait_until(LONG, "both deferred", || {
        queue(&spate, "dead.test").is_some_and(|q| q["waiting"] == 2)
    });
    let (ok, out) = spate.ctl(&["bounce", "--domain", "dead.test", "--reason", "cleanup"]);
    assert!(ok && out.contains("2 recipients bounced"), "{out}");
    wait_until(LONG, "two DSNs at the sink", || sink.count() == 2);
    for m in sink.messages() {
        assert!(
            m.contains("Bounced by the operator (admin): cleanup"),
            "{m}"
        );
        assert!(m.contains("x@dead.test"), "{m}");
    }
    let q = queue(&spate, "dead.test").unwrap();
    assert_eq!(
        (q["ready"].as_u64(), q["waiting"].as_u64()),
        (Some(0), Some(0)),
        "{q}"
    );
}

/// A reroute to another pool changes the source address the next message
/// comes from; a reroute to a next hop changes where it goes.
#[test]
fn reroute_changes_the_source_and_the_destination() {
    let (mx1, mx2) = (
        CountingMx::start(Duration::ZERO),
        CountingMx::start(Duration::ZERO),
    );
    let rules = file(
        "s.toml",
        "[default]\npool = \"a\"\n\n[source.s1]\naddress = \"127.0.0.201\"\n[source.s3]\naddress = \"127.0.0.203\"\n\n[pool.a]\nsources = { s1 = 1 }\n[pool.b]\nsources = { s3 = 1 }\n",
    );
    let spate = Spate::start(&["--smarthost", &mx1.addr, "--shaping", &rules]);
    let from = |mx: &CountingMx, ip: &str| {
        mx.seen
            .lock()
            .unwrap()
            .per_source
            .get(&ip.parse().unwrap())
            .copied()
            .unwrap_or(0)
    };
    send(&spate, "r@d.test", 1);
    wait_until(LONG, "the first from s1", || from(&mx1, "127.0.0.201") == 1);
    let (ok, out) = spate.ctl(&[
        "reroute", "--domain", "d.test", "--pool", "b", "--for", "1h",
    ]);
    assert!(ok, "{out}");
    send(&spate, "r@d.test", 1);
    wait_until(LONG, "the second from s3", || {
        from(&mx1, "127.0.0.203") == 1
    });
    let (ok, out) = spate.ctl(&[
        "reroute",
        "--domain",
        "d.test",
        "--next-hop",
        &mx2.addr,
        "--for",
        "1h",
    ]);
    assert!(ok, "{out}");
    send(&spate, "r@d.test", 1);
    wait_until(LONG, "the third at the other host", || mx2.delivered() == 1);
    assert_eq!(mx1.delivered(), 2);
    assert_eq!(from(&mx2, "127.0.0.203"), 1, "the pool reroute still holds");
    let (ok, out) = spate.ctl(&[
        "reroute", "--domain", "d.test", "--pool", "nope", "--for", "1h",
    ]);
    assert!(!ok && out.contains("no pool \"nope\""), "{out}");
    // Ending the next-hop reroute sends the next message to the smarthost.
    let hop = ctl_json(&spate, &["actions"])["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["next_hop"].is_string())
        .map(|a| a["id"].as_str().unwrap().to_string())
        .unwrap();
    let (ok, out) = spate.ctl(&["end", &hop]);
    assert!(ok && out.contains("ended"), "{out}");
    send(&spate, "r@d.test", 1);
    wait_until(LONG, "the fourth at the smarthost again", || {
        mx1.delivered() == 3
    });
    assert_eq!(mx2.delivered(), 1);
}

/// An override of a destination's rate holds its mail back (one message
/// of 1/h goes) until the override ends by itself; then the rest go.
#[test]
fn an_override_changes_a_rate_and_expires() {
    let sink = Sink::start(&free_addr(), &[]);
    let spate = Spate::start(&["--smarthost", &sink.addr]);
    let o = ctl_json(
        &spate,
        &[
            "override",
            "--domain",
            "slow.test",
            "--set",
            "message_rate=1/h",
            "--for",
            "5s",
            "--reason",
            "cool down",
        ],
    );
    assert_eq!(
        o["set"]["message_rate"]
            .as_str()
            .map(|r| r.starts_with("1/")),
        Some(true),
        "{o}"
    );
    send(&spate, "r@slow.test", 3);
    wait_until(LONG, "one through", || sink.count() == 1);
    let q = queue(&spate, "slow.test").unwrap();
    assert!(
        q["limits"]["rule"].as_str().unwrap().contains("+ override"),
        "{q}"
    );
    assert_eq!(q["actions"], serde_json::json!([o["id"]]));
    wait_until(LONG, "the rest once it expired", || sink.count() == 3);
    let actions = ctl_json(&spate, &["actions"]);
    assert_eq!(actions["actions"].as_array().unwrap().len(), 0, "{actions}");
}

fn metrics(spate: &Spate) -> Vec<Value> {
    let text = agent()
        .get(format!("{}/metrics", spate.admin_url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let parser = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics_check.py");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg(parser)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The sum over labels of the samples named `name` (and matching `label`).
fn total(samples: &[Value], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| label.is_none_or(|(k, v)| s["labels"][k] == v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

/// `/metrics` parses with Prometheus's OpenMetrics parser, and its
/// counters match the delivery log's records.
#[test]
fn metrics_parse_and_match_the_delivery_log() {
    require("python3");
    let sink = Sink::start(&free_addr(), &[]);
    let spate = Spate::start(&[
        "--smarthost",
        &sink.addr,
        "--route",
        "dead.test=127.0.0.1:9",
        "--cores",
        "0-1",
    ]);
    send(&spate, "r@ok.test", 5);
    send(&spate, "x@dead.test", 2);
    let log = spate.dir.path().join("log");
    wait_until(LONG, "5 delivered, 2 deferred", || {
        sink.count() == 5 && log_of(&log, "TransientFailure").len() >= 2
    });
    let pairs = [
        ("spate_messages_received_total", "Reception"),
        ("spate_recipients_delivered_total", "Delivery"),
        ("spate_recipients_deferred_total", "TransientFailure"),
        ("spate_recipients_bounced_total", "Bounce"),
    ];
    // The log is written every 100 ms; the counters at once.
    let mut samples = Vec::new();
    wait_until(LONG, "the counters and the log agree", || {
        samples = metrics(&spate);
        pairs
            .iter()
            .all(|(m, kind)| total(&samples, m, None) == log_of(&log, kind).len() as f64)
    });
    assert_eq!(total(&samples, "spate_messages_received_total", None), 7.0);
    assert_eq!(
        total(&samples, "spate_smtp_final_dot_seconds_count", None),
        7.0
    );
    assert!(total(&samples, "spate_spool_fdatasync_seconds_count", None) >= 1.0);
    assert!(total(&samples, "spate_spool_commit_batch_records_count", None) >= 1.0);
    assert_eq!(
        total(&samples, "spate_queue_entries", Some(("state", "waiting"))),
        2.0
    );
    let dead = total(
        &samples,
        "spate_destination_queue_entries",
        Some(("destination", "dead.test")),
    );
    assert_eq!(dead, 2.0);
    assert!(total(&samples, "spate_process_resident_memory_bytes", None) > 0.0);
    assert!(total(&samples, "spate_spool_free_bytes", None) > 0.0);
    assert_eq!(
        samples
            .iter()
            .filter(|s| s["name"] == "spate_messages_received_total")
            .count(),
        2,
        "one per core"
    );
}

/// An event stream gets the records written after it subscribed, only of
/// the kind and domain asked for; `spate ctl events` prints them.
#[test]
fn events_stream_live_records_filtered_by_kind_and_domain() {
    use std::io::BufRead;
    let sink = Sink::start(&free_addr(), &[]);
    let spate = Spate::start(&["--smarthost", &sink.addr, "--cores", "0-1"]);
    let url = format!(
        "{}/api/v1/events?kind=Delivery&domain=one.test",
        spate.admin_url()
    );
    let r = agent().get(url).call().unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut lines = std::io::BufReader::new(r.into_body().into_reader()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), ": subscribed");
    send(&spate, "r@two.test", 2);
    send(&spate, "r@one.test", 2);
    let mut got = Vec::new();
    while got.len() < 2 {
        let line = lines.next().unwrap().unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            got.push(serde_json::from_str::<Value>(data).unwrap());
        }
    }
    for r in &got {
        assert_eq!(
            (r["type"].as_str(), r["domain"].as_str()),
            (Some("Delivery"), Some("one.test")),
            "{r}"
        );
    }
    // `spate ctl events` prints the next reception; mail is sent until it
    // has one (it cannot say when it has subscribed).
    let url = spate.admin_url();
    let spool = spate.spool_dir();
    let mut ctl = std::process::Command::new(env!("CARGO_BIN_EXE_spate"))
        .args([
            "ctl",
            "--admin",
            &url,
            "--spool",
            spool.to_str().unwrap(),
            "events",
            "--kind",
            "Reception",
            "--count",
            "1",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(LONG, "spate ctl events to print one", || {
        send(&spate, "r@three.test", 1);
        ctl.try_wait().unwrap().is_some()
    });
    let out = ctl.wait_with_output().unwrap();
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["type"], "Reception");
}

/// A trace by id and by recipient finds a message half delivered: its
/// queued recipient and its records, attempt by attempt.
#[test]
fn a_trace_finds_where_a_message_is() {
    let sink = Sink::start(&free_addr(), &[]);
    let spate = Spate::start(&[
        "--smarthost",
        &sink.addr,
        "--route",
        "dead.test=127.0.0.1:9",
    ]);
    let reply = spate.connect().transaction(
        "s@a.test",
        &["y@ok.test", "x@dead.test"],
        b"Subject: t\r\n\r\nx\r\n",
    );
    let id = reply.rsplit(' ').next().unwrap().trim().to_string();
    assert_eq!(id.len(), 16, "{reply}");
    wait_until(LONG, "its records", || {
        let t = ctl_json(&spate, &["trace", &id]);
        let kinds: Vec<&str> = t["messages"][0]["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        kinds.contains(&"Delivery") && kinds.contains(&"TransientFailure")
    });
    let t = ctl_json(&spate, &["trace", &id]);
    let queued = &t["messages"][0]["queued"];
    assert_eq!(queued.as_array().unwrap().len(), 1, "{t}");
    assert_eq!(
        (queued[0]["recipient"].as_str(), queued[0]["state"].as_str()),
        (Some("x@dead.test"), Some("waiting"))
    );
    let by_rcpt = ctl_json(&spate, &["trace", "x@dead.test"]);
    assert_eq!(by_rcpt["messages"][0]["id"], id.as_str());
    let (ok, out) = spate.ctl(&["trace", "00000000deadbeef"]);
    assert!(!ok && out.contains("404"), "{out}");
}

/// Reload over the API takes a changed shaping file, and refuses a broken
/// one with the old rules left in force.
#[test]
fn reload_over_the_api_takes_new_rules_and_refuses_a_broken_file() {
    let rules = file("s.toml", "[destination.\"a.test\"]\nconnections = 2\n");
    let spate = Spate::start(&["--shaping", &rules]);
    std::fs::write(
        &rules,
        "[destination.\"a.test\"]\nconnections = 3\n[destination.\"b.test\"]\nconnections = 1\n",
    )
    .unwrap();
    let (ok, out) = spate.ctl(&["reload", "--reason", "new limits"]);
    assert!(ok && out.contains("2 destination rules"), "{out}");
    std::fs::write(&rules, "[destination.\"a.test\"]\nconections = 3\n").unwrap();
    let (ok, out) = spate.ctl(&["reload"]);
    assert!(!ok && out.contains("old rules stay in force"), "{out}");
    let log = spate.dir.path().join("log");
    wait_until(LONG, "the reload's record", || {
        log_of(&log, "Admin").len() == 1
    });
    assert_eq!(log_of(&log, "Admin")[0]["reason"], "new limits");
}

/// The API's document is served, and the server refuses to listen beyond
/// loopback without a token file.
#[test]
fn the_api_document_is_served_and_wide_listening_needs_a_token_file() {
    let spate = Spate::start(&[]);
    let text = agent()
        .get(format!("{}/api/v1/openapi.json", spate.admin_url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["paths"]["/api/v1/queues/{domain}"]["get"].is_object());
    let (ok, out) = spate_cmd(&[
        "serve",
        "--admin",
        "0.0.0.0:10026",
        "--spool",
        "/nonexistent/x",
    ]);
    assert!(
        !ok && out.contains("admin.listen: 0.0.0.0:10026 is beyond loopback"),
        "{out}"
    );
}

/// With `admin.tls_certificate` set the server speaks only TLS: `spate
/// ctl` trusting the certificate gets its answers, plain HTTP gets none.
#[test]
fn the_admin_server_speaks_tls_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let mut spate = Spate::unlaunched(&["--config", cfg.to_str().unwrap()]);
    let ip = spate.addr.rsplit_once(':').unwrap().0.to_string();
    let (cert, key) = certificate(dir.path(), &format!("IP:{ip}"), true);
    let text = format!(
        "[admin]\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
        cert, key
    );
    std::fs::write(&cfg, text).unwrap();
    spate.launch();
    let https = format!("https://{}", spate.admin_addr());
    let spool = spate.spool_dir();
    let (ok, out) = spate_cmd(&[
        "ctl",
        "--admin",
        &https,
        "--ca-file",
        &cert,
        "--spool",
        spool.to_str().unwrap(),
        "summary",
    ]);
    assert!(ok && out.contains("received"), "{out}");
    let (ok, out) = spate_cmd(&[
        "ctl",
        "--admin",
        &https,
        "--spool",
        spool.to_str().unwrap(),
        "summary",
    ]);
    assert!(!ok, "an untrusted certificate must fail: {out}");
    assert!(agent()
        .get(format!("{}/api/v1/summary", spate.admin_url()))
        .call()
        .is_err());
}

/// Malformed JSON, unknown fields, two selectors, a bad duration, a body
/// over 64 KiB, a wrong route or method: each gets its 4xx naming the
/// problem, and nothing is put in force.
#[test]
fn bad_requests_get_a_4xx_naming_the_problem_and_change_nothing() {
    let spate = Spate::start(&[]);
    let token = spate.admin_token();
    let t = Some(token.as_str());
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "/api/v1/suspend",
            r#"{"domain": "x.test", "duration_s": 60, "colour": "red"}"#,
            400,
            "unknown field \"colour\"",
        ),
        ("/api/v1/suspend", r#"{"domain": "#, 400, "body:"),
        (
            "/api/v1/suspend",
            r#"{"domain": "x.test", "tenant": "t", "duration_s": 60}"#,
            400,
            "exactly one",
        ),
        (
            "/api/v1/suspend",
            r#"{"domain": "x.test", "duration_s": 0}"#,
            400,
            "duration_s",
        ),
        ("/api/v1/suspend", r#"[1, 2]"#, 400, "JSON object"),
        (
            "/api/v1/overrides",
            r#"{"domain": "x.test", "set": {"colour": 1}, "duration_s": 60}"#,
            405,
            "not allowed",
        ),
        (
            "/api/v1/bounce",
            r#"{"source": "s1"}"#,
            400,
            "not a selector here",
        ),
        (
            "/api/v1/shaping/reload",
            r#"{"why": "x"}"#,
            400,
            "unknown field \"why\"",
        ),
        ("/api/v1/nothing", "{}", 404, "no such route"),
    ];
    for (path, body, status, says) in cases {
        let (got, v) = post(&spate, path, t, body);
        assert_eq!(got, *status, "{path} {body}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{path} {body}: {v}"
        );
    }
    let mut req = agent()
        .put(format!("{}/api/v1/overrides", spate.admin_url()))
        .header("Authorization", format!("Bearer {token}"));
    req = req.header("Content-Type", "application/json");
    let mut r = req
        .send(r#"{"domain": "x.test", "set": {"colour": 1}, "duration_s": 60}"#)
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("colour cannot be overridden"));
    let big = format!(
        r#"{{"domain": "x.test", "duration_s": 60, "reason": "{}"}}"#,
        "x".repeat(70_000)
    );
    let (got, v) = post(&spate, "/api/v1/suspend", t, &big);
    assert_eq!(got, 413, "{v}");
    let actions = ctl_json(&spate, &["actions"]);
    assert_eq!(actions["actions"].as_array().unwrap().len(), 0, "{actions}");
}

/// A restart binds the admin address at once even while an event stream
/// the last run closed waits in TIME_WAIT on it (SO_REUSEADDR).
#[test]
fn a_restart_with_an_event_stream_open_binds_again_at_once() {
    use std::io::BufRead;
    let mut spate = Spate::start(&[]);
    let r = agent()
        .get(format!("{}/api/v1/events", spate.admin_url()))
        .call()
        .unwrap();
    let mut lines = std::io::BufReader::new(r.into_body().into_reader()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), ": subscribed");
    assert_eq!(spate.stop(), 0);
    // The stream ends with the process: spate closed it first.
    while let Some(Ok(_)) = lines.next() {}
    spate.launch();
    let (ok, out) = spate.ctl(&["summary"]);
    assert!(ok, "{out}");
}
