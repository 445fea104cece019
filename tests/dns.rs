//! The DNS stub resolver against a real DNS server: Debian's unbound,
//! started by each test on its own loopback address with test zones under
//! `test.` given as local data. A missing unbound fails the tests (never a
//! skip): `apt-get install unbound`.
//!
//! Covers MX order and addresses, null MX, implicit MX, NXDOMAIN, MX hosts
//! without addresses, a truncated or oversized UDP answer retried over TCP, SERVFAIL,
//! timeouts, server failover and the cache.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use spate::dns::{DnsError, Resolver, Target};
use std::future::Future;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

const UNBOUND: &str = "/usr/sbin/unbound";
/// A fixed high port; each server gets its own loopback address instead.
const PORT: u16 = 53053;
/// How long unbound may take to start; generous, for a machine busy with
/// more than this suite (the common harness gives it as long).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_millis(500);
const ATTEMPTS: u32 = 2;
/// How many A records `many.test` has: far more than 1232 bytes of UDP.
const MANY: u8 = 100;

/// The test zones; `{many}` is replaced by the 100 A records of many.test.
const ZONES: &str = r#"
  local-zone: "test." static
  local-data: "multi.test. 300 IN MX 10 mx-a.multi.test."
  local-data: "multi.test. 300 IN MX 10 mx-b.multi.test."
  local-data: "multi.test. 300 IN MX 20 mx-c.multi.test."
  local-data: "mx-a.multi.test. 300 IN A 127.0.0.11"
  local-data: "mx-b.multi.test. 300 IN AAAA 2001:db8::12"
  local-data: "mx-b.multi.test. 300 IN A 127.0.0.12"
  local-data: "mx-c.multi.test. 300 IN A 127.0.0.13"
  local-data: "nullmx.test. 300 IN MX 0 ."
  local-data: "implicit.test. 300 IN A 127.0.0.21"
  local-data: "noaddr.test. 300 IN MX 10 mx.noaddr.test."
  local-data: "nomail.test. 300 IN TXT \"v=spf1 -all\""
  local-data: "partial.test. 300 IN MX 5 gone.partial.test."
  local-data: "partial.test. 300 IN MX 10 mx.partial.test."
  local-data: "mx.partial.test. 300 IN A 127.0.0.31"
  local-data: "alias.test. 300 IN CNAME implicit.test."
{many}
# unbound never asks loopback servers (do-not-query-localhost defaults to
# yes), so a forward to one leaves it no server at all: an immediate SERVFAIL.
forward-zone:
  name: "dead-tld."
  forward-addr: 127.0.0.254@9
"#;

/// A running unbound; killed on drop.
struct Unbound {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Unbound {
    fn start() -> Unbound {
        assert!(
            std::path::Path::new(UNBOUND).exists(),
            "{UNBOUND} is not installed; the DNS tests need it (apt-get install unbound)"
        );
        let addr = server_addr();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("unbound.conf");
        std::fs::write(&conf, config(addr, dir.path())).unwrap();
        // unbound logs to stderr (logfile ""); keep it for failure messages.
        let log = std::fs::File::create(dir.path().join("unbound.log")).unwrap();
        let child = Command::new(UNBOUND)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start unbound");
        let mut unbound = Unbound {
            child: Some(child),
            addr,
            dir,
        };
        unbound.wait_ready();
        unbound
    }

    /// Polls with a plain blocking query until unbound answers.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("unbound exited at start ({status}):\n{}", self.log());
            }
            if udp_query(self.addr, "implicit.test.", RecordType::A).is_some() {
                return;
            }
        }
        panic!(
            "unbound did not answer on {} within {READY_TIMEOUT:?}:\n{}",
            self.addr,
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One query with EDNS0 (1232 bytes) over plain blocking UDP, outside the
/// resolver: the reply, if one came within 50 ms.
fn udp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Option<Message> {
    let socket = UdpSocket::bind((server.ip(), 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut query = Message::new(1, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    query.set_edns(edns);
    socket.send_to(&query.to_vec().unwrap(), server).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

/// A loopback address of its own per test process and server.
fn server_addr() -> SocketAddr {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let ip = IpAddr::from([127, 53, (pid % 250) as u8 + 1, n]);
    SocketAddr::new(ip, PORT)
}

fn config(addr: SocketAddr, dir: &std::path::Path) -> String {
    let many: String = (1..=MANY)
        .map(|i| format!("  local-data: \"many.test. 300 IN A 127.0.1.{i}\"\n"))
        .collect();
    let server = format!(
        r#"server:
  interface: {ip}
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  # Room for the burst of concurrent_queries_each_get_their_reply even when
  # the other tests keep the machine busy: a dropped query would time out.
  so-rcvbuf: 8m
  num-queries-per-thread: 4096
"#,
        ip = addr.ip(),
        port = addr.port(),
        dir = dir.display(),
    );
    server + &ZONES.replace("{many}", &many)
}

/// Runs `f` on a glommio executor of its own thread and returns its output.
fn run<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn resolver(servers: Vec<SocketAddr>) -> Resolver {
    Resolver::new(servers, TIMEOUT, ATTEMPTS, 1024)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn target(host: &str, preference: u16, addrs: &[&str]) -> Target {
    Target {
        host: host.to_string(),
        preference,
        addrs: addrs.iter().map(|a| ip(a)).collect(),
    }
}

#[test]
fn mx_hosts_in_order_with_their_addresses() {
    let server = Unbound::start();
    let addr = server.addr;
    run(move || async move {
        let r = resolver(vec![addr]);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..32 {
            let targets = r.mx_targets("Multi.TEST.").await.unwrap();
            assert_eq!(targets.len(), 3, "{targets:?}");
            let mut best: Vec<Target> = targets[..2].to_vec();
            best.sort_by(|a, b| a.host.cmp(&b.host));
            assert_eq!(
                best,
                vec![
                    target("mx-a.multi.test", 10, &["127.0.0.11"]),
                    target("mx-b.multi.test", 10, &["127.0.0.12", "2001:db8::12"]),
                ],
                "IPv4 first"
            );
            assert_eq!(targets[2], target("mx-c.multi.test", 20, &["127.0.0.13"]));
            firsts.insert(targets[0].host.clone());
        }
        assert_eq!(firsts.len(), 2, "equal preferences come in random order");

        let partial = r.mx_targets("partial.test").await.unwrap();
        assert_eq!(
            partial,
            vec![target("mx.partial.test", 10, &["127.0.0.31"])]
        );
    });
}

#[test]
fn permanent_answers() {
    let server = Unbound::start();
    let addr = server.addr;
    run(move || async move {
        let r = resolver(vec![addr]);
        assert_eq!(r.mx_targets("nullmx.test").await, Err(DnsError::NullMx));
        assert_eq!(r.mx_targets("nowhere.test").await, Err(DnsError::NxDomain));
        // An MX host without an address is a DNS mistake that may be fixed:
        // mail waits for it rather than bouncing.
        assert_eq!(
            r.mx_targets("noaddr.test").await,
            Err(DnsError::NoExchangerAddress)
        );
        assert!(!DnsError::NoExchangerAddress.is_permanent());
        // A domain with neither MX nor address takes no mail (RFC 5321 5.1).
        assert_eq!(
            r.mx_targets("nomail.test").await,
            Err(DnsError::NoAddresses)
        );
        assert_eq!(r.addresses("nowhere.test").await, Err(DnsError::NxDomain));
        assert_eq!(r.mx_targets("").await, Err(DnsError::NxDomain));
        for e in [DnsError::NullMx, DnsError::NxDomain, DnsError::NoAddresses] {
            assert!(e.is_permanent());
        }
    });
}

#[test]
fn implicit_mx_cname_and_address_lookups() {
    let server = Unbound::start();
    let addr = server.addr;
    run(move || async move {
        let r = resolver(vec![addr]);
        let implicit = r.mx_targets("implicit.test").await.unwrap();
        assert_eq!(implicit, vec![target("implicit.test", 0, &["127.0.0.21"])]);
        let alias = r.addresses("alias.test").await.unwrap();
        assert_eq!(alias, vec![ip("127.0.0.21")], "CNAME followed");
        let alias_mx = r.mx_targets("alias.test").await.unwrap();
        assert_eq!(alias_mx, vec![target("alias.test", 0, &["127.0.0.21"])]);
        let literal = r.addresses("192.0.2.7").await.unwrap();
        assert_eq!(literal, vec![ip("192.0.2.7")]);
        let mx_b = r.addresses("MX-B.multi.test.").await.unwrap();
        assert_eq!(mx_b, vec![ip("127.0.0.12"), ip("2001:db8::12")]);
        let lit = r.mx_targets("[127.0.0.5]").await.unwrap();
        assert_eq!(lit, vec![target("[127.0.0.5]", 0, &["127.0.0.5"])]);
    });
}

#[test]
fn truncated_answer_is_asked_again_over_tcp() {
    let server = Unbound::start();
    let addr = server.addr;
    let udp = udp_query(addr, "many.test.", RecordType::A).expect("a UDP reply");
    assert!(
        udp.truncation,
        "the premise: {MANY} A records do not fit in UDP"
    );
    run(move || async move {
        let r = resolver(vec![addr]);
        let addrs = r.addresses("many.test").await.unwrap();
        assert_eq!(addrs.len(), usize::from(MANY));
        for i in 1..=MANY {
            assert!(addrs.contains(&IpAddr::from([127, 0, 1, i])), "127.0.1.{i}");
        }
    });
}

#[test]
fn concurrent_queries_each_get_their_reply() {
    // 400 questions in flight at once from one core: with ephemeral ports
    // shared between sockets, some replies would go to the wrong socket and
    // their questions would time out.
    let server = Unbound::start();
    let addr = server.addr;
    let started = Instant::now();
    run(move || async move {
        let r = std::rc::Rc::new(resolver(vec![addr]));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let r = r.clone();
                glommio::spawn_local(async move { r.addresses(&format!("n{i}.test")).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await, Err(DnsError::NxDomain));
        }
    });
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
}

#[test]
fn servfail_is_temporary() {
    let server = Unbound::start();
    let addr = server.addr;
    let started = Instant::now();
    let result = run(move || async move { resolver(vec![addr]).mx_targets("x.dead-tld").await });
    match result {
        Err(DnsError::Temporary(why)) => assert!(why.contains("SERVFAIL"), "{why}"),
        other => panic!("expected a temporary failure, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn silent_server_times_out_after_every_attempt() {
    // A socket that takes queries and never answers.
    let sink = UdpSocket::bind((server_addr().ip(), 0)).unwrap();
    let addr = sink.local_addr().unwrap();
    let started = Instant::now();
    let result = run(move || async move { resolver(vec![addr]).addresses("implicit.test").await });
    let elapsed = started.elapsed();
    match result {
        Err(DnsError::Temporary(why)) => assert!(why.contains("timed out"), "{why}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let budget = TIMEOUT * ATTEMPTS;
    assert!(elapsed >= budget, "gave up early: {elapsed:?}");
    assert!(elapsed < budget + Duration::from_secs(1), "{elapsed:?}");
    drop(sink);
}

#[test]
fn closed_port_fails_fast_and_the_next_server_answers() {
    let server = Unbound::start();
    let good = server.addr;
    // Nothing listens there: the kernel answers with port unreachable.
    let closed = SocketAddr::new(server_addr().ip(), PORT);
    let started = Instant::now();
    let (alone, with_good) = run(move || async move {
        let alone = resolver(vec![closed]).mx_targets("implicit.test").await;
        let both = resolver(vec![closed, good])
            .mx_targets("implicit.test")
            .await;
        (alone, both)
    });
    assert!(matches!(alone, Err(DnsError::Temporary(_))), "{alone:?}");
    assert_eq!(
        with_good,
        Ok(vec![target("implicit.test", 0, &["127.0.0.21"])])
    );
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
}

#[test]
fn answers_are_cached() {
    let mut server = Unbound::start();
    let addr = server.addr;
    run(move || async move {
        let r = resolver(vec![addr]);
        let first = r.mx_targets("multi.test").await.unwrap();
        let cached = r.cache_len();
        assert_eq!(cached, 7, "MX, and A and AAAA of three hosts");
        server.stop();
        // unbound is gone: only the cache can answer now.
        let again = r.mx_targets("MULTI.test.").await.unwrap();
        assert_eq!(r.cache_len(), cached);
        let hosts = |t: &[Target]| {
            let mut h: Vec<String> = t.iter().map(|t| t.host.clone()).collect();
            h.sort();
            h
        };
        assert_eq!(hosts(&again), hosts(&first));
        let mx_c = r.addresses("mx-c.multi.test").await;
        assert_eq!(mx_c, Ok(vec![ip("127.0.0.13")]));
        let uncached = r.addresses("implicit.test").await;
        assert!(
            matches!(uncached, Err(DnsError::Temporary(_))),
            "{uncached:?}"
        );
    });
}

/// A server that ignores the EDNS payload size: it sends a 4,800-octet
/// answer over UDP without setting TC (the kernel cuts it to our buffer),
/// and the same answer whole over TCP. The resolver asks again over TCP
/// instead of waiting for a reply that never fits.
#[test]
fn an_oversized_udp_answer_without_tc_is_asked_again_over_tcp() {
    use hickory_proto::rr::{rdata::A, RData, Record};
    use std::io::{Read, Write};
    const RECORDS: usize = 300;
    let addr = server_addr();
    let udp = UdpSocket::bind(addr).unwrap();
    let tcp = std::net::TcpListener::bind(addr).unwrap();
    let answer = |query: &Message| -> Vec<u8> {
        let mut reply = Message::new(query.id, MessageType::Response, OpCode::Query);
        reply.metadata.recursion_desired = true;
        reply.metadata.recursion_available = true;
        reply.add_query(query.queries[0].clone());
        if query.queries[0].query_type() == RecordType::A {
            for i in 0..RECORDS {
                let ip = std::net::Ipv4Addr::new(127, 0, 2 + (i / 250) as u8, 1 + (i % 250) as u8);
                let name = query.queries[0].name().clone();
                reply.add_answer(Record::from_rdata(name, 300, RData::A(A(ip))));
            }
        }
        reply.to_vec().unwrap()
    };
    let mut sample = Message::new(7, MessageType::Query, OpCode::Query);
    sample.add_query(Query::query(
        Name::from_ascii("big.test.").unwrap(),
        RecordType::A,
    ));
    assert!(
        answer(&sample).len() > 4096,
        "the premise: larger than any UDP reply taken"
    );
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let _ = udp.send_to(&answer(&query), from);
        }
    });
    std::thread::spawn(move || {
        for mut stream in tcp.incoming().map_while(Result::ok) {
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).is_err() {
                continue;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut query).is_err() {
                continue;
            }
            let reply = answer(&Message::from_vec(&query).unwrap());
            let _ = stream.write_all(&(reply.len() as u16).to_be_bytes());
            let _ = stream.write_all(&reply);
        }
    });
    let addrs = run(move || async move { resolver(vec![addr]).addresses("big.test").await });
    let addrs = addrs.expect("the answer, over TCP");
    assert_eq!(addrs.len(), RECORDS);
}
