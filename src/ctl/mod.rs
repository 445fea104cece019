//! `spate ctl`: one subcommand per route of the admin API, for people
//! (tables) and scripts (`--json`). It only speaks HTTP to a running
//! spate; it never reads the spool or the logs itself.

pub mod client;
pub(crate) mod print;

use clap::{Args, Subcommand};
use client::Target;
use serde_json::{json, Value};

#[derive(Args)]
pub struct CtlArgs {
    #[command(flatten)]
    target: Target,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCmd,
}

/// Exactly one of these names what an action is for.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct SelectorArgs {
    #[arg(long)]
    domain: Option<String>,
    #[arg(long)]
    provider: Option<String>,
    #[arg(long)]
    source: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    campaign: Option<String>,
}

impl SelectorArgs {
    fn json(&self) -> Value {
        let pairs = [
            ("domain", &self.domain),
            ("provider", &self.provider),
            ("source", &self.source),
            ("tenant", &self.tenant),
            ("campaign", &self.campaign),
        ];
        let (k, v) = pairs
            .into_iter()
            .find_map(|(k, v)| v.as_ref().map(|v| (k, v)))
            .expect("clap requires one");
        json!({ k: v })
    }
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Totals of every core: received, delivered, queued, connections.
    Summary,
    /// Destinations by queue depth, deferrals or age.
    Queues {
        #[arg(long, default_value = "ready", value_parser = ["ready", "deferred", "age"])]
        sort: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One destination: its queue, limits, actions and last replies.
    Queue { domain: String },
    /// Stop delivery to a selector for a while (`--for 30m`).
    Suspend {
        #[command(flatten)]
        selector: SelectorArgs,
        #[arg(long = "for", value_name = "DURATION", value_parser = duration)]
        length: u64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End a suspension (its id, as `suspend` and `actions` print it).
    Resume {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The operator's actions in force.
    Actions,
    /// End any action (suspension, reroute, override).
    End {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Bounce what is queued for a selector (DSNs go to the senders).
    Bounce {
        #[command(flatten)]
        selector: SelectorArgs,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Send a selector's mail out from another pool, or to another host.
    Reroute {
        #[command(flatten)]
        selector: SelectorArgs,
        #[arg(
            long,
            conflicts_with = "next_hop",
            required_unless_present = "next_hop"
        )]
        pool: Option<String>,
        #[arg(long = "next-hop", value_name = "HOST:PORT")]
        next_hop: Option<String>,
        #[arg(long = "for", value_name = "DURATION", value_parser = duration)]
        length: u64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Change shaping keys for a while (`--set connections=2 --set message_rate=10/s`).
    Override {
        #[command(flatten)]
        selector: SelectorArgs,
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
        #[arg(long = "for", value_name = "DURATION", value_parser = duration)]
        length: u64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reload the shaping file (as SIGHUP does).
    Reload {
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Where a message is (its 16-hex-digit id), or a recipient's messages.
    Trace { what: String },
    /// Follow the delivery log live.
    Events {
        /// Kinds to show, comma-separated (Delivery,Bounce,...).
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Send an injection request (a JSON file, `-` for standard input) to
    /// the injection listener.
    Inject { file: std::path::PathBuf },
    /// The suppression lists: add, remove, list.
    #[command(subcommand)]
    Suppress(SuppressCmd),
}

#[derive(Subcommand)]
enum SuppressCmd {
    /// Put an address on the global list, or a tenant's.
    Add {
        address: String,
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long)]
        reason: String,
    },
    /// Take an address off the global list, or a tenant's.
    Remove {
        address: String,
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long)]
        reason: String,
    },
    /// What the lists hold (newest first).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        address: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// "90", "90s", "15m", "2h", "1d" as seconds.
fn duration(s: &str) -> Result<u64, String> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 2h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    Ok(n * mult)
}

fn set_json(set: &[String]) -> Result<Value, String> {
    let mut m = serde_json::Map::new();
    for kv in set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{kv:?} is not KEY=VALUE"))?;
        let value = match v.parse::<u64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::from(v),
        };
        m.insert(k.to_string(), value);
    }
    Ok(Value::Object(m))
}

fn with(mut body: Value, extra: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut body, extra) {
        a.extend(b);
    }
    body
}

fn path_part(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn run(args: CtlArgs) -> Result<(), String> {
    let c = args
        .target
        .connect_to(matches!(args.command, CtlCmd::Inject { .. }))?;
    let out = |v: Value, table: fn(&Value)| {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        } else {
            table(&v);
        }
    };
    match args.command {
        CtlCmd::Summary => out(c.get("/api/v1/summary")?, print::summary),
        CtlCmd::Queues { sort, limit } => out(
            c.get(&format!("/api/v1/queues?sort={sort}&limit={limit}"))?,
            print::queues,
        ),
        CtlCmd::Queue { domain } => out(
            c.get(&format!("/api/v1/queues/{}", path_part(&domain)))?,
            print::queue,
        ),
        CtlCmd::Suspend {
            selector,
            length,
            reason,
        } => {
            let body = with(
                selector.json(),
                json!({ "duration_s": length, "reason": reason }),
            );
            out(c.send("POST", "/api/v1/suspend", &body)?, print::action)
        }
        CtlCmd::Resume { id, reason } => out(
            c.send(
                "DELETE",
                &format!("/api/v1/suspend/{}", path_part(&id)),
                &json!({ "reason": reason }),
            )?,
            print::ended,
        ),
        CtlCmd::End { id, reason } => out(
            c.send(
                "DELETE",
                &format!("/api/v1/actions/{}", path_part(&id)),
                &json!({ "reason": reason }),
            )?,
            print::ended,
        ),
        CtlCmd::Actions => out(c.get("/api/v1/actions")?, print::actions),
        CtlCmd::Bounce { selector, reason } => {
            let body = with(selector.json(), json!({ "reason": reason }));
            out(c.send("POST", "/api/v1/bounce", &body)?, print::bounced)
        }
        CtlCmd::Reroute {
            selector,
            pool,
            next_hop,
            length,
            reason,
        } => {
            let to = match (pool, next_hop) {
                (Some(p), _) => json!({ "pool": p }),
                (None, Some(h)) => json!({ "next_hop": h }),
                (None, None) => unreachable!("clap requires one"),
            };
            let body = with(
                with(selector.json(), to),
                json!({ "duration_s": length, "reason": reason }),
            );
            out(c.send("POST", "/api/v1/reroute", &body)?, print::action)
        }
        CtlCmd::Override {
            selector,
            set,
            length,
            reason,
        } => {
            let extra = json!({ "set": set_json(&set)?, "duration_s": length, "reason": reason });
            out(
                c.send("PUT", "/api/v1/overrides", &with(selector.json(), extra))?,
                print::action,
            )
        }
        CtlCmd::Reload { reason } => out(
            c.send(
                "POST",
                "/api/v1/shaping/reload",
                &json!({ "reason": reason }),
            )?,
            print::reloaded,
        ),
        CtlCmd::Trace { what } => {
            let is_id = what.len() == 16 && what.chars().all(|ch| ch.is_ascii_hexdigit());
            let path = if is_id {
                format!("/api/v1/messages/{}", what.to_ascii_lowercase())
            } else {
                format!("/api/v1/messages?recipient={}", path_part(&what))
            };
            let v = c.get(&path)?;
            let v = if is_id { json!({ "messages": [v] }) } else { v };
            out(v, print::trace)
        }
        CtlCmd::Events {
            kind,
            domain,
            tenant,
            count,
        } => {
            let mut q: Vec<String> = Vec::new();
            for (k, v) in [("kind", kind), ("domain", domain), ("tenant", tenant)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", path_part(&v)));
                }
            }
            let query = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            let mut seen = 0;
            c.events(&query, |v| {
                if args.json {
                    println!("{v}");
                } else {
                    print::event(v);
                }
                seen += 1;
                count.is_none_or(|n| seen < n)
            })?;
        }
        CtlCmd::Inject { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| format!("standard input: {e}"))?
            } else {
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?
            };
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
            out(c.send("POST", "/api/v1/inject", &body)?, print::injected)
        }
        CtlCmd::Suppress(cmd) => suppress(&c, cmd, &out)?,
    }
    Ok(())
}

fn suppress(
    c: &client::Client,
    cmd: SuppressCmd,
    out: &impl Fn(Value, fn(&Value)),
) -> Result<(), String> {
    match cmd {
        SuppressCmd::Add {
            address,
            tenant,
            reason,
        } => {
            let body = json!({ "address": address, "tenant": tenant, "reason": reason });
            out(
                c.send("POST", "/api/v1/suppression", &body)?,
                print::suppressed,
            );
        }
        SuppressCmd::Remove {
            address,
            tenant,
            reason,
        } => {
            let path = format!(
                "/api/v1/suppression/{}?tenant={}&reason={}",
                path_part(&address),
                path_part(&tenant),
                path_part(&reason)
            );
            out(c.send("DELETE", &path, &json!({}))?, print::suppressed);
        }
        SuppressCmd::List {
            tenant,
            address,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [("tenant", tenant), ("address", address)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", path_part(&v)));
                }
            }
            out(
                c.get(&format!("/api/v1/suppression?{}", q.join("&")))?,
                print::suppression,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration("90"), Ok(90));
        assert_eq!(duration("15m"), Ok(900));
        assert_eq!(duration("2h"), Ok(7200));
        assert!(duration("2w").is_err());
        assert!(duration("m").is_err());
    }
}
