//! The JSON API's handlers: each takes a [`Call`], asks the cores over the
//! control mesh, and shapes their replies. Every change is logged as an
//! `Admin` record (by the token's name, with the reason given) by the
//! core that served it.

use super::http::{json, ok, Answer, ApiError};
use super::routes::Call;
use super::Admin;
use crate::control::report::{CoreSummary, Queued, Sort};
use crate::control::{Reply, Request};
use crate::shaping::operator::{Action, Patch, Selector, What, DURATION_MAX_S};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub const QUEUES_LIMIT_MAX: usize = 1000;

pub async fn summary(admin: &Rc<Admin>) -> Answer {
    let mut total = CoreSummary::default();
    for reply in admin.control.ask_all(|| Request::Summary).await {
        match reply {
            Reply::Summary(s) => total.add(&s),
            Reply::Unavailable(c) => return Err(ApiError::unavailable(c)),
            _ => unreachable!("a summary answers a summary"),
        }
    }
    let actions = own_actions(admin).await?.len();
    let mut v = serde_json::to_value(&total).expect("serializes");
    let extra = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "cores": admin.control.cores(),
        "uptime_s": admin.started.elapsed().as_secs_f64(),
        "time_ms": crate::delivery_log::now_ms(),
        "actions": actions,
    });
    merge(&mut v, extra);
    ok(&v)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

pub async fn queues(admin: &Rc<Admin>, call: &Call) -> Answer {
    let sort = match call.query("sort") {
        None => Sort::Ready,
        Some(s) => Sort::parse(s).ok_or_else(|| ApiError::bad("sort is ready, deferred or age"))?,
    };
    let limit = call.limit(50, QUEUES_LIMIT_MAX)?;
    let mut rows = Vec::new();
    for reply in admin
        .control
        .ask_all(|| Request::Queues { sort, limit })
        .await
    {
        match reply {
            Reply::Queues(r) => rows.extend(r),
            Reply::Unavailable(c) => return Err(ApiError::unavailable(c)),
            _ => unreachable!(),
        }
    }
    sort.order(&mut rows);
    rows.truncate(limit);
    ok(&json!({ "sort": sort.name(), "queues": rows }))
}

pub async fn queue(admin: &Rc<Admin>, call: &Call) -> Answer {
    let domain = call.param.to_ascii_lowercase();
    let owner = admin.control.owner(&domain);
    match admin
        .control
        .ask(
            owner,
            Request::Queue {
                domain: domain.clone(),
            },
        )
        .await
    {
        Reply::Queue(Some(detail)) => ok(&detail),
        Reply::Queue(None) => Err(ApiError::not_found(format!(
            "{domain}: nothing queued and nothing heard since start"
        ))),
        Reply::Unavailable(c) => Err(ApiError::unavailable(c)),
        _ => unreachable!(),
    }
}

async fn own_actions(admin: &Rc<Admin>) -> Result<Vec<Action>, ApiError> {
    let me = admin.control.core().index;
    match admin.control.ask(me, Request::Actions).await {
        Reply::Actions(a) => Ok(a),
        _ => Err(ApiError::unavailable(me)),
    }
}

fn action_json(a: &Action) -> Value {
    let mut v = json!({
        "id": format!("a{}", a.id),
        "kind": a.kind(),
        "selector": { a.selector.key(): a.selector.name() },
        "until_ms": a.until_ms,
        "by": a.by,
        "reason": a.reason,
    });
    let extra = match &a.what {
        What::Suspend => json!({}),
        What::Pool(p) => json!({ "pool": p }),
        What::NextHop(h) => json!({ "next_hop": format!("{}:{}", h.host, h.port) }),
        What::Override(p) => json!({ "set": patch_json(p) }),
    };
    merge(&mut v, extra);
    v
}

fn patch_json(p: &Patch) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(c) = p.connections {
        m.insert("connections".into(), c.into());
    }
    if let Some(r) = &p.message_rate {
        m.insert("message_rate".into(), r.to_string().into());
    }
    if let Some(r) = &p.connection_rate {
        m.insert("connection_rate".into(), r.to_string().into());
    }
    if let Some(n) = p.messages_per_connection {
        m.insert("messages_per_connection".into(), n.into());
    }
    Value::Object(m)
}

pub async fn actions(admin: &Rc<Admin>) -> Answer {
    let list: Vec<Value> = own_actions(admin).await?.iter().map(action_json).collect();
    ok(&json!({ "actions": list }))
}

fn body(call: &Call) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(&call.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad("the body is a JSON object")),
        Err(e) if call.body.is_empty() => Err(ApiError::bad(format!("a JSON body is needed: {e}"))),
        Err(e) => Err(ApiError::bad(format!("body: {e}"))),
    }
}

/// The one selector key of a body, from those `allowed`.
fn selector(m: &serde_json::Map<String, Value>, allowed: &[&str]) -> Result<Selector, ApiError> {
    let given: Vec<&str> = Selector::KEYS
        .iter()
        .copied()
        .filter(|k| m.contains_key(*k))
        .collect();
    let [key] = given[..] else {
        return Err(ApiError::bad(format!(
            "name exactly one of: {}",
            allowed.join(", ")
        )));
    };
    if !allowed.contains(&key) {
        return Err(ApiError::bad(format!(
            "{key} is not a selector here (one of: {})",
            allowed.join(", ")
        )));
    }
    let name = m[key].as_str().filter(|s| !s.is_empty() && s.len() <= 255);
    let name = name.ok_or_else(|| ApiError::bad(format!("{key} is a non-empty string")))?;
    Ok(Selector::new(key, name).expect("a known key"))
}

/// Refuses a body with a key the route does not take: nothing is done
/// with half of what was asked.
fn known_keys(m: &serde_json::Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(ApiError::bad(format!(
            "unknown field {k:?} (this route takes: {})",
            allowed.join(", ")
        ))),
    }
}

/// The reason of a body that may be empty or hold only a reason.
fn reason_only(call: &Call) -> Result<String, ApiError> {
    if call.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    let m = body(call)?;
    known_keys(&m, &["reason"])?;
    reason(&m)
}

fn reason(m: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    match m.get("reason") {
        None => Ok(String::new()),
        Some(Value::String(s)) if s.len() <= 1000 => Ok(s.clone()),
        Some(_) => Err(ApiError::bad("reason is a string of at most 1000 bytes")),
    }
}

fn duration(m: &serde_json::Map<String, Value>) -> Result<Duration, ApiError> {
    m.get("duration_s")
        .and_then(Value::as_u64)
        .filter(|s| (1..=DURATION_MAX_S).contains(s))
        .map(Duration::from_secs)
        .ok_or_else(|| ApiError::bad(format!("duration_s is 1 to {DURATION_MAX_S} seconds")))
}

/// What a suspend, reroute or override body asks for.
fn what(
    admin: &Admin,
    call: &Call,
    m: &serde_json::Map<String, Value>,
) -> Result<(Selector, What), ApiError> {
    use super::routes::Route;
    match call.route {
        Route::Suspend => Ok((selector(m, &Selector::KEYS)?, What::Suspend)),
        Route::Reroute => {
            let sel = selector(m, &["domain", "provider", "tenant"])?;
            match (
                m.get("pool").and_then(Value::as_str),
                m.get("next_hop").and_then(Value::as_str),
            ) {
                (Some(pool), None) if admin.control.core().shaper.has_pool(pool) => {
                    Ok((sel, What::Pool(pool.to_string())))
                }
                (Some(pool), None) => Err(ApiError::bad(format!(
                    "no pool {pool:?} in the shaping rules"
                ))),
                (None, Some(hop)) if matches!(sel, Selector::Domain(_)) => {
                    let hop = crate::config::parse_hop("next_hop", hop)
                        .map_err(|e| ApiError::bad(e.to_string()))?
                        .ok_or_else(|| ApiError::bad("next_hop is HOST:PORT"))?;
                    Ok((sel, What::NextHop(hop)))
                }
                (None, Some(_)) => Err(ApiError::bad("a next hop reroutes a domain only")),
                _ => Err(ApiError::bad("name one of pool and next_hop")),
            }
        }
        Route::Override => {
            let sel = selector(m, &["domain", "provider"])?;
            let set = m
                .get("set")
                .and_then(Value::as_object)
                .ok_or_else(|| ApiError::bad("set is an object of shaping keys"))?;
            Ok((sel, What::Override(patch(set)?)))
        }
        _ => unreachable!("only changes that put an action in force"),
    }
}

fn patch(set: &serde_json::Map<String, Value>) -> Result<Patch, ApiError> {
    let mut p = Patch::default();
    let count = |k: &str, v: &Value| {
        v.as_u64()
            .filter(|n| (1..=100_000).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| ApiError::bad(format!("{k} is 1 to 100000")))
    };
    let rate = |k: &str, v: &Value| {
        let s = v
            .as_str()
            .ok_or_else(|| ApiError::bad(format!("{k} is a rate like \"10/s\"")))?;
        crate::shaping::rate::Rate::parse(s).map_err(|e| ApiError::bad(format!("{k}: {e}")))
    };
    for (k, v) in set {
        match k.as_str() {
            "connections" => p.connections = Some(count(k, v)?),
            "messages_per_connection" => p.messages_per_connection = Some(count(k, v)?),
            "message_rate" => p.message_rate = Some(rate(k, v)?),
            "connection_rate" => p.connection_rate = Some(rate(k, v)?),
            _ => {
                return Err(ApiError::bad(format!(
                    "{k} cannot be overridden (connections, message_rate, connection_rate, messages_per_connection)"
                )))
            }
        }
    }
    if p == Patch::default() {
        return Err(ApiError::bad("set names no key"));
    }
    Ok(p)
}

/// Logs an `Admin` record on this core.
async fn log(admin: &Rc<Admin>, what: String, by: &str, reason: &str) {
    let me = admin.control.core().index;
    let request = Request::Log {
        what,
        by: by.to_string(),
        reason: reason.to_string(),
    };
    admin.control.ask(me, request).await;
}

/// Puts a suspension, reroute or override in force on every core.
pub async fn act(admin: &Rc<Admin>, call: &Call) -> Answer {
    let m = body(call)?;
    let extra: &[&str] = match call.route {
        super::routes::Route::Reroute => &["pool", "next_hop", "duration_s", "reason"],
        super::routes::Route::Override => &["set", "duration_s", "reason"],
        _ => &["duration_s", "reason"],
    };
    known_keys(&m, &[&Selector::KEYS[..], extra].concat())?;
    let (selector, what) = what(admin, call, &m)?;
    let (length, reason) = (duration(&m)?, reason(&m)?);
    let action = Action {
        id: admin.action_id(),
        selector,
        what,
        until: Instant::now() + length,
        until_ms: crate::delivery_log::now_ms() + length.as_millis() as u64,
        by: call.by.clone(),
        reason: reason.clone(),
    };
    let mut failure = None;
    for reply in admin.control.ask_all(|| Request::Act(action.clone())).await {
        match reply {
            Reply::Acted(true) => {}
            Reply::Acted(false) => {
                failure = Some(ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "too many actions in force",
                ))
            }
            Reply::Unavailable(c) => failure = Some(ApiError::unavailable(c)),
            _ => unreachable!(),
        }
    }
    if let Some(e) = failure {
        // In force on every core or on none: the cores that took it end it.
        admin.control.ask_all(|| Request::End(action.id)).await;
        return Err(e);
    }
    log(admin, action.describe(), &call.by, &reason).await;
    let mut v = action_json(&action);
    merge(&mut v, json!({ "id": format!("a{}", action.id) }));
    Ok(json(StatusCode::CREATED, &v))
}

/// Ends an action (of `kind` only, if given) on every core.
pub async fn end_action(admin: &Rc<Admin>, call: &Call, kind: Option<&str>) -> Answer {
    let id = call
        .param
        .strip_prefix('a')
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| ApiError::not_found(format!("no action {}", call.param)))?;
    let reason = reason_only(call)?;
    let found = own_actions(admin).await?.into_iter().find(|a| a.id == id);
    let Some(action) = found.filter(|a| kind.is_none_or(|k| a.kind() == k)) else {
        return Err(ApiError::not_found(format!(
            "no {} a{id} in force",
            kind.unwrap_or("action")
        )));
    };
    for reply in admin.control.ask_all(|| Request::End(id)).await {
        if let Reply::Unavailable(c) = reply {
            return Err(ApiError::unavailable(c));
        }
    }
    log(
        admin,
        format!("end {} (action a{id})", action.describe()),
        &call.by,
        &reason,
    )
    .await;
    ok(&json!({ "id": format!("a{id}"), "ended": true }))
}

pub async fn bounce(admin: &Rc<Admin>, call: &Call) -> Answer {
    let m = body(call)?;
    known_keys(&m, &[&Selector::KEYS[..], &["reason"]].concat())?;
    let selector = selector(&m, &["domain", "provider", "tenant", "campaign"])?;
    let reason = reason(&m)?;
    let mut bounced = 0;
    let (by, sel) = (call.by.clone(), selector.clone());
    let ask = || Request::Bounce {
        selector: sel.clone(),
        by: by.clone(),
        reason: reason.clone(),
    };
    for reply in admin.control.ask_all(ask).await {
        match reply {
            Reply::Bounced(n) => bounced += n,
            Reply::Unavailable(c) => return Err(ApiError::unavailable(c)),
            _ => unreachable!(),
        }
    }
    log(
        admin,
        format!("bounce {selector}: {bounced} recipients"),
        &call.by,
        &reason,
    )
    .await;
    ok(&json!({ "bounced": bounced }))
}

pub async fn reload(admin: &Rc<Admin>, call: &Call) -> Answer {
    let reason = reason_only(call)?;
    let published = admin.control.core().shaper.published();
    // Reading and checking the file blocks: off the core.
    let result = glommio::executor()
        .spawn_blocking(move || published.reload().map_err(|e| e.to_string()))
        .await;
    match result {
        Ok(Some(n)) => {
            log(
                admin,
                format!("shaping rules reloaded ({n} destination rules)"),
                &call.by,
                &reason,
            )
            .await;
            ok(&json!({ "destination_rules": n }))
        }
        Ok(None) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no shaping file is configured",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("shaping file {e}; the old rules stay in force"),
        )),
    }
}

/// Where a message is: its queued recipients on every core, and its
/// records in the delivery logs.
pub async fn trace(admin: &Rc<Admin>, call: &Call) -> Answer {
    use super::routes::Route;
    let (id, recipient) = if call.route == Route::Message {
        let id = u64::from_str_radix(&call.param, 16)
            .ok()
            .filter(|_| call.param.len() == 16)
            .ok_or_else(|| ApiError::bad("a message id is 16 hex digits"))?;
        (Some(id), None)
    } else {
        let r = call.query("recipient").filter(|r| r.contains('@'));
        (
            None,
            Some(
                r.ok_or_else(|| ApiError::bad("recipient=ADDRESS is needed"))?
                    .to_string(),
            ),
        )
    };
    let mut queued: Vec<Queued> = Vec::new();
    let ask = || Request::Find {
        id,
        recipient: recipient.clone(),
    };
    for reply in admin.control.ask_all(ask).await {
        match reply {
            Reply::Found(f) => queued.extend(f),
            Reply::Unavailable(c) => return Err(ApiError::unavailable(c)),
            _ => unreachable!(),
        }
    }
    let dir = admin.control.core().cfg.log_dir.clone();
    let (want_id, want_rcpt) = (id.map(|i| format!("{i:016x}")), recipient.clone());
    let history = glommio::executor()
        .spawn_blocking(move || {
            super::events::history(&dir, want_id.as_deref(), want_rcpt.as_deref())
        })
        .await;
    let mut ids: Vec<String> = queued.iter().map(|q| q.id.clone()).collect();
    ids.extend(
        history
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_string)),
    );
    ids.retain(|i| !i.is_empty());
    ids.sort();
    ids.dedup();
    if call.route == Route::Message && ids.is_empty() {
        return Err(ApiError::not_found(format!(
            "no message {} queued or in the logs",
            call.param
        )));
    }
    let messages: Vec<Value> = ids
        .iter()
        .map(|i| {
            let q: Vec<&Queued> = queued.iter().filter(|q| &q.id == i).collect();
            let h: Vec<&Value> = history.iter().filter(|r| r["id"] == i.as_str()).collect();
            json!({ "id": i, "queued": q, "history": h })
        })
        .collect();
    if call.route == Route::Message {
        return ok(&messages[0]);
    }
    ok(&json!({ "messages": messages }))
}
