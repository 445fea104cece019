//! The platform routes: HTTP injection and one-click unsubscribe (on the
//! injection listener), and the suppression lists (on the admin
//! listener). Injection is answered by this core ([`crate::inject`]);
//! a suppression change goes to the core that owns the address, which
//! puts it in force on every core before the answer.

use super::http::{full, json, ok, Answer, ApiError};
use super::routes::Call;
use super::Admin;
use crate::inject::Refused;
use crate::suppression::lists::{Applied, Change, Op};
use crate::suppression::LIST_LIMIT_MAX;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;
use std::rc::Rc;

pub async fn inject(admin: &Rc<Admin>, call: &Call) -> Answer {
    let injector = admin.injector.as_ref().expect("the injection listener");
    let core = admin.control.core();
    match crate::inject::inject(core, injector, &call.body, &call.peer, admin.tls.is_some()).await {
        Ok(done) => Ok(json(StatusCode::OK, &done)),
        Err(Refused::Bad(m)) => Err(ApiError::bad(m)),
        Err(Refused::Busy(m)) | Err(Refused::Spool(m)) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m))
        }
    }
}

/// RFC 8058: a POST of `List-Unsubscribe=One-Click` to the link.
pub async fn unsubscribe(admin: &Rc<Admin>, call: &Call) -> Answer {
    let injector = admin.injector.as_ref().expect("the injection listener");
    let Some((_, signer)) = &injector.unsubscribe else {
        return Err(ApiError::not_found("unsubscribe links are not configured"));
    };
    let Some((tenant, address)) = signer.check(&call.param) else {
        return Err(ApiError::not_found("no such unsubscribe link"));
    };
    let one_click = form_urlencoded::parse(&call.body)
        .any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click");
    if !one_click {
        return Err(ApiError::bad(
            "the body must be List-Unsubscribe=One-Click (RFC 8058)",
        ));
    }
    let change = Change::new(
        Op::Add,
        &tenant,
        &address,
        "one-click unsubscribe (RFC 8058)",
        "unsubscribe",
        crate::delivery_log::now_ms(),
    )
    .map_err(ApiError::bad)?;
    submit(admin, change).await?;
    Ok(full(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        "You are unsubscribed.\n",
    ))
}

pub fn list(admin: &Rc<Admin>, call: &Call) -> Answer {
    let limit = call.limit(1000, LIST_LIMIT_MAX)?;
    let s = &admin.control.core().suppression;
    let entries = s.list(call.query("tenant"), call.query("address"), limit);
    ok(&json!({ "total": s.len(), "entries": entries }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suppress {
    address: String,
    #[serde(default)]
    tenant: String,
    reason: String,
}

pub async fn suppress(admin: &Rc<Admin>, call: &Call) -> Answer {
    let s: Suppress = serde_json::from_slice(&call.body)
        .map_err(|e| ApiError::bad(format!("request body: {e}")))?;
    if s.reason.trim().is_empty() {
        return Err(ApiError::bad("reason: say why (it is logged)"));
    }
    crate::inject::request::address("address", &s.address).map_err(ApiError::bad)?;
    crate::inject::request::tag("tenant", &s.tenant).map_err(ApiError::bad)?;
    let change = Change::new(
        Op::Add,
        &s.tenant,
        &s.address,
        &s.reason,
        &call.by,
        crate::delivery_log::now_ms(),
    )
    .map_err(ApiError::bad)?;
    let applied = submit(admin, change).await?;
    ok(&json!({ "address": s.address.to_lowercase(), "tenant": s.tenant, "result": name(applied) }))
}

pub async fn unsuppress(admin: &Rc<Admin>, call: &Call) -> Answer {
    let tenant = call.query("tenant").unwrap_or_default();
    crate::inject::request::tag("tenant", tenant).map_err(ApiError::bad)?;
    let reason = call
        .query("reason")
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| ApiError::bad("reason: say why (?reason=...; it is logged)"))?;
    let change = Change::new(
        Op::Remove,
        tenant,
        &call.param,
        reason,
        &call.by,
        crate::delivery_log::now_ms(),
    )
    .map_err(ApiError::bad)?;
    let address = change.address.clone();
    match submit(admin, change).await? {
        Applied::Absent => Err(ApiError::not_found(format!(
            "{address} is not on {} list",
            if tenant.is_empty() {
                "the global".to_string()
            } else {
                format!("tenant {tenant}'s")
            }
        ))),
        applied => ok(&json!({ "address": address, "tenant": tenant, "result": name(applied) })),
    }
}

async fn submit(admin: &Rc<Admin>, change: Change) -> Result<Applied, ApiError> {
    admin
        .control
        .core()
        .suppression
        .submit(change)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))
}

fn name(a: Applied) -> &'static str {
    match a {
        Applied::Added => "added",
        Applied::Renewed => "renewed",
        Applied::Removed => "removed",
        Applied::Absent => "absent",
        Applied::Full => "full",
    }
}
