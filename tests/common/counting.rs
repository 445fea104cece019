//! A destination for shaping tests: it accepts everything (PIPELINING),
//! holds each final reply for a while, can refuse RCPTs with a reply of
//! the test's choice, and records what a shaping limit is judged by:
//! connections at once, transactions per connection, recipients per
//! transaction, when each message arrived and which local address each
//! connection came from.

use super::{free_addr, Spate, Unbound};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the counting sink saw.
#[derive(Default, Debug)]
pub struct Seen {
    pub open: usize,
    pub max_open: usize,
    /// Transactions of each connection, once it closed.
    pub per_connection: Vec<usize>,
    pub recipients_per_transaction: Vec<usize>,
    pub arrivals: Vec<Instant>,
    pub recipients: Vec<String>,
    /// When RCPTs were refused for being over the capacity per second.
    pub refused: Vec<Instant>,
    /// Messages by the address the connection came from, and the EHLO
    /// name each address gave.
    pub per_source: std::collections::BTreeMap<std::net::IpAddr, usize>,
    /// By the address connections came from: open now, most open at once,
    /// and when each message arrived.
    pub open_by_source: std::collections::BTreeMap<std::net::IpAddr, usize>,
    pub max_open_by_source: std::collections::BTreeMap<std::net::IpAddr, usize>,
    pub arrivals_by_source: std::collections::BTreeMap<std::net::IpAddr, Vec<Instant>>,
    pub ehlo: std::collections::BTreeMap<std::net::IpAddr, String>,
}

/// A destination that accepts everything (PIPELINING), holds each final
/// reply for `hold`, and counts. It can refuse the first RCPTs it gets
/// with a reply of the test's choice.
pub struct CountingMx {
    pub addr: String,
    pub seen: Arc<Mutex<Seen>>,
}

/// The first `count` RCPTs (all connections together) get `reply`; and
/// with `per_second`, every RCPT while the sink has taken that many
/// messages in the last second gets it too.
#[derive(Clone, Copy)]
pub struct Refusals {
    pub count: usize,
    pub reply: &'static str,
    pub per_second: Option<usize>,
}

impl CountingMx {
    pub fn start(hold: Duration) -> CountingMx {
        CountingMx::refusing(
            hold,
            Refusals {
                count: 0,
                reply: "",
                per_second: None,
            },
        )
    }

    pub fn refusing(hold: Duration, refusals: Refusals) -> CountingMx {
        let listener = std::net::TcpListener::bind(free_addr()).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let left = Arc::new(std::sync::atomic::AtomicUsize::new(refusals.count));
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (s, left) = (s.clone(), left.clone());
                std::thread::spawn(move || counting_session(stream, hold, &s, &left, refusals));
            }
        });
        CountingMx { addr, seen }
    }

    pub fn delivered(&self) -> usize {
        self.seen.lock().unwrap().recipients.len()
    }
}

fn counting_session(
    stream: TcpStream,
    hold: Duration,
    seen: &Mutex<Seen>,
    refusals_left: &std::sync::atomic::AtomicUsize,
    refusals: Refusals,
) {
    let Ok(peer) = stream.peer_addr().map(|a| a.ip()) else {
        return;
    };
    // Replies go out at once: with Nagle's algorithm, a reply written
    // while the previous one waits for its ACK sits out the client's
    // delayed ACK (40 ms a message).
    let _ = stream.set_nodelay(true);
    {
        let mut s = seen.lock().unwrap();
        s.open += 1;
        s.max_open = s.max_open.max(s.open);
        let open = s.open_by_source.entry(peer).or_default();
        *open += 1;
        let open = *open;
        let max = s.max_open_by_source.entry(peer).or_default();
        *max = (*max).max(open);
    }
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let _ = w.write_all(b"220 counting.mx ESMTP\r\n");
    let (mut line, mut rcpts, mut in_data, mut transactions) =
        (String::new(), Vec::new(), false, 0);
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        let cmd = line.trim_end().to_string();
        line.clear();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if in_data {
            if cmd != "." {
                continue;
            }
            in_data = false;
            std::thread::sleep(hold);
            transactions += 1;
            let mut s = seen.lock().unwrap();
            s.arrivals.push(Instant::now());
            s.recipients_per_transaction.push(rcpts.len());
            *s.per_source.entry(peer).or_default() += 1;
            s.arrivals_by_source
                .entry(peer)
                .or_default()
                .push(Instant::now());
            s.recipients.append(&mut rcpts);
            b"250 2.0.0 queued\r\n"
        } else if upper.starts_with("EHLO") {
            let name = cmd.get(5..).unwrap_or("").to_string();
            seen.lock().unwrap().ehlo.insert(peer, name);
            b"250-counting.mx\r\n250 PIPELINING\r\n"
        } else if upper.starts_with("RCPT TO:<") {
            use std::sync::atomic::Ordering::SeqCst;
            let over_capacity = refusals.per_second.is_some_and(|max| {
                let mut s = seen.lock().unwrap();
                let recent = s
                    .arrivals
                    .iter()
                    .rev()
                    .take_while(|t| t.elapsed() < Duration::from_secs(1))
                    .count();
                if recent >= max {
                    s.refused.push(Instant::now());
                }
                recent >= max
            });
            let refuse = over_capacity
                || refusals_left
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if refuse {
                let _ = w.write_all(format!("{}\r\n", refusals.reply).as_bytes());
                continue;
            }
            rcpts.push(cmd[9..cmd.len() - 1].to_string());
            b"250 2.1.5 ok\r\n"
        } else if upper == "DATA" && rcpts.is_empty() {
            b"554 5.5.1 no valid recipients\r\n"
        } else if upper == "DATA" {
            in_data = true;
            b"354 go\r\n"
        } else if upper == "QUIT" {
            // Counted closed before the 221: once the client has it, it may
            // open its next connection at once.
            close(seen, peer, transactions);
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            rcpts.clear();
            b"250 ok\r\n"
        };
        if w.write_all(reply).is_err() {
            break;
        }
    }
    close(seen, peer, transactions);
}

fn close(seen: &Mutex<Seen>, peer: std::net::IpAddr, transactions: usize) {
    let mut s = seen.lock().unwrap();
    s.open -= 1;
    *s.open_by_source.entry(peer).or_default() -= 1;
    s.per_connection.push(transactions);
}

/// Writes a file of its own; returns its path.
pub fn file(name: &str, text: &str) -> String {
    let path = tempfile::tempdir().unwrap().keep().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The most of `arrivals` (in order) that fall within any one second.
pub fn most_in_a_second(arrivals: &[Instant]) -> usize {
    (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|t| **t - arrivals[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Injects `count` one-recipient messages for `to`.
pub fn send(spate: &Spate, to: &str, count: usize) {
    let mut smtp = spate.connect();
    for i in 0..count {
        smtp.transaction(
            "s@a.test",
            &[to],
            format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(),
        );
    }
}
/// Sends `signal` ("-HUP", "-USR2") to the running spate.
pub fn signal_spate(spate: &Spate, signal: &str) {
    let pid = spate.child.as_ref().unwrap().id().to_string();
    assert!(std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
}

/// unbound publishing an MX host under `.bigmail.test` for each of
/// `domains`, all at `mx`'s address, and a two-core spate that asks it and
/// shapes by `rules`.
pub fn provider_spate(mx: &CountingMx, domains: &[String], rules: &str) -> (Unbound, Spate) {
    provider_spate_with(mx, domains, rules, "")
}

/// [`provider_spate`] with more `[delivery]` settings (lines of TOML).
pub fn provider_spate_with(
    mx: &CountingMx,
    domains: &[String],
    rules: &str,
    delivery: &str,
) -> (Unbound, Spate) {
    let (mx_ip, mx_port) = mx.addr.rsplit_once(':').unwrap();
    let mut zone = String::from("  local-zone: \"test.\" static\n");
    for (i, d) in domains.iter().enumerate() {
        zone += &format!("  local-data: \"{d}. 300 IN MX 10 mx{i}.bigmail.test.\"\n  local-data: \"mx{i}.bigmail.test. 300 IN A {mx_ip}\"\n");
    }
    let dns = Unbound::start(&zone);
    let cfg = file(
        "c.toml",
        &format!("[delivery]\nmx_port = {mx_port}\n{delivery}"),
    );
    let args = [
        "--cores",
        "2",
        "--dns",
        &dns.addr,
        "--config",
        &cfg,
        "--shaping",
        rules,
    ];
    let spate = Spate::start(&args);
    (dns, spate)
}

/// `per_core` domains that each core of a two-core spate owns (picked
/// with spate's own ownership function), named PREFIX0.test, PREFIX1.test...
pub fn domains_on_each_core(prefix: &str, per_core: usize) -> Vec<String> {
    (0..2)
        .flat_map(|core| {
            (0..)
                .map(move |i| format!("{prefix}{i}.test"))
                .filter(move |d| spate::router::owner_of(d, 2) == core)
                .take(per_core)
        })
        .collect()
}

/// Checks that the run's first `Backoff` record starts with `prefix`.
pub fn assert_first_backoff(spate: &Spate, prefix: &str) {
    let backoff = super::log_of(&spate.log_dir(), "Backoff").swap_remove(0);
    let response = backoff["response"].as_str().unwrap();
    assert!(response.starts_with(prefix), "{backoff}");
}
