//! Reading a DNS reply: what it says about the one question asked, how long
//! that may be believed, and in which order to try the MX hosts it names.
//!
//! Pure functions over hickory `Message`s: no I/O, no clock, no awaits. A
//! reply is data from the network, so nothing here may panic on it; every
//! walk over its records is bounded by the reply's own size (at most 64 KiB)
//! and the constants below.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::IpAddr;
use std::time::Duration;

/// The most CNAME hops followed inside one answer.
pub const CNAME_CHAIN_MAX: usize = 8;
/// The most MX records kept from one answer, lowest preferences first. Each
/// costs up to two queries, so a hostile answer must not name thousands.
pub const MX_RECORDS_MAX: usize = 64;
/// The most MX hosts handed to delivery (RFC 5321 5.1 lets a client cap
/// how many it tries).
pub const MX_HOSTS_MAX: usize = 16;
/// Bounds on how long a positive answer is kept.
pub const POSITIVE_TTL_MIN: Duration = Duration::from_secs(1);
pub const POSITIVE_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Bounds on how long a negative answer is kept (RFC 2308 section 5), and
/// the time used when the reply carries no SOA to say.
pub const NEGATIVE_TTL_MIN: Duration = Duration::from_secs(1);
pub const NEGATIVE_TTL_MAX: Duration = Duration::from_secs(3600);
pub const NEGATIVE_TTL_DEFAULT: Duration = Duration::from_secs(300);

/// What a reply says about one (name, type) question; this is what the
/// cache keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// MX records, lowest preferences first, at most [`MX_RECORDS_MAX`].
    Mx(Vec<MxHost>),
    /// An MX with the root as exchange: the domain takes no mail (RFC 7505).
    NullMx,
    /// A or AAAA addresses, as asked.
    Addrs(Vec<IpAddr>),
    NxDomain,
    /// The name exists but has no record of the type asked.
    NoData,
    /// The name is an alias (CNAME) of this name, whose records the reply
    /// did not carry: ask again about the target. (unbound answers so for
    /// a CNAME in its local data.)
    Alias(Name),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MxHost {
    pub(crate) preference: u16,
    pub(crate) name: Name,
    /// Addresses of `name` found in the reply's additional section, IPv4
    /// first; empty when the reply carried none.
    pub(crate) glue: Vec<IpAddr>,
}

/// Reads a NOERROR or NXDOMAIN reply to `qname`/`qtype` (the caller has
/// checked the response code and matched the question). Returns the answer
/// and how long to keep it, or a diagnostic when the reply cannot be used.
pub(crate) fn interpret(
    reply: &Message,
    qname: &Name,
    qtype: RecordType,
) -> Result<(Answer, Duration), String> {
    let (owner, chain_ttl) = follow_cnames(&reply.answers, qname, qtype)?;
    if reply.response_code == ResponseCode::NXDomain {
        return Ok((Answer::NxDomain, negative_ttl(reply)));
    }
    let records: Vec<&Record> = reply
        .answers
        .iter()
        .filter(|r| r.name == *owner && r.record_type() == qtype)
        .collect();
    let Some(records_ttl) = records.iter().map(|r| r.ttl).min() else {
        if owner != qname {
            return Ok((Answer::Alias(owner.clone()), positive_ttl(chain_ttl)));
        }
        return Ok((Answer::NoData, negative_ttl(reply)));
    };
    let ttl = records_ttl.min(chain_ttl);
    match qtype {
        RecordType::MX => Ok(mx_answer(reply, &records, ttl)),
        RecordType::A | RecordType::AAAA => {
            let addrs = records.iter().filter_map(|r| address(r)).collect();
            Ok((Answer::Addrs(addrs), positive_ttl(ttl)))
        }
        other => Err(format!("no reading for {other} answers")),
    }
}

/// Follows CNAMEs from `qname` within `answers` to the name that holds the
/// records asked for. Returns that name and the lowest TTL of the CNAMEs
/// followed (u32::MAX when none).
fn follow_cnames<'a>(
    answers: &'a [Record],
    qname: &'a Name,
    qtype: RecordType,
) -> Result<(&'a Name, u32), String> {
    let mut owner = qname;
    let mut ttl = u32::MAX;
    for _ in 0..=CNAME_CHAIN_MAX {
        if answers
            .iter()
            .any(|r| r.name == *owner && r.record_type() == qtype)
        {
            return Ok((owner, ttl));
        }
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == *owner => Some((&target.0, r.ttl)),
            _ => None,
        });
        let Some((target, hop_ttl)) = next else {
            return Ok((owner, ttl));
        };
        owner = target;
        ttl = ttl.min(hop_ttl);
    }
    // Longer chains are loops or abuse; a resolver would SERVFAIL them too.
    Err(format!(
        "CNAME chain from {qname} longer than {CNAME_CHAIN_MAX}"
    ))
}

/// The MX records of an answer, with glue from the additional section.
fn mx_answer(reply: &Message, records: &[&Record], ttl: u32) -> (Answer, Duration) {
    let mut hosts = Vec::new();
    for record in records {
        let RData::MX(mx) = &record.data else {
            continue;
        };
        // RFC 7505: a root exchange means no mail, whatever else is listed.
        if mx.exchange.is_root() {
            return (Answer::NullMx, positive_ttl(ttl));
        }
        hosts.push(MxHost {
            preference: mx.preference,
            name: mx.exchange.clone(),
            glue: Vec::new(),
        });
    }
    hosts.sort_by_key(|h| h.preference);
    hosts.truncate(MX_RECORDS_MAX);
    let mut ttl = ttl;
    for host in &mut hosts {
        for record in reply.additionals.iter().filter(|r| r.name == host.name) {
            if let Some(addr) = address(record) {
                host.glue.push(addr);
                ttl = ttl.min(record.ttl);
            }
        }
        // Delivery tries addresses in order; IPv4 first, as for queries.
        host.glue.sort_by_key(|a| a.is_ipv6());
    }
    (Answer::Mx(hosts), positive_ttl(ttl))
}

fn address(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// How long a positive answer is kept: its lowest TTL, within bounds.
pub(crate) fn positive_ttl(ttl_secs: u32) -> Duration {
    Duration::from_secs(u64::from(ttl_secs)).clamp(POSITIVE_TTL_MIN, POSITIVE_TTL_MAX)
}

/// How long a negative answer is kept: the lower of the SOA's minimum and
/// its own TTL (RFC 2308 section 5), within bounds.
pub(crate) fn negative_ttl(reply: &Message) -> Duration {
    let soa = reply.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.minimum.min(r.ttl)),
        _ => None,
    });
    match soa {
        Some(secs) => {
            Duration::from_secs(u64::from(secs)).clamp(NEGATIVE_TTL_MIN, NEGATIVE_TTL_MAX)
        }
        None => NEGATIVE_TTL_DEFAULT,
    }
}

/// The MX hosts in the order to try: preference ascending, random among
/// equal preferences (RFC 5321 5.1), each host once, at most
/// [`MX_HOSTS_MAX`].
pub(crate) fn order_mx(hosts: &[MxHost], rng: &mut fastrand::Rng) -> Vec<MxHost> {
    let mut hosts = hosts.to_vec();
    rng.shuffle(&mut hosts);
    // A stable sort keeps the shuffled order among equal preferences.
    hosts.sort_by_key(|h| h.preference);
    let mut ordered: Vec<MxHost> = Vec::with_capacity(hosts.len().min(MX_HOSTS_MAX));
    for host in hosts {
        if ordered.len() == MX_HOSTS_MAX {
            break;
        }
        // A host listed twice is tried once, at its best preference.
        if !ordered.iter().any(|h| h.name == host.name) {
            ordered.push(host);
        }
    }
    ordered
}

/// A name as spate spells it: lower-cased ASCII (IDNA A-labels), without
/// the root's trailing dot. The root itself is "".
pub(crate) fn host_string(name: &Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
