//! The per-core DNS stub resolver: where to deliver mail for a domain (MX,
//! RFC 5321 section 5.1, null MX RFC 7505) and the addresses of a host.
//!
//! Each core owns one [`Resolver`] and its cache; nothing is shared between
//! cores, so it is `!Send` and uses `RefCell`s that are never held across an
//! await. It asks recursive resolvers (from resolv.conf or the config) and
//! never recurses itself. It must never block the thread and never call
//! getaddrinfo: every lookup goes through `transport` on glommio sockets
//! connected to socket addresses. It reads neither /etc/hosts nor
//! nsswitch: mail routing follows the DNS only.
//!
//! Failures are classified once, here: a domain that does not exist, takes
//! no mail or has no reachable address is permanent (bounce); anything the
//! network or a server might fix later is `Temporary` (retry), and is never
//! cached.
//!
//! Files: `answer` reads replies (pure), `cache` keeps them, `transport`
//! sends questions, `resolv_conf` finds the servers.

pub(crate) mod answer;
mod cache;
mod resolv_conf;
mod transport;

pub use answer::{CNAME_CHAIN_MAX, MX_HOSTS_MAX, MX_RECORDS_MAX};
pub use resolv_conf::{parse_resolv_conf, system_servers};
pub use transport::{TCP_REPLY_BYTES_MAX, UDP_PAYLOAD_BYTES};

use answer::{Answer, MxHost};
use cache::Cache;
use hickory_proto::rr::{Name, RecordType};
use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// The longest domain name in text form, without the root's dot (RFC 1035).
pub const NAME_BYTES_MAX: usize = 253;

/// One place to deliver mail for a domain: an MX host (or the domain itself
/// as implicit MX) and its addresses, IPv4 first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower-cased, without a trailing dot.
    pub host: String,
    pub preference: u16,
    pub addrs: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("domain does not exist (NXDOMAIN)")]
    NxDomain,
    #[error("domain accepts no mail (null MX, RFC 7505)")]
    NullMx,
    /// No MX record, and the domain itself has no address either.
    #[error("no MX record and no address")]
    NoAddresses,
    /// MX records, but none of their hosts has an address: a mistake in
    /// DNS that its owner may fix within the hour, so mail waits for it.
    #[error("no MX host has an address")]
    NoExchangerAddress,
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
}

impl DnsError {
    /// Whether mail for the domain should bounce rather than wait.
    pub fn is_permanent(&self) -> bool {
        match self {
            DnsError::NxDomain | DnsError::NullMx | DnsError::NoAddresses => true,
            DnsError::Temporary(_) | DnsError::NoExchangerAddress => false,
        }
    }
}

/// A cache key: the name as [`answer::host_string`] spells it, and the type.
type Key = (String, RecordType);

pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
    cache: RefCell<Cache<Key, Answer>>,
    rng: RefCell<fastrand::Rng>,
    /// Questions answered from the cache, and sent to the servers.
    hits: std::cell::Cell<u64>,
    queries: std::cell::Cell<u64>,
}

impl Resolver {
    /// servers: resolvers to ask in order; timeout: per query try; attempts:
    /// tries per server (at least one is made).
    pub fn new(
        servers: Vec<SocketAddr>,
        timeout: Duration,
        attempts: u32,
        cache_entries_max: usize,
    ) -> Resolver {
        assert!(!timeout.is_zero(), "a zero DNS timeout can never succeed");
        Resolver {
            servers,
            timeout,
            attempts: attempts.max(1),
            cache: RefCell::new(Cache::new(cache_entries_max)),
            rng: RefCell::new(fastrand::Rng::new()),
            hits: Default::default(),
            queries: Default::default(),
        }
    }

    /// Questions sent to the servers, and answered from the cache.
    pub fn counts(&self) -> (u64, u64) {
        (self.queries.get(), self.hits.get())
    }

    /// How many answers the cache holds (expired ones included until seen).
    pub fn cache_len(&self) -> usize {
        self.cache.borrow().len()
    }

    /// Where to deliver mail for `domain`: MX hosts in the order to try,
    /// each with its addresses. An address literal (`[192.0.2.1]`,
    /// `[IPv6:2001:db8::1]`) is its own single target, without a query.
    pub async fn mx_targets(&self, domain: &str) -> Result<Vec<Target>, DnsError> {
        if let Some(ip) = address_literal(domain) {
            let host = domain.to_ascii_lowercase();
            let addrs = vec![ip];
            return Ok(vec![Target {
                host,
                preference: 0,
                addrs,
            }]);
        }
        let name = parse_name(domain)?;
        match self.lookup(&name, RecordType::MX).await? {
            Answer::Mx(hosts) => self.mx_hosts_targets(&hosts).await,
            Answer::NoData => self.implicit_mx(&name).await,
            Answer::NxDomain => Err(DnsError::NxDomain),
            Answer::NullMx => Err(DnsError::NullMx),
            Answer::Addrs(_) | Answer::Alias(_) => {
                unreachable!("an MX lookup yields neither addresses nor an alias")
            }
        }
    }

    /// A and AAAA addresses of a host name, IPv4 first. An IP literal
    /// returns itself without a query.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if let Ok(ip) = literal.unwrap_or(host).parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = parse_name(host)?;
        self.addresses_of(&name).await
    }

    /// The targets of an MX answer: every host's addresses looked up at
    /// once (glue from the answer when it came with some).
    async fn mx_hosts_targets(&self, hosts: &[MxHost]) -> Result<Vec<Target>, DnsError> {
        let ordered = answer::order_mx(hosts, &mut self.rng.borrow_mut());
        let lookups = ordered.iter().map(|host| async move {
            if host.glue.is_empty() {
                self.addresses_of(&host.name).await
            } else {
                Ok(host.glue.clone())
            }
        });
        let results = join_all(lookups.collect()).await;
        let mut targets = Vec::with_capacity(ordered.len());
        let mut temporary = None;
        for (host, result) in ordered.iter().zip(results) {
            match result {
                Ok(addrs) => targets.push(Target {
                    host: answer::host_string(&host.name),
                    preference: host.preference,
                    addrs,
                }),
                // Remember why, in case no host is left to deliver to.
                Err(DnsError::Temporary(why)) => temporary = temporary.or(Some(why)),
                // An exchange that does not exist or has no address is
                // skipped, as RFC 5321 5.1 asks.
                Err(_) => {}
            }
        }
        if targets.is_empty() {
            return Err(temporary.map_or(DnsError::NoExchangerAddress, DnsError::Temporary));
        }
        Ok(targets)
    }

    /// No MX records: the domain itself is the mail host (RFC 5321 5.1).
    async fn implicit_mx(&self, name: &Name) -> Result<Vec<Target>, DnsError> {
        match self.addresses_of(name).await {
            Ok(addrs) => Ok(vec![Target {
                host: answer::host_string(name),
                preference: 0,
                addrs,
            }]),
            Err(DnsError::Temporary(why)) => Err(DnsError::Temporary(why)),
            Err(_) => Err(DnsError::NoAddresses),
        }
    }

    /// A and AAAA of `name`, asked at once. Some addresses are enough, even
    /// when the other family failed; none is temporary if either failed.
    async fn addresses_of(&self, name: &Name) -> Result<Vec<IpAddr>, DnsError> {
        let (v4, v6) = futures_lite::future::zip(
            self.lookup(name, RecordType::A),
            self.lookup(name, RecordType::AAAA),
        )
        .await;
        let mut addrs = Vec::new();
        let mut temporary = None;
        let mut nxdomain = false;
        for result in [v4, v6] {
            match result {
                Ok(Answer::Addrs(found)) => addrs.extend(found),
                Ok(Answer::NxDomain) => nxdomain = true,
                Ok(_) => {}
                Err(e) => temporary = Some(e),
            }
        }
        match (addrs.is_empty(), temporary, nxdomain) {
            (false, _, _) => Ok(addrs),
            (true, Some(e), _) => Err(e),
            (true, None, true) => Err(DnsError::NxDomain),
            (true, None, false) => Err(DnsError::NoAddresses),
        }
    }

    /// The answer to one question, chasing the aliases a server left for us
    /// to follow (at most [`CNAME_CHAIN_MAX`] of them). Never `Alias`.
    async fn lookup(&self, name: &Name, qtype: RecordType) -> Result<Answer, DnsError> {
        let mut found = self.lookup_one(name, qtype).await?;
        for _ in 0..CNAME_CHAIN_MAX {
            match found {
                Answer::Alias(target) => found = self.lookup_one(&target, qtype).await?,
                answer => return Ok(answer),
            }
        }
        match found {
            Answer::Alias(_) => Err(DnsError::Temporary(format!(
                "CNAME chain from {name} longer than {CNAME_CHAIN_MAX}"
            ))),
            answer => Ok(answer),
        }
    }

    /// The answer to one question, from the cache or from the servers.
    async fn lookup_one(&self, name: &Name, qtype: RecordType) -> Result<Answer, DnsError> {
        let key = (answer::host_string(name), qtype);
        if let Some(hit) = self.cache.borrow_mut().get(&key, Instant::now()) {
            self.hits.set(self.hits.get() + 1);
            return Ok(hit);
        }
        self.queries.set(self.queries.get() + 1);
        let reply = transport::ask(&self.servers, self.timeout, self.attempts, name, qtype)
            .await
            .map_err(DnsError::Temporary)?;
        let (found, ttl) = answer::interpret(&reply, name, qtype).map_err(DnsError::Temporary)?;
        self.cache
            .borrow_mut()
            .insert(key, found.clone(), ttl, Instant::now());
        Ok(found)
    }
}

/// A domain as an absolute DNS name. A name that cannot exist in the DNS
/// (empty, too long, a label over 63 octets) is `NxDomain`: no server
/// could ever say otherwise.
fn parse_name(domain: &str) -> Result<Name, DnsError> {
    let text = domain.strip_suffix('.').unwrap_or(domain);
    if text.is_empty() || text.len() > NAME_BYTES_MAX {
        return Err(DnsError::NxDomain);
    }
    // UTF-8 names become IDNA A-labels; names IDNA refuses (underscores,
    // say) are taken as they are.
    let mut name = Name::from_str_relaxed(text).map_err(|_| DnsError::NxDomain)?;
    // Absolute: never tried under a search domain.
    name.set_fqdn(true);
    Ok(name)
}

/// The address of an RFC 5321 address literal: `[192.0.2.1]` or
/// `[IPv6:2001:db8::1]`.
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let prefix = inner.get(..5).filter(|p| p.eq_ignore_ascii_case("IPv6:"));
    match prefix {
        Some(_) => inner[5..]
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(IpAddr::V6),
        None => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// Runs `futures` concurrently on the current task and returns their
/// outputs in order. Callers bound how many (at most [`MX_HOSTS_MAX`]).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanence() {
        assert!(DnsError::NxDomain.is_permanent());
        assert!(DnsError::NullMx.is_permanent());
        assert!(DnsError::NoAddresses.is_permanent());
        assert!(!DnsError::Temporary("x".into()).is_permanent());
    }

    #[test]
    fn names_are_absolute_and_checked() {
        let name = parse_name("Example.TEST.").unwrap();
        assert!(name.is_fqdn());
        assert_eq!(answer::host_string(&name), "example.test");
        assert_eq!(parse_name(""), Err(DnsError::NxDomain));
        assert_eq!(parse_name("."), Err(DnsError::NxDomain));
        let long_label = format!("{}.test", "a".repeat(64));
        assert_eq!(parse_name(&long_label), Err(DnsError::NxDomain));
        let idn = parse_name("bücher.test").unwrap();
        assert_eq!(answer::host_string(&idn), "xn--bcher-kva.test");
    }

    #[test]
    fn address_literals() {
        assert_eq!(address_literal("[192.0.2.1]"), Some([192, 0, 2, 1].into()));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(address_literal("[IPv6:2001:db8::1]"), Some(v6));
        assert_eq!(address_literal("[ipv6:2001:db8::1]"), Some(v6));
        assert_eq!(address_literal("[2001:db8::1]"), None);
        assert_eq!(address_literal("192.0.2.1"), None);
        assert_eq!(address_literal("[example.test]"), None);
    }
}
