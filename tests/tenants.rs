//! Tenants and campaigns against the binary: the header fields that name
//! them are kept in the spool record and never delivered; a tenant's rate
//! and pool hold at the destination while other mail goes on; a reply rule
//! suspends one campaign at a destination without holding up the rest.

mod common;
use common::counting::*;
use common::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn tagged(tenant: &str, campaign: &str, subject: &str) -> Vec<u8> {
    format!("X-Spate-Tenant: {tenant}\r\nX-Spate-Campaign: {campaign}\r\nSubject: {subject}\r\n\r\nx\r\n")
        .into_bytes()
}

/// The fields go to the spool record's envelope, not to the destination
/// (smtp-sink's copy); a field that is not one name is refused at the dot.
#[test]
fn tenant_fields_are_kept_in_the_spool_and_not_delivered() {
    let sink_addr = free_addr();
    let sink = Sink::start(&sink_addr, &[]);
    let mut spate = Spate::start(&["--smarthost", &sink_addr]);
    let mut smtp = spate.connect();
    smtp.transaction("s@a.test", &["r@d.test"], &tagged("acme", "bf-2026", "one"));
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@d.test>").expect(250);
    smtp.send("DATA").expect(354);
    smtp.raw(b"X-Spate-Tenant: two names\r\n\r\nx\r\n")
        .raw(b".\r\n");
    let refused = smtp.expect(554);
    assert!(refused.contains("X-Spate-Tenant"), "{refused}");
    wait_until(LONG, "the delivery", || sink.count() == 1);
    assert_eq!(spate.stop(), 0);
    let delivered = sink.messages().join("\n");
    assert!(delivered.contains("Subject: one"), "{delivered}");
    assert!(
        !delivered.to_ascii_lowercase().contains("x-spate-"),
        "{delivered}"
    );
    let stored = read_spool(&spate.spool_dir());
    assert_eq!(stored.len(), 1, "the refused message is not spooled");
    assert_eq!(
        (stored[0].tenant.as_str(), stored[0].campaign.as_str()),
        ("acme", "bf-2026")
    );
    assert!(!String::from_utf8_lossy(&stored[0].body).contains("X-Spate"));
}

/// Tenant "slow" has 5 messages a second over all destinations and cores;
/// its 15 messages to domains on both cores take about 3 s at the sink,
/// never more than the rate (and its burst) in a second, while 15 messages
/// that name no tenant, sent after them to the same domains, are all
/// delivered before the slow tenant's last.
#[test]
fn a_tenant_rate_holds_over_both_cores_without_holding_up_other_mail() {
    let mx = CountingMx::start(Duration::ZERO);
    let domains = domains_on_each_core("t", 1);
    let rules = file("s.toml", "[tenant.slow]\nmessage_rate = \"5/s,burst=1\"\n");
    let (_dns, mut spate) = provider_spate(&mx, &domains, &rules);
    let mut smtp = spate.connect();
    for i in 0..15 {
        let to = format!("slow{i}@{}", domains[i % 2]);
        smtp.transaction("s@a.test", &[&to], &tagged("slow", "c1", "slow"));
    }
    for i in 0..15 {
        let to = format!("free{i}@{}", domains[i % 2]);
        smtp.transaction("s@a.test", &[&to], b"Subject: free\r\n\r\nx\r\n");
    }
    wait_until(LONG, "all 30", || mx.delivered() == 30);
    assert_eq!(spate.stop(), 0);
    let seen = mx.seen.lock().unwrap();
    let of = |prefix: &str| -> Vec<std::time::Instant> {
        seen.recipients
            .iter()
            .zip(&seen.arrivals)
            .filter(|(r, _)| r.starts_with(prefix))
            .map(|(_, t)| *t)
            .collect()
    };
    let (slow, free) = (of("slow"), of("free"));
    assert_eq!((slow.len(), free.len()), (15, 15));
    let span = *slow.last().unwrap() - slow[0];
    assert!(span >= Duration::from_millis(2500), "15 at 5/s in {span:?}");
    for (i, start) in slow.iter().enumerate() {
        let in_window = slow[i..]
            .iter()
            .take_while(|t| **t - *start < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 5 + 1 + 2,
            "{in_window} of the tenant's messages within a second"
        );
    }
    assert!(
        free.last().unwrap() < slow.last().unwrap(),
        "the others went while the tenant waited"
    );
}

/// A tenant's mail goes out from its pool's source, other mail from the
/// default address. A reply rule with `scope = "campaign"` suspends only
/// campaign "bad" at the destination: campaign "good", sent after, is
/// delivered first, and "bad" goes when the suspension ends, without a
/// retry spent (the retry interval is an hour).
#[test]
fn a_tenant_pool_and_a_campaign_suspension() {
    let mx = CountingMx::refusing(
        Duration::ZERO,
        Refusals {
            count: 1,
            reply: "451 4.7.1 campaign blocked for content",
            per_second: None,
        },
    );
    let rules = file(
        "s.toml",
        "[default]\nretry = [\"1h\"]\n\n[[default.on_response]]\nmatch = 'campaign blocked'\naction = \"suspend\"\nscope = \"campaign\"\nduration = \"2s\"\n\n[source.a]\naddress = \"127.0.0.221\"\n[pool.acme]\nsources = { a = 1 }\n\n[tenant.acme]\npool = \"acme\"\n",
    );
    let mut spate = Spate::start(&["--smarthost", &mx.addr, "--shaping", &rules]);
    let mut smtp = spate.connect();
    smtp.transaction(
        "s@a.test",
        &["bad1@d.test"],
        &tagged("acme", "bad", "bad 1"),
    );
    // The Backoff record is written once the suspension is in force.
    wait_until(LONG, "the suspension", || {
        log_of(&spate.log_dir(), "Backoff").len() == 1
    });
    smtp.transaction(
        "s@a.test",
        &["bad2@d.test"],
        &tagged("acme", "bad", "bad 2"),
    );
    smtp.transaction(
        "s@a.test",
        &["good@d.test"],
        &tagged("acme", "good", "good"),
    );
    smtp.transaction(
        "s@a.test",
        &["plain@d.test"],
        b"Subject: plain\r\n\r\nx\r\n",
    );
    wait_until(LONG, "all four", || mx.delivered() == 4);
    assert_eq!(spate.stop(), 0);
    assert_first_backoff(
        &spate,
        "campaign bad at destination d.test suspended for 2s",
    );
    let seen = mx.seen.lock().unwrap();
    let order: Vec<&str> = seen
        .recipients
        .iter()
        .map(|r| r.split('@').next().unwrap())
        .collect();
    let at = |name: &str| order.iter().position(|r| *r == name).unwrap();
    assert!(
        at("good") < at("bad1") && at("good") < at("bad2"),
        "{order:?}"
    );
    assert!(at("plain") < at("bad1"), "{order:?}");
    let (a, plain): (std::net::IpAddr, std::net::IpAddr) =
        ("127.0.0.221".parse().unwrap(), "127.0.0.1".parse().unwrap());
    assert_eq!(seen.per_source.get(&a), Some(&3), "{:?}", seen.per_source);
    assert_eq!(
        seen.per_source.get(&plain),
        Some(&1),
        "{:?}",
        seen.per_source
    );
    let retries = log_of(&spate.log_dir(), "TransientFailure");
    assert_eq!(retries.len(), 1, "one refusal, no retry spent: {retries:?}");
}

/// `spate shaping explain --tenant` names the tenant's rate and the pool
/// its mail goes out from, with each source's warm-up plan.
#[test]
fn explain_shows_a_tenants_rate_and_pool() {
    let rules = file(
        "s.toml",
        "[default]\npool = \"p\"\n[source.w]\naddress = \"127.0.0.1\"\nwarmup = \"plan\"\n[source.m]\naddress = \"127.0.0.1\"\nehlo = \"mta.test\"\n[pool.p]\nsources = { w = 1 }\n[pool.q]\nsources = { m = 1 }\n[warmup.plan]\ndaily = [50, 100]\noverflow = \"q\"\n[tenant.acme]\npool = \"q\"\nmessage_rate = \"500/s\"\n",
    );
    let args = [
        "shaping",
        "explain",
        "d.test",
        "--shaping",
        &rules,
        "--smarthost",
        "127.0.0.1:25",
    ];
    let (ok, out) = spate_cmd(&args);
    assert!(ok, "{out}");
    assert!(out.contains("pool p:\n  source w: 127.0.0.1 weight 1, warming by plan plan (2 days from 50 a day per provider; overflow: pool q"), "{out}");
    let mut with_tenant = args.to_vec();
    with_tenant.extend(["--tenant", "acme"]);
    let (ok, out) = spate_cmd(&with_tenant);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "tenant acme: message_rate 500/s,burst=50 (all destinations and cores), pool q"
        ),
        "{out}"
    );
    assert!(
        out.contains("pool q:\n  source m: 127.0.0.1 weight 1, ehlo mta.test"),
        "{out}"
    );
}

/// A tenant's `connections` count every connection carrying its mail, all
/// destinations and cores together: its 40 messages to four domains on
/// both cores never use more than 2 connections at once at the sink (each
/// domain alone may have 10 per core); mail that names no tenant, sent
/// after, is not held by the tenant's count.
#[test]
fn a_tenant_connection_limit_holds_over_both_cores() {
    let mx = CountingMx::start(Duration::from_millis(30));
    let domains = domains_on_each_core("c", 2);
    let rules = file("s.toml", "[tenant.few]\nconnections = 2\n");
    let (_dns, mut spate) = provider_spate(&mx, &domains, &rules);
    let mut smtp = spate.connect();
    for i in 0..40 {
        let to = format!("r{i}@{}", domains[i % domains.len()]);
        smtp.transaction("s@a.test", &[&to], &tagged("few", "c", "few"));
    }
    wait_until(LONG, "40 deliveries", || mx.delivered() == 40);
    let max_open = mx.seen.lock().unwrap().max_open;
    assert!(
        max_open <= 2,
        "{max_open} connections at once for the tenant"
    );
    for i in 0..40 {
        let to = format!("u{i}@{}", domains[i % domains.len()]);
        smtp.transaction("s@a.test", &[&to], b"Subject: free\r\n\r\nx\r\n");
    }
    wait_until(LONG, "40 more", || mx.delivered() == 80);
    assert_eq!(spate.stop(), 0);
}

/// A campaign suspension written in a provider rule holds the campaign at
/// every domain of the provider, on every core: after a refusal at the
/// first domain, the campaign's mail to the second domain (the other
/// core) waits out the suspension, while another campaign's goes first.
#[test]
fn a_campaign_suspension_in_a_provider_holds_on_every_core() {
    let mx = CountingMx::refusing(
        Duration::ZERO,
        Refusals {
            count: 1,
            reply: "451 4.7.1 campaign blocked for content",
            per_second: None,
        },
    );
    let domains = domains_on_each_core("k", 1);
    let rules = file(
        "s.toml",
        "[default]\nretry = [\"1h\"]\n[provider.bigmail]\nmx_suffix = [\".bigmail.test\"]\n[[provider.bigmail.on_response]]\nmatch = 'campaign blocked'\naction = \"suspend\"\nscope = \"campaign\"\nduration = \"2s\"\n",
    );
    let (_dns, mut spate) = provider_spate(&mx, &domains, &rules);
    let mut smtp = spate.connect();
    let first = format!("bad1@{}", domains[0]);
    smtp.transaction("s@a.test", &[&first], &tagged("acme", "bad", "bad 1"));
    wait_until(LONG, "the suspension", || {
        log_of(&spate.log_dir(), "Backoff").len() == 1
    });
    let (bad2, good) = (
        format!("bad2@{}", domains[1]),
        format!("good@{}", domains[1]),
    );
    smtp.transaction("s@a.test", &[&bad2], &tagged("acme", "bad", "bad 2"));
    smtp.transaction("s@a.test", &[&good], &tagged("acme", "good", "good"));
    wait_until(LONG, "all three", || mx.delivered() == 3);
    assert_eq!(spate.stop(), 0);
    assert_first_backoff(&spate, "campaign bad at provider bigmail suspended for 2s");
    let seen = mx.seen.lock().unwrap();
    let order: Vec<&str> = seen
        .recipients
        .iter()
        .map(|r| r.split('@').next().unwrap())
        .collect();
    let at = |name: &str| order.iter().position(|r| *r == name).unwrap();
    assert!(at("good") < at("bad2"), "{order:?}");
    let retries = log_of(&spate.log_dir(), "TransientFailure");
    assert_eq!(retries.len(), 1, "no retry spent: {retries:?}");
}

/// A lane whose pool has no source to spare does not hold up the other
/// lanes of the domain: tenant "a" goes out from a warming source whose
/// one message a day is spent and whose plan keeps the rest queued, while
/// tenant "b", with a pool of its own, is delivered at once; "a"'s second
/// message goes the next warm-up day.
#[test]
fn a_tenant_waiting_for_its_pool_does_not_hold_up_another() {
    let mx = CountingMx::start(Duration::ZERO);
    let rules = file(
        "s.toml",
        "[source.w]\naddress = \"127.0.0.224\"\nwarmup = \"tiny\"\n[source.b]\naddress = \"127.0.0.225\"\n[pool.pa]\nsources = { w = 1 }\n[pool.pb]\nsources = { b = 1 }\n[warmup.tiny]\ndaily = [1, 1]\noverflow = \"queue\"\n[tenant.a]\npool = \"pa\"\n[tenant.b]\npool = \"pb\"\n",
    );
    let cfg = file("c.toml", "[delivery]\nwarmup_clock = \"manual\"\n");
    let args = [
        "--smarthost",
        &mx.addr,
        "--shaping",
        &rules,
        "--config",
        &cfg,
    ];
    let mut spate = Spate::start(&args);
    let mut smtp = spate.connect();
    for i in 0..2 {
        let to = format!("a{i}@d.test");
        smtp.transaction("s@a.test", &[&to], &tagged("a", "c", "a"));
    }
    wait_until(LONG, "a's one message today", || mx.delivered() == 1);
    for i in 0..3 {
        let to = format!("b{i}@d.test");
        smtp.transaction("s@a.test", &[&to], &tagged("b", "c", "b"));
    }
    wait_until(LONG, "b's three", || mx.delivered() == 4);
    signal_spate(&spate, "-USR2");
    spate.wait_for_log("warm-up day 1 begins", LONG);
    wait_until(LONG, "a's second, the next day", || mx.delivered() == 5);
    assert_eq!(spate.stop(), 0);
    let seen = mx.seen.lock().unwrap();
    let (w, b): (std::net::IpAddr, std::net::IpAddr) = (
        "127.0.0.224".parse().unwrap(),
        "127.0.0.225".parse().unwrap(),
    );
    assert_eq!(seen.per_source.get(&w), Some(&2), "{:?}", seen.per_source);
    assert_eq!(seen.per_source.get(&b), Some(&3), "{:?}", seen.per_source);
}
