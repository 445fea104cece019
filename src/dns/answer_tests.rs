//! Unit tests of answer reading on hand-built replies.

use super::*;
use hickory_proto::op::{MessageType, OpCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn reply(code: ResponseCode) -> Message {
    let mut m = Message::new(7, MessageType::Response, OpCode::Query);
    m.metadata.response_code = code;
    m
}

fn mx(owner: &str, ttl: u32, preference: u16, exchange: &str) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::MX(MX::new(preference, name(exchange))),
    )
}

fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(ip.into())))
}

fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip.parse().unwrap())))
}

fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

fn soa(owner: &str, ttl: u32, minimum: u32) -> Record {
    let data = SOA::new(
        name("ns.test."),
        name("admin.test."),
        1,
        60,
        60,
        60,
        minimum,
    );
    Record::from_rdata(name(owner), ttl, RData::SOA(data))
}

fn hosts(answer: &Answer) -> Vec<(u16, String, Vec<IpAddr>)> {
    let Answer::Mx(hosts) = answer else {
        panic!("expected MX hosts, got {answer:?}");
    };
    hosts
        .iter()
        .map(|h| (h.preference, host_string(&h.name), h.glue.clone()))
        .collect()
}

#[test]
fn mx_records_with_glue_and_lowest_ttl() {
    let mut m = reply(ResponseCode::NoError);
    m.add_answer(mx("Example.TEST.", 600, 20, "mx2.example.test."));
    m.add_answer(mx("example.test.", 500, 10, "MX1.example.test."));
    m.add_additional(aaaa("mx1.example.test.", 900, "2001:db8::1"));
    m.add_additional(a("mx1.example.test.", 100, [192, 0, 2, 1]));
    let (answer, ttl) = interpret(&m, &name("example.test."), RecordType::MX).unwrap();
    let v4: IpAddr = [192, 0, 2, 1].into();
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        hosts(&answer),
        vec![
            (10, "mx1.example.test".to_string(), vec![v4, v6]),
            (20, "mx2.example.test".to_string(), vec![]),
        ]
    );
    assert_eq!(
        ttl,
        Duration::from_secs(100),
        "glue used counts toward the TTL"
    );
}

#[test]
fn root_exchange_is_null_mx_even_among_others() {
    let mut m = reply(ResponseCode::NoError);
    m.add_answer(mx("example.test.", 300, 0, "."));
    let (answer, _) = interpret(&m, &name("example.test."), RecordType::MX).unwrap();
    assert_eq!(answer, Answer::NullMx);
    m.add_answer(mx("example.test.", 300, 10, "mx.example.test."));
    let (answer, _) = interpret(&m, &name("example.test."), RecordType::MX).unwrap();
    assert_eq!(answer, Answer::NullMx);
}

#[test]
fn nxdomain_and_nodata_use_the_soa_minimum() {
    let mut m = reply(ResponseCode::NXDomain);
    m.add_authority(soa("test.", 900, 120));
    let (answer, ttl) = interpret(&m, &name("none.test."), RecordType::MX).unwrap();
    assert_eq!((answer, ttl), (Answer::NxDomain, Duration::from_secs(120)));

    let mut m = reply(ResponseCode::NoError);
    m.add_authority(soa("test.", 60, 86400));
    let (answer, ttl) = interpret(&m, &name("a.test."), RecordType::MX).unwrap();
    assert_eq!(answer, Answer::NoData);
    assert_eq!(ttl, Duration::from_secs(60), "the SOA's own TTL caps it");

    let mut m = reply(ResponseCode::NoError);
    m.add_authority(soa("test.", 999_999, 999_999));
    let (_, ttl) = interpret(&m, &name("a.test."), RecordType::MX).unwrap();
    assert_eq!(ttl, NEGATIVE_TTL_MAX);

    let m = reply(ResponseCode::NoError);
    let (answer, ttl) = interpret(&m, &name("a.test."), RecordType::A).unwrap();
    assert_eq!((answer, ttl), (Answer::NoData, NEGATIVE_TTL_DEFAULT));
}

#[test]
fn records_of_other_names_and_types_are_not_the_answer() {
    let mut m = reply(ResponseCode::NoError);
    m.add_answer(a("other.test.", 300, [192, 0, 2, 9]));
    m.add_answer(mx("a.test.", 300, 10, "mx.test."));
    let (answer, _) = interpret(&m, &name("a.test."), RecordType::A).unwrap();
    assert_eq!(answer, Answer::NoData);
}

#[test]
fn cname_chain_is_followed_within_the_answer() {
    let mut m = reply(ResponseCode::NoError);
    m.add_answer(cname("www.test.", 50, "web.test."));
    m.add_answer(cname("web.test.", 3000, "host.test."));
    m.add_answer(a("host.test.", 600, [192, 0, 2, 7]));
    m.add_answer(a("decoy.test.", 1, [192, 0, 2, 8]));
    let (answer, ttl) = interpret(&m, &name("www.test."), RecordType::A).unwrap();
    assert_eq!(answer, Answer::Addrs(vec![[192, 0, 2, 7].into()]));
    assert_eq!(ttl, Duration::from_secs(50), "the CNAMEs' TTL counts");
}

#[test]
fn cname_without_target_records_is_an_alias_and_a_loop_is_an_error() {
    let mut m = reply(ResponseCode::NoError);
    m.add_answer(cname("www.test.", 500, "web.test."));
    m.add_answer(cname("web.test.", 50, "host.test."));
    let (answer, ttl) = interpret(&m, &name("www.test."), RecordType::A).unwrap();
    assert_eq!(answer, Answer::Alias(name("host.test.")));
    assert_eq!(ttl, Duration::from_secs(50));

    let mut m = reply(ResponseCode::NXDomain);
    m.add_answer(cname("www.test.", 50, "gone.test."));
    let (answer, _) = interpret(&m, &name("www.test."), RecordType::A).unwrap();
    assert_eq!(answer, Answer::NxDomain, "the rcode speaks of the target");

    let mut m = reply(ResponseCode::NoError);
    m.add_answer(cname("x.test.", 50, "y.test."));
    m.add_answer(cname("y.test.", 50, "x.test."));
    let err = interpret(&m, &name("x.test."), RecordType::A).unwrap_err();
    assert!(err.contains("CNAME chain"), "{err}");
}

#[test]
fn ttls_are_bounded() {
    assert_eq!(positive_ttl(0), POSITIVE_TTL_MIN);
    assert_eq!(positive_ttl(u32::MAX), POSITIVE_TTL_MAX);
    assert_eq!(positive_ttl(42), Duration::from_secs(42));
}

fn host(preference: u16, n: &str) -> MxHost {
    MxHost {
        preference,
        name: name(n),
        glue: Vec::new(),
    }
}

#[test]
fn mx_order_is_by_preference_and_random_among_equals() {
    let all = vec![
        host(20, "c.test."),
        host(10, "a.test."),
        host(30, "d.test."),
        host(10, "b.test."),
    ];
    let mut seen_first = std::collections::HashSet::new();
    for seed in 0..64 {
        let ordered = order_mx(&all, &mut fastrand::Rng::with_seed(seed));
        let prefs: Vec<u16> = ordered.iter().map(|h| h.preference).collect();
        assert_eq!(prefs, vec![10, 10, 20, 30]);
        seen_first.insert(host_string(&ordered[0].name));
    }
    assert_eq!(seen_first.len(), 2, "both preference-10 hosts come first");
}

#[test]
fn mx_order_lists_a_host_once_and_is_bounded() {
    let mut all = vec![host(20, "a.test."), host(10, "A.test.")];
    for i in 0..100 {
        all.push(host(50, &format!("h{i}.test.")));
    }
    let ordered = order_mx(&all, &mut fastrand::Rng::with_seed(1));
    assert_eq!(ordered.len(), MX_HOSTS_MAX);
    assert_eq!(ordered[0].preference, 10);
    assert!(ordered[1..].iter().all(|h| h.preference == 50));
}

#[test]
fn host_string_is_lower_case_without_the_root_dot() {
    assert_eq!(host_string(&name("MX.Example.TEST.")), "mx.example.test");
    assert_eq!(host_string(&name("mx.example.test")), "mx.example.test");
    assert_eq!(host_string(&Name::root()), "");
}
