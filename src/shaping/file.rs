//! The shaping file as written, checked into [`Rules`]: every value is
//! validated, and an error names the line and the key.
//!
//! Pure: text in, rules or an error out.

use super::backoff::{ResponseRule, Scope, RULES_MAX};
use super::egress::{self, RawPool, RawSource, SourceDef};
use super::rate::Rate;
use super::rules::{Partial, Retry, Rules, TenantDef, Totals};
use super::warmup::{self, Overflow, Plan};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Most destination rules in one file.
pub const DESTINATIONS_MAX: usize = 100_000;
/// Most provider rules, and MX suffixes per provider (each domain's MX
/// hosts are matched against all of them).
pub const PROVIDERS_MAX: usize = 256;
pub const PROVIDER_SUFFIXES_MAX: usize = 64;
/// Longest duration anywhere in the file (retry intervals, expiry, reply
/// rules): 90 days.
pub const DURATION_SECS_MAX: u64 = 90 * 86_400;
/// Most intervals in a retry schedule.
pub const RETRY_STEPS_MAX: usize = 32;
/// Most tenant rules.
pub const TENANTS_MAX: usize = 10_000;

/// A shaping file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: line {line}: {key}: {reason}")]
pub struct ShapingError {
    pub path: String,
    pub line: usize,
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    default: Option<RawLimits>,
    #[serde(default)]
    destination: BTreeMap<String, Spanned<RawLimits>>,
    #[serde(default)]
    provider: BTreeMap<String, Spanned<RawLimits>>,
    #[serde(default)]
    source: BTreeMap<String, RawSource>,
    #[serde(default)]
    pool: BTreeMap<String, RawPool>,
    #[serde(default)]
    warmup: BTreeMap<String, RawWarmup>,
    #[serde(default)]
    tenant: BTreeMap<String, RawTenant>,
}

/// One `[tenant.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    pool: Option<String>,
    message_rate: Option<String>,
    connections: Option<i64>,
}

/// One `[warmup.NAME]` plan as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWarmup {
    daily: Vec<i64>,
    overflow: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    /// Providers only: the MX host suffixes that make a domain theirs.
    mx_suffix: Option<Spanned<Vec<String>>>,
    connections: Option<Spanned<i64>>,
    message_rate: Option<Spanned<String>>,
    connection_rate: Option<Spanned<String>>,
    messages_per_connection: Option<Spanned<i64>>,
    recipients_per_transaction: Option<Spanned<i64>>,
    retry: Option<Spanned<Vec<String>>>,
    expire: Option<Spanned<String>>,
    pool: Option<Spanned<String>>,
    adaptive: Option<Spanned<bool>>,
    on_response: Option<Vec<RawResponse>>,
    /// Providers only: what each source may send the provider.
    per_source: Option<Spanned<RawPerSource>>,
}

/// A provider's `per_source = { connections = N, message_rate = "R" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerSource {
    connections: Option<i64>,
    message_rate: Option<String>,
}

/// One `[[...on_response]]` rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    #[serde(rename = "match")]
    pattern: String,
    action: String,
    duration: Option<String>,
    factor: Option<i64>,
    /// reroute: the pool to send through while the rule is in force.
    pool: Option<String>,
    /// suspend: "tenant" or "campaign" holds only the replying message's.
    scope: Option<String>,
}

/// Reads the text of a shaping file (`path` names it in errors).
pub fn parse(text: &str, path: &str) -> Result<Rules, ShapingError> {
    let at = |span: std::ops::Range<usize>, key: &str, reason: String| ShapingError {
        path: path.to_string(),
        line: line_of(text, span.start),
        key: key.to_string(),
        reason,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        ShapingError {
            path: path.to_string(),
            line,
            key: "(syntax)".into(),
            reason: e.message().to_string(),
        }
    })?;
    if raw.destination.len() > DESTINATIONS_MAX {
        return Err(at(
            0..0,
            "destination",
            format!("more than {DESTINATIONS_MAX} rules"),
        ));
    }
    let stray_suffix = raw
        .default
        .iter()
        .filter_map(|d| d.mx_suffix.as_ref())
        .chain(
            raw.destination
                .values()
                .filter_map(|d| d.get_ref().mx_suffix.as_ref()),
        )
        .next();
    if let Some(s) = stray_suffix {
        return Err(at(
            s.span(),
            "mx_suffix",
            "belongs in a [provider.NAME] rule".into(),
        ));
    }
    let default = match &raw.default {
        Some(d) => partial(d, "default", text, &at)?,
        None => Partial::default(),
    };
    let mut destinations = BTreeMap::new();
    for (domain, limits) in &raw.destination {
        let key = format!("destination.\"{domain}\"");
        let name = domain.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(at(limits.span(), &key, "not a domain name".into()));
        }
        let p = partial(limits.get_ref(), &key, text, &at)?;
        if destinations.insert(name, p).is_some() {
            return Err(at(limits.span(), &key, "the domain has two rules".into()));
        }
    }
    let mut providers = BTreeMap::new();
    for (name, limits) in &raw.provider {
        let key = format!("provider.{name}");
        let suffixes = limits.get_ref().mx_suffix.as_ref().ok_or_else(|| {
            at(
                limits.span(),
                &key,
                "needs mx_suffix, the MX host suffixes of its domains".into(),
            )
        })?;
        let mut clean = Vec::new();
        for s in suffixes.get_ref() {
            let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
            if s.trim_start_matches('.').is_empty() || s.contains(char::is_whitespace) {
                let reason = format!("{s:?} is not a host name suffix like \".bigmail.test\"");
                return Err(at(suffixes.span(), &format!("{key}.mx_suffix"), reason));
            }
            clean.push(s);
        }
        if clean.is_empty() || clean.len() > PROVIDER_SUFFIXES_MAX {
            let reason = format!("needs 1 to {PROVIDER_SUFFIXES_MAX} suffixes");
            return Err(at(suffixes.span(), &format!("{key}.mx_suffix"), reason));
        }
        let p = partial(limits.get_ref(), &key, text, &at)?;
        providers.insert(name.clone(), (clean, p));
    }
    let plans = warmup_sections(&raw, text, path)?;
    let (sources, pools) = egress_sections(&raw, &plans, text, path)?;
    for plan in plans.values() {
        if let Overflow::Pool(name) = &plan.overflow {
            if !pools.contains_key(name) {
                return Err(ShapingError {
                    path: path.to_string(),
                    line: line_where(text, |l| {
                        l.starts_with("overflow") && l.contains(&format!("\"{name}\""))
                    }),
                    key: format!("warmup.{}.overflow", plan.name),
                    reason: format!("no [pool.{name}] (a pool, or \"queue\")"),
                });
            }
        }
    }
    let named = |p: &Partial, section: &str| -> Result<(), ShapingError> {
        let refs = p.pool.iter().map(|n| (n.clone(), "pool")).chain(
            p.on_response
                .iter()
                .flat_map(|rules| rules.iter())
                .filter_map(|r| r.pool.clone().map(|n| (n, "on_response"))),
        );
        for (name, key) in refs {
            if !pools.contains_key(&name) {
                return Err(ShapingError {
                    path: path.to_string(),
                    line: line_where(text, |l| {
                        l.starts_with("pool") && l.contains(&format!("\"{name}\""))
                    }),
                    key: format!("{section}.{key}"),
                    reason: format!("no [pool.{name}]"),
                });
            }
        }
        Ok(())
    };
    named(&default, "default")?;
    for (d, p) in &destinations {
        named(p, &format!("destination.\"{d}\""))?;
    }
    for (name, (_, p)) in &providers {
        named(p, &format!("provider.{name}"))?;
    }
    let tenants = tenant_sections(&raw, &pools, text, path)?;
    if providers.len() > PROVIDERS_MAX {
        return Err(at(
            0..0,
            "provider",
            format!("more than {PROVIDERS_MAX} providers"),
        ));
    }
    Ok(Rules::new(default, destinations, providers)
        .with_egress(sources, pools)
        .with_tenants(tenants))
}

/// The `[source.NAME]` and `[pool.NAME]` sections, checked.
#[allow(clippy::type_complexity)]
fn egress_sections(
    raw: &RawFile,
    plans: &BTreeMap<String, Arc<Plan>>,
    text: &str,
    path: &str,
) -> Result<
    (
        BTreeMap<String, SourceDef>,
        BTreeMap<String, Vec<(String, u32)>>,
    ),
    ShapingError,
> {
    let header_line = |kind: &str, name: &str| {
        line_where(text, |l| {
            let l = l.split('#').next().unwrap_or("").trim();
            l == format!("[{kind}.{name}]") || l == format!("[{kind}.\"{name}\"]")
        })
    };
    if raw.source.len() > egress::SOURCES_MAX {
        return Err(ShapingError {
            path: path.to_string(),
            line: 0,
            key: "source".into(),
            reason: format!("more than {} sources", egress::SOURCES_MAX),
        });
    }
    let mut sources = BTreeMap::new();
    for (name, src) in &raw.source {
        let def = egress::source(src, plans).map_err(|(reason, key)| ShapingError {
            path: path.to_string(),
            line: header_line("source", name),
            key: format!("source.{name}.{key}"),
            reason,
        })?;
        sources.insert(name.clone(), def);
    }
    let mut pools = BTreeMap::new();
    for (name, p) in &raw.pool {
        let members = egress::pool(p, &sources).map_err(|reason| ShapingError {
            path: path.to_string(),
            line: header_line("pool", name),
            key: format!("pool.{name}.sources"),
            reason,
        })?;
        pools.insert(name.clone(), members);
    }
    Ok((sources, pools))
}

/// The `[warmup.NAME]` plans, checked.
fn warmup_sections(
    raw: &RawFile,
    text: &str,
    path: &str,
) -> Result<BTreeMap<String, Arc<Plan>>, ShapingError> {
    let mut plans = BTreeMap::new();
    for (name, w) in &raw.warmup {
        let fail = |key: &str, reason: String| ShapingError {
            path: path.to_string(),
            line: line_where(text, |l| {
                let l = l.split('#').next().unwrap_or("").trim();
                l == format!("[warmup.{name}]") || l == format!("[warmup.\"{name}\"]")
            }),
            key: format!("warmup.{name}.{key}"),
            reason,
        };
        if w.daily.is_empty() || w.daily.len() > warmup::PLAN_DAYS_MAX {
            let reason = format!("needs 1 to {} days", warmup::PLAN_DAYS_MAX);
            return Err(fail("daily", reason));
        }
        let max = i64::from(warmup::DAILY_MAX);
        if let Some(bad) = w.daily.iter().find(|n| !(1..=max).contains(*n)) {
            return Err(fail("daily", format!("{bad} is outside 1..={max}")));
        }
        let overflow = match w.overflow.as_deref() {
            None | Some("queue") => Overflow::Queue,
            Some(pool) => Overflow::Pool(pool.to_string()),
        };
        let plan = Plan {
            name: name.clone(),
            daily: w.daily.iter().map(|&n| n as u32).collect(),
            overflow,
        };
        plans.insert(name.clone(), Arc::new(plan));
    }
    Ok(plans)
}

/// The `[tenant.NAME]` sections, checked: each name as a message's
/// `X-Spate-Tenant:` field would give it.
fn tenant_sections(
    raw: &RawFile,
    pools: &BTreeMap<String, Vec<(String, u32)>>,
    text: &str,
    path: &str,
) -> Result<BTreeMap<String, TenantDef>, ShapingError> {
    if raw.tenant.len() > TENANTS_MAX {
        return Err(ShapingError {
            path: path.to_string(),
            line: 0,
            key: "tenant".into(),
            reason: format!("more than {TENANTS_MAX} tenants"),
        });
    }
    let mut tenants = BTreeMap::new();
    for (name, t) in &raw.tenant {
        let fail = |key: &str, reason: String| ShapingError {
            path: path.to_string(),
            line: line_where(text, |l| {
                let l = l.split('#').next().unwrap_or("").trim();
                l == format!("[tenant.{name}]") || l == format!("[tenant.\"{name}\"]")
            }),
            key: format!("tenant.{name}{key}"),
            reason,
        };
        if !spool_format::is_tag(name.as_bytes()) {
            let reason = "a tenant name is 1 to 64 letters, digits, '.', '_' or '-'".into();
            return Err(fail("", reason));
        }
        if let Some(p) = t.pool.as_ref().filter(|p| !pools.contains_key(*p)) {
            return Err(fail(".pool", format!("no [pool.{p}]")));
        }
        let message_rate = t
            .message_rate
            .as_deref()
            .map(Rate::parse)
            .transpose()
            .map_err(|e| fail(".message_rate", e))?;
        let connections = match t.connections {
            None => None,
            Some(n) if (1..=100_000).contains(&n) => Some(n as u32),
            Some(n) => return Err(fail(".connections", format!("{n} is outside 1..=100000"))),
        };
        let def = TenantDef {
            pool: t.pool.clone(),
            message_rate,
            connections,
        };
        tenants.insert(name.clone(), def);
    }
    Ok(tenants)
}

type At<'a> = dyn Fn(std::ops::Range<usize>, &str, String) -> ShapingError + 'a;

fn partial(raw: &RawLimits, section: &str, text: &str, at: &At) -> Result<Partial, ShapingError> {
    let key = |k: &str| format!("{section}.{k}");
    let on_response = match &raw.on_response {
        None => None,
        Some(list) => Some(responses(list, section, text, at)?),
    };
    let per_source = match (&raw.per_source, section.starts_with("provider.")) {
        (None, _) => None,
        (Some(p), false) => {
            let reason = "per_source belongs in a [provider.NAME] rule".into();
            return Err(at(p.span(), &key("per_source"), reason));
        }
        (Some(p), true) => {
            let fail = |reason: String| at(p.span(), &key("per_source"), reason);
            let raw = p.get_ref();
            let connections = match raw.connections {
                None => None,
                Some(n) if (1..=10_000).contains(&n) => Some(n as u32),
                Some(n) => return Err(fail(format!("connections {n} is outside 1..=10000"))),
            };
            let message_rate = raw
                .message_rate
                .as_deref()
                .map(Rate::parse)
                .transpose()
                .map_err(fail)?;
            Some(Totals {
                connections,
                message_rate,
                connection_rate: None,
            })
        }
    };

    let count = |v: &Option<Spanned<i64>>,
                 k: &str,
                 min: i64,
                 max: i64|
     -> Result<Option<u32>, ShapingError> {
        match v {
            None => Ok(None),
            Some(n) if (min..=max).contains(n.get_ref()) => Ok(Some(*n.get_ref() as u32)),
            Some(n) => Err(at(
                n.span(),
                &key(k),
                format!("{} is outside {min}..={max}", n.get_ref()),
            )),
        }
    };
    let rate = |v: &Option<Spanned<String>>, k: &str| -> Result<Option<Rate>, ShapingError> {
        v.as_ref()
            .map(|s| Rate::parse(s.get_ref()).map_err(|e| at(s.span(), &key(k), e)))
            .transpose()
    };
    let retry = match &raw.retry {
        None => None,
        Some(list) => {
            let steps = list
                .get_ref()
                .iter()
                .map(|s| duration(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| at(list.span(), &key("retry"), e))?;
            if steps.is_empty() || steps.len() > RETRY_STEPS_MAX {
                let reason = format!("needs 1 to {RETRY_STEPS_MAX} intervals");
                return Err(at(list.span(), &key("retry"), reason));
            }
            Some(Retry::Schedule(steps.into()))
        }
    };
    let expire = match &raw.expire {
        None => None,
        Some(s) => {
            let d = duration(s.get_ref()).map_err(|e| at(s.span(), &key("expire"), e))?;
            if d > Duration::from_secs(90 * 86_400) {
                return Err(at(s.span(), &key("expire"), "more than 90 days".into()));
            }
            Some(d)
        }
    };
    Ok(Partial {
        connections: count(&raw.connections, "connections", 1, 10_000)?,
        message_rate: rate(&raw.message_rate, "message_rate")?,
        connection_rate: rate(&raw.connection_rate, "connection_rate")?,
        messages_per_connection: count(
            &raw.messages_per_connection,
            "messages_per_connection",
            1,
            1_000_000,
        )?,
        recipients_per_transaction: count(
            &raw.recipients_per_transaction,
            "recipients_per_transaction",
            1,
            100_000,
        )?,
        retry,
        expire,
        on_response,
        adaptive: raw.adaptive.as_ref().map(|a| *a.get_ref()),
        pool: raw.pool.as_ref().map(|p| p.get_ref().clone()),
        per_source,
    })
}

/// The `on_response` rules of a section, in order; a rule in a provider
/// acts on the provider.
fn responses(
    list: &[RawResponse],
    section: &str,
    text: &str,
    at: &At,
) -> Result<std::sync::Arc<[ResponseRule]>, ShapingError> {
    let key = format!("{section}.on_response");
    let fail = |i: usize, reason: String| {
        // The i-th "[[...on_response]]" header of this section.
        let header = format!("[[{section}.on_response]]");
        let line = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.split('#').next().unwrap_or("").trim() == header)
            .nth(i)
            .map_or(0, |(n, _)| n + 1);
        let mut e = at(0..0, &key, reason);
        e.line = line;
        e
    };
    if list.len() > RULES_MAX {
        return Err(fail(0, format!("more than {RULES_MAX} rules")));
    }
    let scope = if section.starts_with("provider.") {
        Scope::Provider
    } else {
        Scope::Destination
    };
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let duration = r
                .duration
                .as_deref()
                .map(duration)
                .transpose()
                .map_err(|e| fail(i, e))?;
            let factor = match r.factor {
                Some(f) if f < 0 => return Err(fail(i, format!("factor {f} is negative"))),
                f => f.map(|f| f as u64),
            };
            let rule = ResponseRule::new(
                &r.pattern,
                &r.action,
                duration,
                factor,
                r.pool.as_deref(),
                scope,
            );
            match &r.scope {
                None => rule,
                Some(lane) => rule.and_then(|rule| rule.with_lane(lane)),
            }
            .map_err(|e| fail(i, e))
        })
        .collect()
}

/// `30s`, `5m` (or `5min`), `2h`, `5d`: at least a second.
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like \"30s\", \"5m\", \"1h\" or \"5d\"");
    let digits = s
        .trim()
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(bad)?;
    let (n, unit) = s.trim().split_at(digits);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" | "min" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(format!("{s:?}: must be at least 1s"));
    }
    if secs > DURATION_SECS_MAX {
        return Err(format!("{s:?}: must be at most 90d"));
    }
    Ok(Duration::from_secs(secs))
}

/// The 1-based number of the first line (trimmed) that `is` says is the
/// one; 0 if none is.
fn line_where(text: &str, is: impl Fn(&str) -> bool) -> usize {
    text.lines().position(|l| is(l.trim())).map_or(0, |i| i + 1)
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_defaults_and_destinations() {
        let rules = parse(
            "[default]\nconnections = 4\nmessage_rate = \"100/s\"\nretry = [\"1m\", \"5m\"]\nexpire = \"2d\"\n\n[destination.\"Example.COM\"]\nmessage_rate = \"20/s,burst=5\"\nrecipients_per_transaction = 50\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(rules.destination_count(), 1);
        assert!(rules.has_destination("example.com"));
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let err = |text: &str| parse(text, "s.toml").unwrap_err();
        let e = err("[default]\nconnections = 4\nmessage_rate = \"100/w\"\n");
        assert_eq!((e.line, e.key.as_str()), (3, "default.message_rate"), "{e}");
        let e = err("[default]\n\n[destination.\"a.test\"]\nconnections = 0\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (4, "destination.\"a.test\".connections"),
            "{e}"
        );
        let e = err("[default]\nretry = [\"1m\", \"soon\"]\n");
        assert_eq!((e.line, e.key.as_str()), (2, "default.retry"), "{e}");
        let e = err("[default]\nconections = 3\n");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.reason.contains("conections"), "{e}");
        let e = err("[default]\nconnections = 3\n[warmup.standard]\ndaily = [50, 0]\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (3, "warmup.standard.daily"),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("s.toml: line 3: warmup.standard.daily: 0 is outside"),
            "{e}"
        );
        let e = err("[warmup.w]\ndaily = [5]\noverflow = \"spare\"\n");
        assert_eq!((e.line, e.key.as_str()), (3, "warmup.w.overflow"), "{e}");
        let e = err("[source.a]\naddress = \"127.0.0.1\"\nwarmup = \"none\"\n");
        assert_eq!((e.line, e.key.as_str()), (1, "source.a.warmup"), "{e}");
        let e = err("[default]\n[tenant.acme]\npool = \"p\"\n");
        assert_eq!((e.line, e.key.as_str()), (2, "tenant.acme.pool"), "{e}");
        let e = err("[tenant.\"a b\"]\nmessage_rate = \"5/s\"\n");
        assert_eq!((e.line, e.key.as_str()), (1, "tenant.a b"), "{e}");
        let e = err("[[default.on_response]]\nmatch = \"x\"\naction = \"throttle\"\nduration = \"1m\"\nscope = \"tenant\"\n");
        assert!(e.reason.contains("suspend"), "{e}");
        let e = err("[provider.big]\nconnections = 3\n");
        assert_eq!((e.line, e.key.as_str()), (1, "provider.big"), "{e}");
        let e = err("[provider.big]\nmx_suffix = [\" \"]\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (2, "provider.big.mx_suffix"),
            "{e}"
        );
        let e = err("[default]\nmx_suffix = [\".x.test\"]\n");
        assert_eq!((e.line, e.key.as_str()), (2, "mx_suffix"), "{e}");
        let e = err("[provider.big]\nmx_suffix = [\".big.test\"]\n\n[[provider.big.on_response]]\nmatch = \"421\"\naction = \"suspend\"\nduration = \"1m\"\n[[provider.big.on_response]]\nmatch = \"(\"\naction = \"suspend\"\nduration = \"1m\"\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "provider.big.on_response"),
            "{e}"
        );
        assert!(e.reason.contains("regular expression"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration("90s").unwrap().as_secs(), 90);
        assert_eq!(duration("5m").unwrap().as_secs(), 300);
        assert_eq!(duration("2h").unwrap().as_secs(), 7200);
        assert_eq!(duration("5d").unwrap().as_secs(), 432_000);
        for bad in ["", "5", "m", "0s", "5w", "-1s"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
    }
}
