//! Which recursive resolvers to ask: the `nameserver` lines of
//! /etc/resolv.conf.
//!
//! Only `nameserver` is read. `search`, `domain` and `ndots` are ignored on
//! purpose: a mail domain is always absolute, and trying it under a local
//! search domain would send mail to the wrong place. Reading the file is a
//! blocking read, so `system_servers` is for start-up, before any core runs;
//! a core must never call it.

use std::io::Read;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Where the system's resolver configuration lives.
pub const RESOLV_CONF_PATH: &str = "/etc/resolv.conf";
/// The most of the file we read; a real one is a few hundred bytes.
pub const RESOLV_CONF_BYTES_MAX: u64 = 64 * 1024;
/// The most servers we keep, as glibc does (MAXNS).
pub const SERVERS_MAX: usize = 3;
/// The port of every server named in resolv.conf (it has no port syntax).
pub const DNS_PORT: u16 = 53;

/// The nameservers of /etc/resolv.conf on port 53, or 127.0.0.1:53 when the
/// file is missing or names none (what glibc falls back to as well).
pub fn system_servers() -> Vec<SocketAddr> {
    let mut text = String::new();
    let read = std::fs::File::open(RESOLV_CONF_PATH)
        .and_then(|f| f.take(RESOLV_CONF_BYTES_MAX).read_to_string(&mut text));
    let servers = match read {
        Ok(_) => parse_resolv_conf(&text),
        Err(_) => Vec::new(),
    };
    if servers.is_empty() {
        return vec![SocketAddr::new(IpAddr::from([127, 0, 0, 1]), DNS_PORT)];
    }
    servers
}

/// The `nameserver` addresses of a resolv.conf text, in file order, at most
/// [`SERVERS_MAX`]. Lines that do not parse are skipped, as the C library
/// does: a bad line must not stop mail.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        if servers.len() == SERVERS_MAX {
            break;
        }
        // Both '#' and ';' start comments in resolv.conf.
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(parse_server) else {
            continue;
        };
        if !servers.contains(&addr) {
            servers.push(addr);
        }
    }
    servers
}

/// One server address: IPv4, IPv6, or IPv6 with a numeric zone
/// (`fe80::1%2`). A zone given by interface name is skipped: resolving it
/// would need a system call we do not make here.
fn parse_server(word: &str) -> Option<SocketAddr> {
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    let (ip, zone) = word.split_once('%')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let zone: u32 = zone.parse().ok()?;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, zone)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_nameservers_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.1\n\
                    nameserver   2001:db8::53  # v6\noptions ndots:2\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![addr("10.0.0.1:53"), addr("[2001:db8::53]:53")]
        );
    }

    #[test]
    fn skips_comments_bad_lines_and_duplicates() {
        let text = "; comment\n#nameserver 10.0.0.9\nnameserver\n\
                    nameserver not-an-ip\nnameserver 10.0.0.1\n\
                    nameserver 10.0.0.1\nnameserver fe80::1%eth0\n\
                    nameserver fe80::1%2\n\tnameserver\t10.0.0.2;x\n";
        let servers = parse_resolv_conf(text);
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[0], addr("10.0.0.1:53"));
        match servers[1] {
            SocketAddr::V6(v6) => assert_eq!(v6.scope_id(), 2),
            other => panic!("expected a zoned IPv6 address, got {other}"),
        }
        assert_eq!(servers[2], addr("10.0.0.2:53"));
    }

    #[test]
    fn keeps_at_most_three() {
        let text = "nameserver 10.0.0.1\nnameserver 10.0.0.2\n\
                    nameserver 10.0.0.3\nnameserver 10.0.0.4\n";
        assert_eq!(parse_resolv_conf(text).len(), SERVERS_MAX);
    }

    #[test]
    fn empty_text_names_no_server() {
        assert!(parse_resolv_conf("").is_empty());
        assert!(parse_resolv_conf("domain example.com\n").is_empty());
    }

    #[test]
    fn system_servers_is_never_empty() {
        assert!(!system_servers().is_empty());
    }
}
