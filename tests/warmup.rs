//! Warm-up plans against the binary, observed at the destination: a
//! counting sink records which local address each message came from.
//! Days pass through the manual warm-up calendar (`delivery.warmup_clock =
//! "manual"`, SIGUSR2 ends a day), each change awaited on spate's stderr.

mod common;
use common::counting::*;
use common::*;
use std::net::IpAddr;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Ends the warm-up day and waits until spate says `day` began.
fn end_day(spate: &Spate, day: u32) {
    signal_spate(spate, "-USR2");
    spate.wait_for_log(&format!("warm-up day {day} begins"), LONG);
}

/// A warming source whose plan keeps its overflow queued, sending to a
/// provider's domain found through real DNS (unbound):
/// - day 0: 5 messages, all sent (plan day 1: 5);
/// - day 1: nothing to send, so it is not a sending day;
/// - day 2: 30 injected, 10 sent (plan day 2: 10), 20 wait;
/// - a restart keeps the progress (the state file in the spool);
/// - day 3: past the plan, the source is warm: the 20 go.
///
/// Every message comes from the warming source's address.
#[test]
fn a_warming_source_sends_its_volume_per_sending_day_and_the_rest_waits() {
    let mx = CountingMx::start(Duration::ZERO);
    let domains = vec!["warm.test".to_string()];
    let rules = file(
        "s.toml",
        "[default]\npool = \"p\"\n\n[provider.bigmail]\nmx_suffix = [\".bigmail.test\"]\n\n[source.w]\naddress = \"127.0.0.211\"\nwarmup = \"plan\"\n\n[pool.p]\nsources = { w = 1 }\n\n[warmup.plan]\ndaily = [5, 10]\noverflow = \"queue\"\n",
    );
    let (_dns, mut spate) =
        provider_spate_with(&mx, &domains, &rules, "warmup_clock = \"manual\"\n");
    send(&spate, "r@warm.test", 5);
    wait_until(LONG, "day 1's 5 messages", || mx.delivered() == 5);
    end_day(&spate, 1);
    end_day(&spate, 2);
    send(&spate, "r@warm.test", 30);
    wait_until(LONG, "day 2's 10 messages", || mx.delivered() == 15);
    assert_eq!(spate.stop(), 0);
    assert_eq!(mx.delivered(), 15, "the other 20 waited");
    let full = log_of(&spate.log_dir(), "Warmup");
    let said: Vec<&str> = full
        .iter()
        .map(|r| r["response"].as_str().unwrap())
        .collect();
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        said[1].starts_with("source w sent its 10 messages of sending day 2 of warm-up plan plan to provider bigmail; more today waits in the queue"),
        "{said:?}"
    );
    assert_eq!(full[1]["source"], "w");

    spate.launch();
    spate.wait_for_log("spate: ready", LONG);
    assert_eq!(mx.delivered(), 15, "still day 2 after the restart");
    end_day(&spate, 3);
    wait_until(LONG, "the 20 that waited", || mx.delivered() == 35);
    assert_eq!(spate.stop(), 0);
    let seen = mx.seen.lock().unwrap();
    assert_eq!(
        seen.per_source.keys().collect::<Vec<_>>(),
        [&ip("127.0.0.211")]
    );
    assert_eq!(seen.arrivals.len(), 35, "each message once");
}

/// A warming source over its volume overflows to the pool its plan names;
/// a throttling reply from the destination to the warming source holds it
/// on its plan day. Smarthost delivery: the destination is in no provider
/// rule, so it counts as "(other)".
/// - day 0: the first RCPT gets "421 rate limited" (a throttle rule), so
///   the source is held; of 10 messages it takes 3 (plan day 1), one of
///   them refused; the other 7, and the refused one's retry, go from the
///   overflow pool;
/// - day 1: still plan day 1 (held): 3 of 10 more from the warming source,
///   not 6.
#[test]
fn overflow_goes_to_the_named_pool_and_a_throttle_holds_the_day() {
    let mx = CountingMx::refusing(
        Duration::ZERO,
        Refusals {
            count: 1,
            reply: "421 4.7.0 rate limited, slow down",
            per_second: None,
        },
    );
    let rules = file(
        "s.toml",
        "[default]\npool = \"fresh\"\nretry = [\"1s\"]\n\n[[default.on_response]]\nmatch = 'rate limited'\naction = \"throttle\"\nduration = \"1s\"\n\n[source.w]\naddress = \"127.0.0.212\"\nwarmup = \"plan\"\n[source.m]\naddress = \"127.0.0.213\"\n\n[pool.fresh]\nsources = { w = 1 }\n[pool.main]\nsources = { m = 1 }\n\n[warmup.plan]\ndaily = [3, 6]\noverflow = \"main\"\n",
    );
    let cfg = file("c.toml", "[delivery]\nwarmup_clock = \"manual\"\n");
    let mut spate = Spate::start(&[
        "--smarthost",
        &mx.addr,
        "--shaping",
        &rules,
        "--config",
        &cfg,
    ]);
    send(&spate, "r@d.test", 10);
    wait_until(LONG, "day 0's 10 messages", || mx.delivered() == 10);
    end_day(&spate, 1);
    send(&spate, "r@d.test", 10);
    wait_until(LONG, "day 1's 10 messages", || mx.delivered() == 20);
    assert_eq!(spate.stop(), 0);
    let backoff = log_of(&spate.log_dir(), "Backoff").swap_remove(0);
    assert!(
        backoff["response"]
            .as_str()
            .unwrap()
            .contains("source w held on sending day 1 of warm-up plan plan for provider (other)"),
        "{backoff}"
    );
    let seen = mx.seen.lock().unwrap();
    let (w, m) = (ip("127.0.0.212"), ip("127.0.0.213"));
    assert_eq!(seen.per_source[&w], 2 + 3, "{:?}", seen.per_source);
    assert_eq!(seen.per_source[&m], 8 + 7, "{:?}", seen.per_source);
}
