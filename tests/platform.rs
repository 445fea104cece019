//! The platform features against the binary, judged at real peers:
//! HTTP injection of a 1,000-recipient request with substitutions arrives
//! at Postfix's smtp-sink with each recipient's own text; bad requests get
//! 400 naming the field and spool nothing; a hard bounce of an invalid
//! recipient suppresses the address at RCPT, at HTTP injection and across
//! a kill -9; an ARF report built with Python's email library and sent
//! with swaks is matched to its message and suppresses the complainer for
//! the message's tenant; a one-click unsubscribe link does too.

mod common;
use common::counting::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

fn post(url: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    http_post(url, token, body, LONG)
}

fn inject(spate: &Spate, body: &Value) -> (u16, Value) {
    let url = format!("{}/api/v1/inject", spate.inject_url());
    post(&url, Some(&spate.admin_token()), &body.to_string())
}

fn records(spate: &Spate, kind: &str) -> Vec<Value> {
    log_of(&spate.log_dir(), kind)
}

fn wait_record(spate: &Spate, kind: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    wait_until(LONG, what, || {
        found = records(spate, kind).into_iter().find(|r| cond(r));
        found.is_some()
    });
    found.unwrap()
}

/// The sink's message whose To field is `to`.
fn message_to<'a>(messages: &'a [String], to: &str) -> &'a str {
    let field = format!("\nTo: <{to}>\n");
    messages
        .iter()
        .find(|m| m.contains(&field))
        .unwrap_or_else(|| panic!("no message to {to}"))
}

#[test]
fn a_thousand_recipients_with_substitutions_each_get_their_own_text() {
    let sink = Sink::start(&free_addr(), &[]);
    let spate = Spate::start_injecting(&["--smarthost", &sink.addr, "--cores", "0-1"]);
    let recipients: Vec<Value> = (0..1000)
        .map(|i| {
            let name = if i == 7 {
                "<Bob & Co>".to_string()
            } else {
                format!("R{i}")
            };
            json!({ "address": format!("r{i}@y.test"), "vars": { "name": name } })
        })
        .collect();
    let body = json!({
        "sender": "bounces@shop.test",
        "tenant": "acme",
        "campaign": "bf",
        "vars": { "shop": "Acme" },
        "recipients": recipients,
        "content": {
            "from": "news@shop.test",
            "from_name": "Acme News",
            "subject": "Deals for {{ name }}",
            "text": "Hello {{ name }}, from {{ shop }}.",
            "html": "<p>Hello {{ name }}</p>",
            "headers": { "X-Campaign": "{{ shop }}-bf" }
        }
    });
    let (status, v) = inject(&spate, &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 1000, "{v}");
    let ids = v["messages"].as_array().unwrap();
    assert_eq!(
        ids.len(),
        1000,
        "one message per recipient: the texts differ"
    );
    wait_until(LONG, "1000 messages at the sink", || sink.count() == 1000);
    let messages = sink.messages();
    for i in [0usize, 1, 500, 999] {
        let m = message_to(&messages, &format!("r{i}@y.test"));
        assert!(m.contains(&format!("Subject: Deals for R{i}\n")), "{m}");
        assert!(m.contains(&format!("Hello R{i}, from Acme.")), "{m}");
        assert!(m.contains(&format!("<p>Hello R{i}</p>")), "{m}");
        assert!(m.contains("X-Campaign: Acme-bf\n"), "{m}");
        assert!(m.contains("From: \"Acme News\" <news@shop.test>"), "{m}");
        assert!(m.contains("(spate) with HTTP id "), "{m}");
    }
    // The html part escapes, the text part does not.
    let bob = message_to(&messages, "r7@y.test");
    assert!(bob.contains("<p>Hello &lt;Bob &amp; Co&gt;</p>"), "{bob}");
    assert!(bob.contains("Hello <Bob & Co>, from Acme."), "{bob}");
    // Every id answered is a message received and delivered, with its tags.
    let received = wait_record(&spate, "Delivery", "the last delivery logged", |r| {
        r["recipient"] == "r999@y.test"
    });
    assert_eq!(received["tenant"], "acme");
    let receptions = records(&spate, "Reception");
    for id in ids {
        let id = id["id"].as_str().unwrap();
        assert!(
            receptions
                .iter()
                .any(|r| r["id"] == id && r["campaign"] == "bf"),
            "{id}"
        );
    }
    // The same text for every recipient is one message with them all.
    let same = json!({
        "sender": "bounces@shop.test",
        "recipients": [{ "address": "a@z.test" }, { "address": "b@z.test" }, { "address": "c@z.test" }],
        "content": { "from": "news@shop.test", "to": "list@shop.test", "subject": "News", "text": "The same" }
    });
    let (status, v) = inject(&spate, &same);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["messages"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["messages"][0]["recipients"].as_array().unwrap().len(), 3);
    wait_until(LONG, "the shared message delivered", || {
        sink.count() == 1001
    });
}

#[test]
fn bad_requests_get_400_naming_the_field_and_spool_nothing() {
    let sink = Sink::start(&free_addr(), &[]);
    let config = file(
        "spate.toml",
        "[inject]\nmax_recipients = 3\nmax_request_bytes = 4096\n",
    );
    let spate = Spate::start_injecting(&["--smarthost", &sink.addr, "--config", &config]);
    let good = json!({
        "sender": "s@shop.test",
        "recipients": [{ "address": "a@y.test", "vars": { "name": "Ann" } }],
        "content": { "from": "n@shop.test", "subject": "Hi {{ name }}", "text": "t" }
    });
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("{\"sender\": ".to_string(), "request body:"),
        (with(&|v| v["sendr"] = json!("x")), "unknown field `sendr`"),
        (
            with(
                &|v| v["recipients"] = json!([{ "address": "a@y.test", "vars": {"name": "A"} }, { "address": "not an address" }]),
            ),
            "recipients[1].address:",
        ),
        (
            with(
                &|v| v["recipients"] = json!([{"address": "a@y.test"}, {"address": "b@y.test"}, {"address": "c@y.test"}, {"address": "d@y.test"}]),
            ),
            "recipients: 4 is more than the limit of 3",
        ),
        (
            with(
                &|v| v["recipients"] = json!([{ "address": "a@y.test", "vars": {"name": "A"} }, { "address": "b@y.test" }]),
            ),
            "recipients[1]: content.subject:",
        ),
        (
            with(&|v| v["recipients"][0]["vars"]["name"] = json!("x\r\nBcc: all@y.test")),
            "content.subject: renders with a line break",
        ),
        (
            with(&|v| v["content"]["subject"] = json!("{{ name")),
            "content.subject:",
        ),
        (
            with(&|v| v["message"] = json!("Subject: x\r\n\r\nx\r\n")),
            "message, content: give one",
        ),
        (with(&|v| v["tenant"] = json!("two words")), "tenant:"),
        (
            with(&|v| v["content"]["headers"] = json!({ "Bcc": "x@y.test" })),
            "content.headers.Bcc:",
        ),
    ];
    let url = format!("{}/api/v1/inject", spate.inject_url());
    let token = spate.admin_token();
    for (body, field) in &cases {
        let (status, v) = post(&url, Some(&token), body);
        assert_eq!(status, 400, "{body}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(field),
            "{body}: wanted {field:?} in {error:?}"
        );
    }
    // No token or a wrong one: 401; a body over the limit: 413.
    assert_eq!(post(&url, None, &good.to_string()).0, 401);
    assert_eq!(
        post(
            &url,
            Some("wrong-token-0123456789abcdef"),
            &good.to_string()
        )
        .0,
        401
    );
    let big = with(&|v| v["content"]["text"] = json!("x".repeat(5000)));
    assert_eq!(post(&url, Some(&token), &big).0, 413);
    assert!(read_spool(&spate.spool_dir()).is_empty(), "nothing spooled");
    assert!(records(&spate, "Reception").is_empty());
    // The same server takes a good request.
    let (status, v) = inject(&spate, &good);
    assert_eq!(status, 200, "{v}");
    wait_until(LONG, "the good request delivered", || sink.count() == 1);
}

/// An SMTP transaction up to RCPT; the RCPT reply's code and text.
fn rcpt(spate: &Spate, to: &str) -> (u16, String) {
    let mut smtp = spate.connect();
    smtp.send("EHLO client.test").expect(250);
    smtp.send("MAIL FROM:<s@shop.test>").expect(250);
    let (code, lines) = smtp.send(&format!("RCPT TO:<{to}>")).reply();
    (code, lines.join(" "))
}

#[test]
fn an_invalid_recipients_bounce_suppresses_it_everywhere_and_for_good() {
    let mx = CountingMx::refusing(
        Duration::ZERO,
        Refusals {
            count: 1,
            reply: "550 5.1.1 <gone@y.test>: Recipient address rejected: User unknown in virtual mailbox table",
            per_second: None,
        },
    );
    let mut spate = Spate::start_injecting(&["--smarthost", &mx.addr, "--cores", "0-1"]);
    send(&spate, "gone@y.test", 1);
    let bounce = wait_record(&spate, "Bounce", "the bounce", |r| {
        r["recipient"] == "gone@y.test"
    });
    assert_eq!(bounce["class"], "invalid_recipient", "{bounce}");
    let added = wait_record(&spate, "Suppression", "the suppression", |r| {
        r["recipient"] == "gone@y.test"
    });
    assert_eq!(added["by"], "bounce", "{added}");
    // Refused at RCPT, and per recipient over HTTP.
    let (code, text) = rcpt(&spate, "gone@y.test");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("suppression list"), "{text}");
    let body = json!({
        "sender": "s@shop.test",
        "recipients": [{ "address": "gone@y.test" }, { "address": "fine@y.test" }],
        "content": { "from": "n@shop.test", "subject": "s", "text": "t" }
    });
    let (status, v) = inject(&spate, &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 1, "{v}");
    assert_eq!(v["refused"][0]["address"], "gone@y.test", "{v}");
    // Journaled: a kill -9 and a restart keep it.
    spate.kill9();
    spate.launch();
    assert_eq!(rcpt(&spate, "gone@y.test").0, 550);
    let (ok, out) = spate.ctl(&["--json", "suppress", "list"]);
    assert!(ok, "{out}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["entries"][0]["address"], "gone@y.test", "{list}");
    assert_eq!(list["entries"][0]["by"], "bounce", "{list}");
    // The operator takes it off; a tenant's list holds for that tenant only.
    let (ok, out) = spate.ctl(&[
        "suppress",
        "remove",
        "gone@y.test",
        "--reason",
        "mailbox restored",
    ]);
    assert!(ok && out.contains("removed"), "{out}");
    assert_eq!(rcpt(&spate, "gone@y.test").0, 250);
    let (ok, out) = spate.ctl(&[
        "suppress",
        "add",
        "ann@y.test",
        "--tenant",
        "acme",
        "--reason",
        "asked us",
    ]);
    assert!(ok && out.contains("added"), "{out}");
    let for_tenant = |tenant: &str| {
        let mut b = body.clone();
        b["tenant"] = json!(tenant);
        b["recipients"] = json!([{ "address": "ANN@y.test" }]);
        inject(&spate, &b).1
    };
    assert_eq!(for_tenant("acme")["accepted"], 0);
    assert_eq!(for_tenant("other")["accepted"], 1);
}

#[test]
fn an_arf_report_is_matched_to_its_message_and_suppresses_the_complainer() {
    require("swaks");
    let sink = Sink::start(&free_addr(), &[]);
    let config = file(
        "spate.toml",
        "[feedback]\naddresses = [\"fbl@spate.test\"]\n",
    );
    let spate = Spate::start_injecting(&["--smarthost", &sink.addr, "--config", &config]);
    let body = json!({
        "sender": "bounces@shop.test", "tenant": "acme", "campaign": "bf",
        "recipients": [{ "address": "ann@y.test" }],
        "content": { "from": "news@shop.test", "subject": "Deals", "text": "Buy" }
    });
    let (status, v) = inject(&spate, &body);
    assert_eq!(status, 200, "{v}");
    let id = v["messages"][0]["id"].as_str().unwrap().to_string();
    wait_until(LONG, "delivered", || sink.count() == 1);
    wait_record(&spate, "Delivery", "its delivery logged", |r| {
        r["id"] == id.as_str()
    });
    wait_record(&spate, "Reception", "its reception logged", |r| {
        r["id"] == id.as_str()
    });
    // The provider's report, built by Python's email library from the
    // message as delivered, and sent by swaks.
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.eml");
    std::fs::write(&original, &sink.messages()[0]).unwrap();
    let report = dir.path().join("report.eml");
    let (ok, text) = run(
        "sh",
        &[
            "-c",
            &format!(
                "python3 tests/arf_report.py --original {} --to fbl@spate.test > {}",
                original.display(),
                report.display()
            ),
        ],
    );
    assert!(ok, "{text}");
    let data = format!("@{}", report.display());
    let swaks = |to: &str, data: &str| {
        run(
            "swaks",
            &[
                "--server",
                &spate.addr,
                "--from",
                "fbl@provider.test",
                "--to",
                to,
                "--data",
                data,
            ],
        )
    };
    let (ok, out) = swaks("fbl@spate.test", &data);
    assert!(ok && out.contains("report kept as"), "{out}");
    let complaint = wait_record(&spate, "Complaint", "the complaint", |r| {
        r["id"] == id.as_str()
    });
    assert_eq!(complaint["recipient"], "ann@y.test", "{complaint}");
    assert_eq!(complaint["tenant"], "acme");
    assert_eq!(complaint["campaign"], "bf");
    let added = wait_record(&spate, "Suppression", "the complainer suppressed", |r| {
        r["recipient"] == "ann@y.test"
    });
    assert_eq!(
        (added["by"].as_str(), added["tenant"].as_str()),
        (Some("complaint"), Some("acme"))
    );
    let (_, v) = inject(&spate, &body);
    assert_eq!(v["accepted"], 0, "{v}");
    let mut other = body.clone();
    other["tenant"] = json!("other");
    assert_eq!(inject(&spate, &other).1["accepted"], 1);
    // Mail injected over SMTP with the client's own Message-ID, reported
    // by a provider that stripped every Received field and the recipient:
    // matched by the Message-ID logged at reception.
    let (ok, out) = swaks_message(
        &spate,
        "cara@y.test",
        "X-Spate-Tenant: beta\r\nMessage-ID: <client-77@shop.test>\r\nSubject: hi\r\n\r\nhello\r\n",
    );
    assert!(ok, "{out}");
    wait_record(&spate, "Delivery", "its delivery logged", |r| {
        r["recipient"] == "cara@y.test"
    });
    let mut delivered = None;
    wait_until(LONG, "it at the sink", || {
        delivered = sink
            .messages()
            .into_iter()
            .find(|m| m.contains("client-77"));
        delivered.is_some()
    });
    let delivered = delivered.unwrap();
    std::fs::write(&original, without_received_fields(&delivered)).unwrap();
    let (ok, text) = run(
        "sh",
        &[
            "-c",
            &format!(
                "python3 tests/arf_report.py --headers-only --original {} --to fbl@spate.test > {}",
                original.display(),
                report.display()
            ),
        ],
    );
    assert!(ok, "{text}");
    assert!(swaks("fbl@spate.test", &data).0);
    let complaint = wait_record(&spate, "Complaint", "the second complaint", |r| {
        r["recipient"] == "cara@y.test"
    });
    assert_eq!(complaint["tenant"], "beta", "{complaint}");
    wait_record(&spate, "Suppression", "cara suppressed", |r| {
        r["recipient"] == "cara@y.test"
    });
    // A report that is none is logged and kept; mixing a feedback address
    // with mail to relay in one transaction is refused.
    let (ok, out) = swaks("fbl@spate.test", "@tests/data/arf/not-a-report.eml");
    assert!(ok, "{out}");
    let unreadable = wait_record(&spate, "Complaint", "the unreadable report", |r| {
        r["response"].as_str().unwrap_or("").contains("unreadable")
    });
    let kept = std::fs::read_dir(spate.spool_dir().join("feedback"))
        .unwrap()
        .count();
    assert_eq!(kept, 3, "{unreadable}");
    let mut smtp = spate.connect();
    smtp.send("EHLO client.test").expect(250);
    smtp.send("MAIL FROM:<fbl@provider.test>").expect(250);
    smtp.send("RCPT TO:<fbl@spate.test>").expect(250);
    smtp.send("RCPT TO:<x@y.test>").expect(452);
}

/// One message sent by swaks over SMTP, its DATA as given.
fn swaks_message(spate: &Spate, to: &str, data: &str) -> (bool, String) {
    require("swaks");
    run(
        "swaks",
        &[
            "--server",
            &spate.addr,
            "--from",
            "s@shop.test",
            "--to",
            to,
            "--data",
            data,
        ],
    )
}

/// A message without its Received fields (folded lines included).
fn without_received_fields(message: &str) -> String {
    let (header, body) = message.split_once("\n\n").unwrap();
    let mut kept = Vec::new();
    let mut dropping = false;
    for line in header.lines() {
        let folded = line.starts_with([' ', '\t']);
        if !folded {
            dropping = line.to_ascii_lowercase().starts_with("received:");
        }
        if !dropping {
            kept.push(line);
        }
    }
    format!("{}\n\n{body}", kept.join("\n"))
}

#[test]
fn a_one_click_unsubscribe_suppresses_for_the_messages_tenant() {
    let sink = Sink::start(&free_addr(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("unsubscribe.key");
    std::fs::write(&secret, "a-secret-of-at-least-sixteen-bytes").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut spate = Spate::unlaunched(&["--smarthost", &sink.addr]);
    let config = file(
        "spate.toml",
        &format!(
            "[inject]\nunsubscribe_url = \"{}/u/\"\nunsubscribe_secret_file = \"{}\"\n",
            spate.inject_url(),
            secret.display()
        ),
    );
    let inject_addr = spate.inject_addr();
    spate.add_args(&["--inject", &inject_addr, "--config", &config]);
    spate.launch();
    let body = json!({
        "sender": "bounces@shop.test", "tenant": "acme",
        "recipients": [{ "address": "bob@y.test" }],
        "content": { "from": "news@shop.test", "subject": "Deals", "text": "Buy" }
    });
    assert_eq!(inject(&spate, &body).0, 200);
    wait_until(LONG, "delivered", || sink.count() == 1);
    let m = sink.messages().remove(0);
    assert!(
        m.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{m}"
    );
    let link = m
        .split("List-Unsubscribe: <")
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .unwrap_or_else(|| panic!("{m}"))
        .to_string();
    // The link only works as a one-click POST, and a forged one not at all.
    assert_eq!(post(&link, None, "").0, 400);
    let forged = format!("{}x", link);
    assert_eq!(post(&forged, None, "List-Unsubscribe=One-Click").0, 404);
    assert_eq!(post(&link, None, "List-Unsubscribe=One-Click").0, 200);
    let added = wait_record(&spate, "Suppression", "unsubscribed", |r| {
        r["recipient"] == "bob@y.test"
    });
    assert_eq!(
        (added["by"].as_str(), added["tenant"].as_str()),
        (Some("unsubscribe"), Some("acme"))
    );
    assert_eq!(inject(&spate, &body).1["accepted"], 0);
}

/// A client that opens a connection to the injection listener and sends
/// half a request header is cut off at `admin.idle_timeout_secs`; the
/// listener still serves others.
#[test]
fn a_connection_that_sends_half_a_header_is_closed_when_idle() {
    use std::io::{Read, Write};
    let config = file("spate.toml", "[admin]\nidle_timeout_secs = 1\n");
    let spate = Spate::start_injecting(&["--config", &config]);
    let mut slow = std::net::TcpStream::connect(spate.inject_addr()).unwrap();
    slow.set_read_timeout(Some(LONG)).unwrap();
    slow.write_all(b"POST /api/v1/inject HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    // The server closes it (EOF, or a reset): the read returns before LONG.
    let started = std::time::Instant::now();
    let n = slow.read(&mut buf).unwrap_or(0);
    assert!(started.elapsed() < LONG, "not closed");
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    let body = json!({ "sender": "", "recipients": [{ "address": "a@y.test" }], "message": "Subject: x\r\n\r\nx\r\n" });
    assert_eq!(inject(&spate, &body).0, 200);
}
