//! Delivery by MX through a real DNS server (unbound): a dozen domains, each
//! with its own smtp-sink on its own loopback address, plus the DNS answers
//! that must bounce (null MX, NXDOMAIN) or defer (SERVFAIL).

mod common;
use common::*;
use std::time::Duration;

const DOMAINS: usize = 12;

/// Loopback addresses for the MX hosts, one per domain, all with `port` free.
fn mx_addresses() -> (Vec<String>, u16) {
    let base = free_addr();
    let (ip, port) = base.rsplit_once(':').unwrap();
    let octets: Vec<&str> = ip.split('.').collect();
    let ips = (0..DOMAINS)
        .map(|i| {
            format!(
                "127.{}.{}.{}",
                octets[1],
                (octets[2].parse::<u32>().unwrap() + 1) % 250,
                10 + i
            )
        })
        .collect();
    (ips, port.parse().unwrap())
}

#[test]
fn mail_for_a_dozen_domains_reaches_each_mx_byte_exact() {
    require("smtp-source");
    let (ips, port) = mx_addresses();
    let sinks: Vec<Sink> = ips
        .iter()
        .map(|ip| Sink::start(&format!("{ip}:{port}"), &[]))
        .collect();
    let mut zone = String::from("  local-zone: \"test.\" static\n");
    for (i, ip) in ips.iter().enumerate() {
        // The first domain has a dead preferred MX: spate must fall back.
        if i == 0 {
            zone += "  local-data: \"d0.test. 300 IN MX 5 dead.d0.test.\"\n  local-data: \"dead.d0.test. 300 IN A 127.0.0.254\"\n";
        }
        zone += &format!("  local-data: \"d{i}.test. 300 IN MX 10 mx.d{i}.test.\"\n  local-data: \"mx.d{i}.test. 300 IN A {ip}\"\n");
    }
    let dns = Unbound::start(&zone);
    let cfg = tempfile::tempdir().unwrap();
    let cfg_path = cfg.path().join("c.toml");
    std::fs::write(
        &cfg_path,
        format!("[delivery]\nmx_port = {port}\nconnect_timeout_secs = 2\n"),
    )
    .unwrap();
    let mut spate = Spate::start(&["--dns", &dns.addr, "--config", cfg_path.to_str().unwrap()]);

    let recipients: Vec<String> = (0..DOMAINS).map(|i| format!("user{i}@d{i}.test")).collect();
    let to: Vec<&str> = recipients.iter().map(|s| s.as_str()).collect();
    let body = "Subject: to many\r\n\r\n.dotted line\r\nbody\r\n";
    let stuffed = "Subject: to many\r\n\r\n..dotted line\r\nbody\r\n";
    let mut smtp = spate.connect();
    for _ in 0..3 {
        smtp.transaction("s@sender.test", &to, stuffed.as_bytes());
    }
    let (ok, out) = run(
        "smtp-source",
        &[
            "-s",
            "5",
            "-m",
            "200",
            "-d",
            "-f",
            "s@sender.test",
            "-t",
            "bulk@d3.test",
            &spate.addr,
        ],
    );
    assert!(ok, "{out}");
    wait_until(
        Duration::from_secs(60),
        "every domain's sink to have its mail",
        || {
            sinks
                .iter()
                .enumerate()
                .all(|(i, s)| s.count() == if i == 3 { 203 } else { 3 })
        },
    );
    assert_eq!(spate.stop(), 0);
    let expected = body.replace("\r\n", "\n");
    for (i, sink) in sinks.iter().enumerate() {
        let messages = sink.messages();
        let rcpt = format!("X-Rcpt-Args: <user{i}@d{i}.test>");
        let mine: Vec<&String> = messages.iter().filter(|m| m.contains(&rcpt)).collect();
        assert_eq!(mine.len(), 3, "sink {i}");
        for m in mine {
            assert!(m.ends_with(&format!("{expected}\n")), "sink {i} got {m:?}");
        }
    }
    let deliveries = log_of(&spate.log_dir(), "Delivery");
    assert_eq!(deliveries.len(), 3 * DOMAINS + 200);
    let connections = connections_used(&deliveries);
    assert!(
        connections < 60,
        "{} connections for {} messages",
        connections,
        deliveries.len()
    );
    assert!(
        deliveries
            .iter()
            .all(|r| r["mx_host"].as_str().unwrap().starts_with("mx.d")),
        "the dead preferred MX was skipped"
    );
}

#[test]
fn null_mx_and_nxdomain_bounce_servfail_defers() {
    let senders = Sink::start(&free_addr(), &[]);
    let zone = "  local-zone: \"test.\" static\n  local-data: \"nullmx.test. 300 IN MX 0 .\"\nforward-zone:\n  name: \"broken.\"\n  forward-addr: 127.0.0.254@9\n";
    let dns = Unbound::start(zone);
    let mut spate = Spate::start(&[
        "--dns",
        &dns.addr,
        "--route",
        &format!("sender.test={}", senders.addr),
    ]);
    let mut smtp = spate.connect();
    smtp.transaction(
        "owner@sender.test",
        &["a@nullmx.test", "b@nosuch.test"],
        b"Subject: bounce me\r\n\r\nx\r\n",
    );
    smtp.transaction(
        "owner@sender.test",
        &["c@host.broken"],
        b"Subject: defer me\r\n\r\nx\r\n",
    );
    wait_until(
        Duration::from_secs(30),
        "two bounces and a deferral",
        || {
            log_of(&spate.log_dir(), "Bounce").len() == 2
                && !log_of(&spate.log_dir(), "TransientFailure").is_empty()
        },
    );
    wait_until(Duration::from_secs(30), "the DSNs", || senders.count() == 2);
    assert_eq!(spate.stop(), 0);
    let bounces = log_of(&spate.log_dir(), "Bounce");
    let reason = |rcpt: &str| {
        bounces.iter().find(|r| r["recipient"] == rcpt).unwrap()["response"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        reason("a@nullmx.test").starts_with("556 5.1.10"),
        "{}",
        reason("a@nullmx.test")
    );
    assert!(
        reason("b@nosuch.test").starts_with("550 5.1.2"),
        "{}",
        reason("b@nosuch.test")
    );
    let deferred = &log_of(&spate.log_dir(), "TransientFailure")[0];
    assert_eq!(deferred["recipient"], "c@host.broken");
    assert!(
        deferred["response"]
            .as_str()
            .unwrap()
            .starts_with("451 4.4.3"),
        "{deferred}"
    );
    let dsns = senders.messages().join("\n");
    assert!(
        dsns.contains("Status: 5.1.10") && dsns.contains("Status: 5.1.2"),
        "{dsns}"
    );
}
