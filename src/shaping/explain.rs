//! `spate shaping explain DOMAIN`: what a destination gets and why, for an
//! operator at a terminal. Reads the files and asks DNS; changes nothing.

use super::load;
use crate::config::Config;
use crate::dns::Resolver;

/// Prints `domain`'s limits, each with the rule it came from, the pool
/// its mail goes out from (for `tenant`'s mail, if given), and the MX
/// hosts it resolves to.
pub fn print(cfg: &Config, domain: &str, tenant: Option<&str>) -> Result<(), String> {
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
    let pool = rules.explain_pool(cfg, domain, &mx);
    if let Some(t) = tenant {
        match rules.tenant(t) {
            Some(def) => {
                let rate = def.message_rate.map_or("unlimited".into(), |r| r.to_string());
                let connections = def
                    .connections
                    .map_or(String::new(), |n| format!(", connections {n} at once"));
                println!(
                    "tenant {t}: message_rate {rate} (all destinations and cores), pool {}{connections}",
                    def.pool.as_deref().unwrap_or("(the destination's)")
                );
            }
            None => println!("tenant {t}: no [tenant.{t}] rule; its mail is queued in lanes of its own but gets the destination's limits"),
        }
    }
    let tenant_pool = tenant.and_then(|t| rules.tenant(t)?.pool.clone());
    match tenant_pool.or(pool) {
        Some(name) => {
            println!("pool {name}:");
            for line in rules.pool_lines(&name) {
                println!("  {line}");
            }
        }
        None => println!("pool: none (delivery.source_address, or the kernel's choice)"),
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
