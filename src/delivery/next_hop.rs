//! Which of a domain's next hops may be connected to: never spate itself
//! (mail that would loop back), never an address in
//! `delivery.deny_networks`.
//!
//! Owns the list of this host's own listening addresses, read once at
//! start. Pure apart from that: takes the hops the resolver found, says
//! which remain and, when none does, why.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The addresses where this spate takes mail: connecting to one of them
/// delivers to itself.
#[derive(Debug, Default)]
pub struct Myself {
    listen: Vec<SocketAddr>,
    /// The host's interface addresses, for listeners on 0.0.0.0 or [::].
    local: Vec<IpAddr>,
}

impl Myself {
    /// Reads the host's interface addresses when a listener is a wildcard.
    pub fn new(listen: &[SocketAddr]) -> Myself {
        let local = if listen.iter().any(|a| a.ip().is_unspecified()) {
            interface_addresses()
        } else {
            Vec::new()
        };
        Myself::with_local(listen, local)
    }

    pub fn with_local(listen: &[SocketAddr], local: Vec<IpAddr>) -> Myself {
        Myself {
            listen: listen.iter().map(|a| canonical_socket(*a)).collect(),
            local: local.into_iter().map(canonical).collect(),
        }
    }

    /// Whether a connection to `ip`:`port` would reach this spate. All of
    /// 127.0.0.0/8 and ::1 reach a wildcard listener.
    pub fn is_me(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical(ip);
        self.listen.iter().any(|l| {
            // 0.0.0.0 takes IPv4 only; [::] takes both (dual stack).
            let family = l.ip().is_ipv6() || ip.is_ipv4();
            l.port() == port
                && (l.ip() == ip
                    || l.ip().is_unspecified()
                        && family
                        && (ip.is_loopback() || ip.is_unspecified() || self.local.contains(&ip)))
        })
    }
}

/// One address to try: the host's name, its address and the port.
pub type Hop = (String, IpAddr, u16);

/// Why a domain has no hop left to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoHop {
    /// The best next hop is spate itself.
    Loop { host: String },
    /// Every address is in `delivery.deny_networks`.
    Denied,
}

/// Keeps the hops that may be tried, in order.
///
/// For MX hops (`mx`: each hop with its preference) RFC 5321 5.1 applies:
/// if spate is one of the exchangers, that one and every less preferred one
/// are dropped, since mail for them would come back here. For a route or
/// smarthost (`mx` false) any hop that is spate itself is dropped. Hops in
/// `deny` are dropped either way.
pub fn permitted(
    hops: Vec<(Hop, u16)>,
    mx: bool,
    myself: &Myself,
    deny: &[IpNet],
) -> Result<Vec<Hop>, NoHop> {
    let (mut kept, mut looped, mut denied) = (Vec::new(), None::<String>, false);
    let self_preference = hops
        .iter()
        .filter(|((_, ip, port), _)| mx && myself.is_me(*ip, *port))
        .map(|(_, pref)| *pref)
        .min();
    for ((host, ip, port), preference) in hops {
        if myself.is_me(ip, port) || self_preference.is_some_and(|p| preference >= p) {
            looped.get_or_insert(host);
        } else if deny.iter().any(|net| net.contains(&canonical(ip))) {
            denied = true;
        } else {
            kept.push((host, ip, port));
        }
    }
    match (kept.is_empty(), looped, denied) {
        (false, _, _) => Ok(kept),
        (true, Some(host), _) => Err(NoHop::Loop { host }),
        (true, None, true) => Err(NoHop::Denied),
        (true, None, false) => Ok(kept),
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn canonical_socket(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical(a.ip()), a.port())
}

fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        eprintln!("spate: cannot list this host's addresses; loops through a wildcard listener are caught only on loopback");
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let a = a.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(std::net::Ipv4Addr::from(v4.ip())))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(host: &str, ip: &str, pref: u16) -> (Hop, u16) {
        ((host.into(), ip.parse().unwrap(), 25), pref)
    }

    fn me(listen: &str) -> Myself {
        Myself::with_local(
            &[listen.parse().unwrap()],
            vec!["192.0.2.7".parse().unwrap()],
        )
    }

    #[test]
    fn a_listener_is_me_on_its_own_port_only() {
        let m = me("127.0.0.5:25");
        assert!(m.is_me("127.0.0.5".parse().unwrap(), 25));
        assert!(m.is_me("::ffff:127.0.0.5".parse().unwrap(), 25));
        assert!(!m.is_me("127.0.0.5".parse().unwrap(), 2525));
        assert!(!m.is_me("127.0.0.6".parse().unwrap(), 25));
        let any = me("0.0.0.0:25");
        assert!(any.is_me("127.9.9.9".parse().unwrap(), 25));
        assert!(any.is_me("192.0.2.7".parse().unwrap(), 25));
        assert!(!any.is_me("192.0.2.8".parse().unwrap(), 25));
        assert!(
            !any.is_me("::1".parse().unwrap(), 25),
            "0.0.0.0 takes no IPv6"
        );
        assert!(me("[::]:25").is_me("::1".parse().unwrap(), 25));
    }

    #[test]
    fn an_mx_that_is_me_drops_itself_and_every_less_preferred_one() {
        let m = me("0.0.0.0:25");
        let hops = vec![
            hop("a", "198.51.100.1", 10),
            hop("b", "198.51.100.2", 20),
            hop("me", "192.0.2.7", 20),
            hop("c", "198.51.100.3", 30),
        ];
        let kept = permitted(hops, true, &m, &[]).unwrap();
        assert_eq!(kept.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(), ["a"]);
        let looped = permitted(
            vec![hop("me", "127.0.0.1", 10), hop("c", "198.51.100.3", 30)],
            true,
            &m,
            &[],
        );
        assert_eq!(looped, Err(NoHop::Loop { host: "me".into() }));
    }

    #[test]
    fn denied_networks_are_never_tried() {
        let deny: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let m = me("127.0.0.5:25");
        let kept = permitted(
            vec![hop("a", "10.1.2.3", 10), hop("b", "198.51.100.2", 20)],
            true,
            &m,
            &deny,
        );
        assert_eq!(kept.unwrap().len(), 1);
        assert_eq!(
            permitted(vec![hop("a", "10.1.2.3", 10)], false, &m, &deny),
            Err(NoHop::Denied)
        );
        assert_eq!(permitted(vec![], true, &m, &deny), Ok(vec![]));
    }
}
