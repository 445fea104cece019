//! `spate shaping explain DOMAIN`: what a destination gets and why, for an
//! operator at a terminal. Reads the files and asks DNS; changes nothing.

use super::load;
use crate::config::Config;
use crate::dns::Resolver;

/// Prints `domain`'s limits, each with the rule it came from, and the MX
/// hosts it resolves to.
pub fn print(cfg: &Config, domain: &str) -> Result<(), String> {
    let rules = cfg
        .delivery
        .shaping_file
        .as_deref()
        .map(load)
        .transpose()
        .map_err(|e| format!("shaping file {e}"))?
        .unwrap_or_default();
    let file = cfg
        .delivery
        .shaping_file
        .as_ref()
        .map_or("none".to_string(), |f| f.display().to_string());
    let (hops, mx) = next_hops(cfg, domain);
    let mx: Vec<&str> = mx.iter().map(|h| h.as_str()).collect();
    let (provider, rows) = rules.explain(cfg, domain, &mx);
    println!("destination {domain}  (shaping file: {file})");
    for (key, value, from) in rows {
        println!("  {key:<27} {value:<32} from {from}");
    }
    match provider {
        Some(name) => println!("provider {name} (every MX host ends in one of its suffixes; its connections and rates are totals over its domains)"),
        None => println!("provider: none"),
    }
    println!(
        "mail exchangers{}",
        if hops.is_empty() { ": none" } else { "" }
    );
    for line in hops {
        println!("  {line}");
    }
    Ok(())
}

/// Lines for the route or smarthost, or the MX hosts with their
/// addresses; and the MX host names (none for a route or smarthost, whose
/// mail belongs to no provider).
fn next_hops(cfg: &Config, domain: &str) -> (Vec<String>, Vec<String>) {
    let d = &cfg.delivery;
    if let Some(hop) = d.route(domain).and_then(|r| r.next_hop.as_ref()) {
        return (vec![format!("route: {}:{}", hop.host, hop.port)], vec![]);
    }
    if let Some(hop) = &d.smarthost {
        return (
            vec![format!("smarthost: {}:{}", hop.host, hop.port)],
            vec![],
        );
    }
    let servers = if cfg.dns.servers.is_empty() {
        crate::dns::system_servers()
    } else {
        cfg.dns.servers.clone()
    };
    let (timeout, attempts) = (cfg.dns.timeout, cfg.dns.attempts);
    let domain = domain.to_string();
    let asked = glommio::LocalExecutorBuilder::default().spawn(move || async move {
        let resolver = Resolver::new(servers, timeout, attempts, 64);
        resolver.mx_targets(&domain).await
    });
    match asked.map(|join| join.join()) {
        Ok(Ok(Ok(targets))) => {
            let lines = targets
                .iter()
                .map(|t| {
                    let addrs: Vec<String> = t.addrs.iter().map(|a| a.to_string()).collect();
                    let preference = t.preference;
                    format!("{} (preference {preference}): {}", t.host, addrs.join(", "))
                })
                .collect();
            (lines, targets.into_iter().map(|t| t.host).collect())
        }
        Ok(Ok(Err(e))) => (vec![format!("DNS: {e}")], vec![]),
        Ok(Err(e)) | Err(e) => (vec![format!("DNS: cannot ask ({e})")], vec![]),
    }
}
