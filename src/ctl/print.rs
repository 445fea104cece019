//! `spate ctl`'s tables: the admin API's JSON laid out for people.

use serde_json::Value;

/// A JSON value as a table cell: "-" for null, strings without quotes.
pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Seconds as "42s", "17m" or "5h".
pub(crate) fn age(secs: f64) -> String {
    match secs as u64 {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// Milliseconds since the epoch as a UTC time.
fn time(ms: &Value) -> String {
    ms.as_u64()
        .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

pub fn summary(v: &Value) {
    for key in [
        "received",
        "delivered",
        "deferred",
        "bounced",
        "expired",
        "ready",
        "waiting",
        "connections_in",
        "connections_out",
        "domains",
        "actions",
        "cores",
        "uptime_s",
    ] {
        println!("{key:<16} {}", s(&v[key]));
    }
}

pub fn queues(v: &Value) {
    println!(
        "{:<32} {:>4} {:>8} {:>8} {:>9} {:>5} {:>6} {:>6}  last reply",
        "DESTINATION", "CORE", "READY", "WAITING", "SUSPENDED", "CONNS", "OLDEST", "DEFER"
    );
    for q in v["queues"].as_array().into_iter().flatten() {
        let reply = s(&q["last_reply"]["text"]);
        println!(
            "{:<32} {:>4} {:>8} {:>8} {:>9} {:>5} {:>6} {:>6}  {}",
            s(&q["domain"]),
            s(&q["core"]),
            s(&q["ready"]),
            s(&q["waiting"]),
            s(&q["suspended"]),
            s(&q["connections"]),
            age(q["oldest_age_s"].as_f64().unwrap_or(0.0)),
            s(&q["deferred"]),
            reply.chars().take(60).collect::<String>()
        );
    }
}

pub fn queue(q: &Value) {
    for key in [
        "domain",
        "core",
        "ready",
        "waiting",
        "suspended",
        "connections",
        "deferred",
    ] {
        println!("{key:<12} {}", s(&q[key]));
    }
    println!(
        "{:<12} {}",
        "oldest",
        age(q["oldest_age_s"].as_f64().unwrap_or(0.0))
    );
    if q["suspended_until_ms"].is_u64() {
        println!("{:<12} {}", "suspended to", time(&q["suspended_until_ms"]));
    }
    let l = &q["limits"];
    println!(
        "{:<12} connections {}, message_rate {}, connection_rate {} ({})",
        "limits",
        s(&l["connections"]),
        s(&l["message_rate"]),
        s(&l["connection_rate"]),
        s(&l["rule"])
    );
    let actions: Vec<String> = q["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    println!(
        "{:<12} {}",
        "actions",
        if actions.is_empty() {
            "-".into()
        } else {
            actions.join(", ")
        }
    );
    println!("last replies:");
    for r in q["replies"].as_array().into_iter().flatten() {
        println!("  {}  {}", time(&r["time_ms"]), s(&r["text"]));
    }
}

pub fn action(a: &Value) {
    let selector = a["selector"]
        .as_object()
        .and_then(|m| m.iter().next())
        .map_or("-".into(), |(k, v)| format!("{k} {}", s(v)));
    let to = [("pool", "pool "), ("next_hop", "next hop ")]
        .iter()
        .find(|(k, _)| a[*k].is_string())
        .map_or(String::new(), |(k, p)| format!(" to {p}{}", s(&a[*k])));
    let set = if a["set"].is_object() {
        format!(" set {}", a["set"])
    } else {
        String::new()
    };
    println!(
        "{:<6} {:<8} {selector}{to}{set} until {} by {} ({})",
        s(&a["id"]),
        s(&a["kind"]),
        time(&a["until_ms"]),
        s(&a["by"]),
        s(&a["reason"])
    );
}

pub fn actions(v: &Value) {
    let list = v["actions"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no actions in force");
    }
    for a in &list {
        action(a);
    }
}

pub fn ended(v: &Value) {
    println!("{} ended", s(&v["id"]));
}

pub fn bounced(v: &Value) {
    println!("{} recipients bounced", s(&v["bounced"]));
}

pub fn reloaded(v: &Value) {
    println!(
        "shaping rules reloaded ({} destination rules)",
        s(&v["destination_rules"])
    );
}

pub fn trace(v: &Value) {
    for m in v["messages"].as_array().into_iter().flatten() {
        println!("message {}", s(&m["id"]));
        for q in m["queued"].as_array().into_iter().flatten() {
            println!(
                "  queued   {} ({}) on core {}, {} attempts",
                s(&q["recipient"]),
                s(&q["state"]),
                s(&q["core"]),
                s(&q["attempts"])
            );
        }
        for r in m["history"].as_array().into_iter().flatten() {
            event(r);
        }
    }
}

pub fn event(r: &Value) {
    println!(
        "  {}  {:<16} {:<30} {}",
        time(&r["time_ms"]),
        s(&r["type"]),
        s(&r["recipient"]),
        s(&r["response"]).chars().take(80).collect::<String>()
    );
}

pub fn injected(v: &Value) {
    let messages = v["messages"].as_array().map_or(0, Vec::len);
    println!(
        "accepted {} recipients in {messages} messages",
        v["accepted"].as_u64().unwrap_or(0)
    );
    for m in v["messages"].as_array().into_iter().flatten().take(20) {
        let rcpts: Vec<&str> = m["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!("  {}  {}", m["id"].as_str().unwrap_or(""), rcpts.join(", "));
    }
    if messages > 20 {
        println!("  ... and {} more (--json shows all)", messages - 20);
    }
    for r in v["refused"].as_array().into_iter().flatten() {
        println!(
            "refused {}: {}",
            r["address"].as_str().unwrap_or(""),
            r["reason"].as_str().unwrap_or("")
        );
    }
}

pub fn suppressed(v: &Value) {
    let tenant = v["tenant"].as_str().filter(|t| !t.is_empty());
    println!(
        "{} {} ({})",
        v["address"].as_str().unwrap_or(""),
        v["result"].as_str().unwrap_or(""),
        tenant.map_or("global list".to_string(), |t| format!("tenant {t}"))
    );
}

pub fn suppression(v: &Value) {
    println!(
        "{:<40} {:<16} {:<24} {:<12} REASON",
        "ADDRESS", "TENANT", "SINCE", "BY"
    );
    for e in v["entries"].as_array().into_iter().flatten() {
        let since = e["time_ms"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let tenant = e["tenant"]
            .as_str()
            .filter(|t| !t.is_empty())
            .unwrap_or("(global)");
        println!(
            "{:<40} {:<16} {:<24} {:<12} {}",
            e["address"].as_str().unwrap_or(""),
            tenant,
            since,
            e["by"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or("")
        );
    }
    println!("{} entries in all", v["total"].as_u64().unwrap_or(0));
}
