//! Delivery: each core sends the mail of the domains it owns, over pooled
//! connections per destination domain, and settles every recipient's fate
//! in the spool before forgetting it.
//!
//! The driver task wakes when work becomes ready (new mail, a retry falling
//! due) and opens connections for that domain up to the configured limit.
//! Each connection task resolves the next hop (route, smarthost or MX),
//! connects, and sends the domain's ready entries one transaction each until
//! the queue stays empty for the idle timeout or the per-connection message
//! limit is reached. Nothing here blocks the core; every wait has a timer.

pub mod client;
mod connect;
pub mod next_hop;
pub mod outcome;
pub(crate) mod settle;

pub use connect::{check_source, server_name, ClientStream, TlsClients};

use crate::config::{Config, TlsPolicy};
use crate::dns::DnsError;
use crate::engine::Core;
use crate::queue::{Allow, Entry, Pop, Tags};
use crate::shaping::egress::SourceLease;
use crate::shaping::{self, Limits, ProviderHandle, TenantPlaces};
use client::{Client, OpenError, OpenSpec, Timeouts};
use next_hop::{Hop, Myself, NoHop};
use outcome::Outcome;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Longest the driver sleeps without looking at the queues.
const DRIVER_SLEEP_MAX: Duration = Duration::from_secs(60);
/// Most addresses tried for one connection (RFC 5321 5.1 asks for at least two).
pub const HOPS_TRIED_MAX: usize = 8;

/// The per-core delivery driver. Ends when the core stops.
pub async fn run(core: Rc<Core>) {
    while !core.stop.is_stopped() {
        let now = Instant::now();
        core.queues.release_due(now);
        for domain in core.queues.take_dirty() {
            open_connections(&core, domain);
        }
        let sleep = core
            .queues
            .next_due()
            .map_or(DRIVER_SLEEP_MAX, |due| due.saturating_duration_since(now))
            .min(DRIVER_SLEEP_MAX);
        let woken =
            futures_lite::future::or(core.queues.wake.notified(), glommio::timer::sleep(sleep));
        futures_lite::future::or(woken, core.stop.wait()).await;
    }
}

/// Opens connections for `domain` until there is one per ready entry or
/// the destination's connection limit is reached, as its connection rate
/// allows, and only when its message rate lets a message go; otherwise
/// looks again when it will.
fn open_connections(core: &Rc<Core>, domain: Box<str>) {
    let limits = core.shaper.limits(&domain);
    let now = Instant::now();
    let backoff = core.shaper.backoff(&domain, now);
    if let Some(until) = backoff.suspended_until {
        let at = shaping::backoff::with_jitter(until, until - now);
        return look_again_at(core, domain, at);
    }
    let (ready, open) = core.queues.load(&domain);
    let connections = backoff.connections(limits.connections);
    let want = (ready as u32).min(connections);
    if open >= want {
        return;
    }
    let own_due = limits.message_rate.and_then(|rate| {
        core.shaper
            .message_due(&domain, &rate.scaled(backoff.scale), now)
    });
    if let Some(at) = own_due.max(core.shaper.provider_message_due(&domain, now)) {
        return look_again_at(core, domain, at);
    }
    for _ in open..want {
        if let Some(rate) = &limits.connection_rate {
            let rate = rate.scaled(backoff.scale);
            if let Err(at) = core.shaper.take_connection(&domain, &rate, now) {
                return look_again_at(core, domain, at);
            }
        }
        core.queues.connection_opened(&domain);
        glommio::spawn_local(connection(core.clone(), domain.clone())).detach();
    }
}

/// Has the driver look at `domain` again at `at` (one timer per domain).
fn look_again_at(core: &Rc<Core>, domain: Box<str>, at: Instant) {
    if !core.shaper.claim_wake(&domain) {
        return;
    }
    let core = core.clone();
    glommio::spawn_local(async move {
        let wait = at.saturating_duration_since(Instant::now());
        futures_lite::future::or(glommio::timer::sleep(wait), core.stop.wait()).await;
        core.shaper.release_wake(&domain);
        core.queues.mark_dirty(&domain);
    })
    .detach();
}

async fn connection(core: Rc<Core>, domain: Box<str>) {
    let busy = serve_domain(&core, &domain).await;
    core.queues.connection_closed(&domain);
    if core.queues.load(&domain).0 == 0 || core.stop.is_stopped() {
        return;
    }
    match busy {
        Some(LookAgain(at)) => look_again_at(&core, domain, at),
        None => core.queues.mark_dirty(&domain),
    }
}

/// A connection that was not made, or ended, because a limit beyond the
/// domain's own count (its provider's, its source's, a rate) has nothing
/// to spare until then: the driver looks at the domain again at that
/// time, not at once.
struct LookAgain(Instant);

/// The host an attempt talked to, for the log and DSNs.
pub struct Remote {
    pub host: String,
    pub ip: IpAddr,
    pub connection: u64,
    /// The source the connection went out from (`[source.NAME]`), and its
    /// warm-up with the destination's provider if it is warming.
    pub source: Option<String>,
    pub warm: Option<shaping::egress::Warm>,
}

/// What every core's delivery shares, read-only: the TLS client settings
/// and the addresses where this host takes mail itself.
pub struct Egress {
    pub tls: TlsClients,
    pub myself: Myself,
}

impl Egress {
    /// Also checks that `delivery.source_address` is one of this host's:
    /// otherwise every attempt would fail until the mail expires.
    pub fn new(cfg: &Config) -> Result<Egress, String> {
        if let Some(source) = cfg.delivery.source_address {
            connect::check_source(source).map_err(|e| {
                format!("delivery.source_address {source} cannot be used on this host: {e}")
            })?;
        }
        Ok(Egress {
            tls: TlsClients::new(cfg.delivery.tls_ca_file.as_deref())?,
            myself: Myself::new(&cfg.listen),
        })
    }
}

/// Where to connect for a domain, in order, with which TLS policy, and
/// the provider its MX hosts make it part of.
struct Plan {
    hops: Vec<Hop>,
    /// The operator's reroute of the domain this plan follows, if any.
    rerouted: Option<crate::config::NextHop>,
    tls: TlsPolicy,
    provider: Option<ProviderHandle>,
}

/// The hops to try for `domain`, or what becomes of its mail when there is
/// none: the DNS said so, every hop is spate itself, or every hop is in
/// `delivery.deny_networks`.
async fn plan(core: &Core, domain: &str) -> Result<Plan, Outcome> {
    let d = &core.cfg.delivery;
    let route = d.route(domain);
    let tls = route.and_then(|r| r.tls).unwrap_or(d.tls);
    let operated = core.shaper.operated_next_hop(domain);
    let hop = operated
        .as_ref()
        .or(route.and_then(|r| r.next_hop.as_ref()))
        .or(d.smarthost.as_ref());
    let dns = |e| dns_outcome(domain, &e);
    let mut hops = Vec::new();
    let mut provider = None;
    if let Some(hop) = hop {
        for ip in core.resolver.addresses(&hop.host).await.map_err(dns)? {
            hops.push(((hop.host.clone(), ip, hop.port), 0));
        }
    } else {
        let targets = core.resolver.mx_targets(domain).await.map_err(dns)?;
        provider = core
            .shaper
            .note_provider(domain, targets.iter().map(|t| t.host.as_str()));
        for target in targets {
            hops.extend(
                target
                    .addrs
                    .iter()
                    .map(|ip| ((target.host.clone(), *ip, d.mx_port), target.preference)),
            );
        }
    }
    let mx = hop.is_none();
    let mut hops = next_hop::permitted(hops, mx, &core.egress.myself, &d.deny_networks)
        .map_err(|why| no_hop_outcome(domain, mx, why))?;
    hops.truncate(HOPS_TRIED_MAX);
    Ok(Plan {
        hops,
        rerouted: operated,
        tls,
        provider,
    })
}

/// What it means for the domain's mail that no hop may be tried. An MX
/// that is spate itself is an error to report (RFC 5321 5.1); a route or
/// smarthost that is spate itself, or a denied network, is the operator's
/// to fix, so the mail waits.
fn no_hop_outcome(domain: &str, mx: bool, why: NoHop) -> Outcome {
    match why {
        NoHop::Loop { host } if mx => Outcome::Bounced(format!(
            "554 5.4.6 mail for {domain} loops back to myself: its mail exchanger {host} is this server"
        )),
        NoHop::Loop { host } => Outcome::Deferred(format!(
            "451 4.4.6 mail for {domain} loops back to myself: the next hop {host} is this server (check the route or smarthost)"
        )),
        NoHop::Denied => Outcome::Deferred(format!(
            "451 4.4.4 {domain}: every address of its mail exchangers is in delivery.deny_networks"
        )),
    }
}

/// Tries the plan's hops in order. Opportunistic TLS that fails falls back
/// to plaintext on the same host; required TLS that fails moves on.
async fn open_client(
    core: &Core,
    plan: &Plan,
    egress: Option<&SourceLease>,
) -> Result<Client, String> {
    let d = &core.cfg.delivery;
    let source = egress.map(|e| e.source());
    let source_address = source.map(|s| s.def.address).or(d.source_address);
    let ehlo_name = source
        .and_then(|s| s.def.ehlo.as_deref())
        .unwrap_or(&d.ehlo_name);
    let timeouts = Timeouts {
        connect: d.connect_timeout,
        command: d.command_timeout,
        final_reply: d.final_reply_timeout,
    };
    let mut last = String::from("no address to connect to");
    for (host, ip, port) in &plan.hops {
        let mut tls = core.egress.tls.for_policy(plan.tls);
        loop {
            let spec = OpenSpec {
                host,
                ip: *ip,
                port: *port,
                source: source_address,
                ehlo_name,
                tls: tls.clone(),
                tls_required: plan.tls == TlsPolicy::Required,
                timeouts,
            };
            match Client::open(spec).await {
                Ok(client) => return Ok(client),
                Err(OpenError::Tls(why))
                    if plan.tls == TlsPolicy::Opportunistic && tls.is_some() =>
                {
                    eprintln!(
                        "spate: core {}: {why}; retrying {host} [{ip}] without TLS",
                        core.index
                    );
                    tls = None;
                }
                Err(OpenError::Tls(why)) | Err(OpenError::Unavailable(why)) => {
                    last = why;
                    break;
                }
                Err(OpenError::NoTls) => {
                    last = format!("{host} [{ip}] does not offer STARTTLS, which is required");
                    break;
                }
            }
        }
    }
    Err(last)
}

/// One connection's life: plan, connect, send until idle or at the limit.
/// It serves the lane (tenant and campaign) first in turn that may send
/// now, and the lanes whose mail goes out from the same pool.
async fn serve_domain(core: &Rc<Core>, domain: &str) -> Option<LookAgain> {
    if let Err(at) = core.queues.next_lane(domain, |tags| {
        allow(core, domain, tags, None, Instant::now())
    }) {
        return at.map(LookAgain);
    }
    let plan = match plan(core, domain).await {
        Ok(plan) => plan,
        Err(outcome) => {
            settle::fail_domain(core, domain, outcome, None).await;
            return None;
        }
    };
    // The plan may have just told this core the domain's provider: a
    // suspension of the provider holds it from here, before connecting.
    if let Some(until) = core.shaper.backoff(domain, Instant::now()).suspended_until {
        return Some(LookAgain(until));
    }
    // Held while the connection is open: the provider's count, all cores.
    let _slot = match plan
        .provider
        .as_ref()
        .map(|p| p.open_connection(Instant::now()))
    {
        Some(Err(at)) => return Some(LookAgain(at)),
        Some(Ok(slot)) => slot,
        None => None,
    };
    // Places in tenants' connection counts: the first lane's tenant's is
    // taken before connecting, and kept until the connection ends.
    let places = TenantPlaces::default();
    let egress = match choose_source(core, domain, plan.provider.as_ref(), &places) {
        Ok(egress) => egress,
        Err(at) => return at.map(LookAgain),
    };
    let asked = egress.as_ref().map(|e| e.asked_pool().to_string());
    let mut client = match open_client(core, &plan, egress.as_ref()).await {
        Ok(c) => c,
        Err(why) => {
            // Only the mail that would have gone out from this pool: other
            // tenants' pools may reach the destination.
            let same_pool = |tags: &Tags| {
                let pool = core.shaper.pool_for(domain, &tags.tenant, Instant::now());
                pool.map(|p| p.name.clone()) == asked
            };
            settle::fail_domain_where(core, domain, Outcome::Deferred(why), None, same_pool).await;
            return None;
        }
    };
    let connection = core.connections_made.get() + 1;
    core.connections_made.set(connection);
    let remote = Remote {
        host: client.host.clone(),
        ip: client.ip,
        connection,
        source: egress.as_ref().map(|e| e.source().name.clone()),
        warm: egress.as_ref().and_then(|e| e.warm().cloned()),
    };
    let mut sent = 0;
    let mut broken = false;
    let provider = plan.provider.as_ref();
    let mut look_again = None;
    loop {
        // Read for each message: a reload or an operator's override
        // reaches connections already open.
        let limits = core.shaper.limits(domain);
        let entry = match next_entry(
            core,
            domain,
            &limits,
            provider,
            egress.as_ref(),
            &places,
            plan.rerouted.as_ref(),
        )
        .await
        {
            Ok((entry, warm)) => {
                if let Some(taken) = warm.filter(|t| t.last) {
                    settle::log_warmup_full(core, domain, &entry, taken, &remote);
                }
                entry
            }
            Err(at) => {
                look_again = at.map(LookAgain);
                break;
            }
        };
        let (outcomes, lost) = send(core, &mut client, &entry).await;
        if let Some(e) = &egress {
            e.sent();
        }
        settle::settle(core, domain, entry, outcomes, Some(&remote)).await;
        sent += 1;
        if lost || sent >= limits.messages_per_connection {
            broken = lost;
            break;
        }
    }
    if !broken {
        client.quit().await;
    }
    look_again
}

/// Most pools one new connection tries, one lane's each, before it waits.
const POOLS_TRIED_MAX: usize = 8;

/// The source of a new connection to `domain`: for the first lane (in
/// turn) that may send now, a place in its tenant's connection count (in
/// `places`) and a source from its pool; when either has none to spare,
/// the next lane of another tenant or pool. `Ok(None)`: no pool, the
/// configured source address. `Err`: no lane can have a connection now,
/// and when one may (`None`: no lane may send).
fn choose_source(
    core: &Core,
    domain: &str,
    provider: Option<&ProviderHandle>,
    places: &TenantPlaces,
) -> Result<Option<SourceLease>, Option<Instant>> {
    let expected = u64::from(core.shaper.limits(domain).messages_per_connection);
    let (mut pools_tried, mut tenants_tried) = (Vec::new(), Vec::new());
    let mut earliest: Option<Instant> = None;
    let mut later = |at: Instant| earliest = Some(earliest.map_or(at, |e: Instant| e.min(at)));
    while pools_tried.len() + tenants_tried.len() < POOLS_TRIED_MAX {
        let now = Instant::now();
        let pool_of = |tags: &Tags| core.shaper.pool_for(domain, &tags.tenant, now);
        let lane = core.queues.next_lane(domain, |tags| {
            if tenants_tried.contains(&tags.tenant)
                || pools_tried.contains(&pool_of(tags).map(|p| p.name.clone()))
            {
                return Allow::No;
            }
            allow(core, domain, tags, None, now)
        });
        let lane = match lane {
            Ok(lane) => lane,
            Err(at) => return Err(at.into_iter().chain(earliest).min()),
        };
        if let Some(tenant) = core.shaper.tenant(&lane.tenant) {
            if let Err(at) = places.admit(&tenant, now) {
                later(at);
                tenants_tried.push(lane.tenant.clone());
                continue;
            }
        }
        let pool = pool_of(&lane);
        let name = pool.as_ref().map(|p| p.name.clone());
        match core.shaper.source_for(pool, provider, expected, now) {
            Ok(egress) => return Ok(egress),
            Err(at) => {
                places.release();
                later(at);
                pools_tried.push(name);
            }
        }
    }
    Err(earliest)
}

/// One transaction for `entry`, its addresses read from the spool record.
/// A recipient suppressed since the message was queued (for its tenant,
/// or globally) is bounced without being sent.
async fn send(core: &Core, client: &mut Client, entry: &Entry) -> (Vec<(u32, Outcome)>, bool) {
    let envelope = entry.message.envelope();
    let mut suppressed = Vec::new();
    let mut addresses = Vec::with_capacity(entry.recipients.len());
    let tenant = (!core.suppression.is_empty()).then(|| envelope.tags().0);
    for &i in &entry.recipients {
        let address = envelope.address(i);
        match tenant
            .as_ref()
            .and_then(|t| core.suppression.check(t, &address))
        {
            Some(why) => {
                let reply = format!("{} {why}; not sent", settle::SUPPRESSED_BOUNCE);
                suppressed.push((i, Outcome::Bounced(reply)))
            }
            None => addresses.push((i, address)),
        }
    }
    if addresses.is_empty() {
        return (suppressed, false);
    }
    let rcpts: Vec<(u32, &str)> = addresses.iter().map(|(i, a)| (*i, a.as_ref())).collect();
    let (mut outcomes, lost) = client.send(&entry.message, &envelope, &rcpts).await;
    outcomes.extend(suppressed);
    (outcomes, lost)
}

/// The next entry for `domain` as its limits allow: waiting up to the idle
/// timeout for one, and for its message rates; cut to
/// `recipients_per_transaction`, the rest put back to go next. `Err`: the
/// connection is done, with when to look at the domain again if a rate's
/// wait is longer than the idle timeout (the driver must not open a new
/// connection before then). A warming source over today's volume ends the
/// connection too: the next one goes out from a source with room.
async fn next_entry(
    core: &Core,
    domain: &str,
    limits: &Limits,
    provider: Option<&ProviderHandle>,
    egress: Option<&SourceLease>,
    places: &TenantPlaces,
    rerouted: Option<&crate::config::NextHop>,
) -> Result<(Entry, Option<shaping::warmup::Taken>), Option<Instant>> {
    let idle = core.cfg.delivery.idle_timeout;
    let deadline = Instant::now() + idle;
    loop {
        if core.stop.is_stopped() {
            return Err(None);
        }
        let now = Instant::now();
        if core.shaper.backoff(domain, now).suspended_until.is_some() {
            // The driver opens connections again when the suspension ends.
            return Err(None);
        }
        if egress.is_some_and(|e| core.shaper.source_held(&e.source().name, now).is_some()) {
            // The operator suspended this connection's source.
            return Err(None);
        }
        if core.shaper.operated_next_hop(domain).as_ref() != rerouted {
            // The operator rerouted the domain (or ended a reroute): the
            // next connection goes where it says.
            return Err(None);
        }
        let today = core.shaper.today();
        if egress.is_some_and(|e| e.overflowed_before(today)) {
            // A new warm-up day: the next connection goes out from the
            // pool asked for, whose warming sources may have room again.
            return Err(None);
        }
        let (work, seen) = core.queues.work_event(domain);
        // Only lanes whose pool is this connection's: after a reroute
        // (or its end), the next connection goes out from the pool in force.
        let asked = Some((egress.map(|e| e.asked_pool()), places));
        let popped = core
            .queues
            .pop_allowed(domain, |tags| allow(core, domain, tags, asked, now));
        let next = match popped {
            Pop::Entry(entry, tags) => Some((entry, tags)),
            Pop::Elsewhere => return Err(None),
            Pop::Wait(at, elsewhere)
                if at.saturating_duration_since(now) > idle
                    || now >= deadline
                    || places.wanted()
                    || provider.is_some_and(|p| p.place_wanted())
                    || egress.is_some_and(|e| e.place_wanted()) =>
            {
                // A long wait, the idle time spent, or another connection
                // wanting a place this one holds: close. The driver looks
                // again at once if lanes of another pool may go now, else
                // when this lane may.
                return Err((!elsewhere).then_some(at));
            }
            Pop::Wait(at, _) => {
                let wait = glommio::timer::sleep(at.saturating_duration_since(now));
                let woken = futures_lite::future::or(wait, work.wait(seen));
                futures_lite::future::or(woken, core.stop.wait()).await;
                continue;
            }
            Pop::Empty => None,
        };
        let holds_shared_place = provider.is_some_and(|p| p.totals.connections.is_some())
            || egress.is_some_and(|e| e.holds_shared_place())
            || places.holds_any();
        if let Some((entry, tags)) = next {
            let now = Instant::now();
            if egress.is_some_and(|e| !e.has_room(today)) {
                core.queues.push_ready(domain, entry, true);
                return Err(None);
            }
            let tenant = core.shaper.tenant(&tags.tenant);
            match take_message(
                core,
                domain,
                limits,
                provider,
                egress,
                tenant.as_deref(),
                now,
            ) {
                Ok(()) => {
                    let Ok(warm) = egress.map_or(Ok(None), |e| e.take_warm(today)) else {
                        // Another core took the source's last message today.
                        core.queues.push_ready(domain, entry, true);
                        return Err(None);
                    };
                    return Ok((first_recipients(core, domain, entry, limits), warm));
                }
                Err(at) => {
                    core.queues.push_ready(domain, entry, true);
                    if at.saturating_duration_since(now) > idle {
                        return Err(Some(at));
                    }
                    let wait = glommio::timer::sleep(at.saturating_duration_since(now));
                    futures_lite::future::or(wait, core.stop.wait()).await;
                    continue;
                }
            }
        }
        if provider.is_some_and(|p| p.place_wanted())
            || egress.is_some_and(|e| e.place_wanted())
            || places.wanted()
        {
            // Idle, and holding a place in a count that spans domains
            // (the provider's, the source's) that another connection
            // wants: let it go rather than idle on it.
            return Err(None);
        }
        let mut left = deadline
            .checked_duration_since(Instant::now())
            .ok_or(None)?;
        if holds_shared_place {
            // Look again soon whether another connection wants the place.
            left = left.min(shaping::provider::WANTED_FOR / 2);
        }
        let waited = futures_lite::future::or(
            async {
                work.wait(seen).await;
                true
            },
            async {
                glommio::timer::sleep(left).await;
                false
            },
        );
        let woken = futures_lite::future::or(waited, async {
            core.stop.wait().await;
            false
        })
        .await;
        if !woken && Instant::now() >= deadline {
            return Err(None);
        }
    }
}

/// One message of the destination's rate, its provider's total, its
/// source's and its tenant's, or when all will let one go. Every limiter
/// is asked before any token is taken, so a refusal spends none.
fn take_message(
    core: &Core,
    domain: &str,
    limits: &Limits,
    provider: Option<&ProviderHandle>,
    egress: Option<&SourceLease>,
    tenant: Option<&shaping::rules::Tenant>,
    now: Instant,
) -> Result<(), Instant> {
    let scale = core.shaper.backoff(domain, now).scale;
    let rate = limits.message_rate.map(|r| r.scaled(scale));
    let due = [
        rate.and_then(|r| core.shaper.message_due(domain, &r, now)),
        provider.and_then(|p| p.message_due(now)),
        egress.and_then(|e| e.message_due(now)),
        tenant.and_then(|t| t.shared.message_due(t.message_rate.as_ref()?, now)),
    ]
    .into_iter()
    .flatten()
    .max();
    if let Some(at) = due {
        return Err(at);
    }
    if let Some(rate) = &rate {
        core.shaper.take_message(domain, rate, now)?;
    }
    // Another core may have taken the last shared token since: then this
    // one waits for the next (its destination token is spent, rarely).
    provider.map_or(Ok(()), |p| p.take_message(now))?;
    egress.map_or(Ok(()), |e| e.take_message(now))?;
    match tenant {
        Some(t) => t
            .message_rate
            .map_or(Ok(()), |rate| t.shared.take_message(&rate, now)),
        None => Ok(()),
    }
}

/// Whether a connection whose source was chosen from pool `asked` may take
/// the next entry of the lane `tags` now (`asked` `None`: any pool, for a
/// connection not yet open). A lane waits for a suspension of its tenant
/// or campaign and for its tenant's rate.
fn allow(
    core: &Core,
    domain: &str,
    tags: &Tags,
    asked: Option<(Option<&str>, &TenantPlaces)>,
    now: Instant,
) -> Allow {
    if let Some((asked, _)) = asked {
        let pool = core.shaper.pool_for(domain, &tags.tenant, now);
        if pool.as_ref().map(|p| p.name.as_str()) != asked {
            return Allow::No;
        }
    }
    if let Some(until) = core.shaper.lane_held(domain, tags, now) {
        return Allow::Until(until);
    }
    let Some(tenant) = core.shaper.tenant(&tags.tenant) else {
        return Allow::Yes;
    };
    if let Some(at) = tenant
        .message_rate
        .and_then(|rate| tenant.shared.message_due(&rate, now))
    {
        return Allow::Until(at);
    }
    // Last: a place in the tenant's connection count is taken here.
    let admitted = match asked {
        Some((_, places)) => places.admit(&tenant, now),
        None => TenantPlaces::would_admit(&tenant, now),
    };
    match admitted {
        Ok(()) => Allow::Yes,
        Err(at) => Allow::Until(at),
    }
}

/// `entry` with at most `recipients_per_transaction` recipients; the
/// others go back to the front of the queue as an entry of their own.
fn first_recipients(core: &Core, domain: &str, mut entry: Entry, limits: &Limits) -> Entry {
    let Some(max) = limits.recipients_per_transaction.map(|n| n as usize) else {
        return entry;
    };
    if entry.recipients.len() > max {
        let rest = entry.recipients.drain(max..).collect();
        let rest = Entry {
            recipients: rest,
            ..entry.clone()
        };
        core.queues.push_ready(domain, rest, true);
    }
    entry
}

/// What a DNS answer means for the domain's recipients.
fn dns_outcome(domain: &str, e: &DnsError) -> Outcome {
    match e {
        DnsError::NullMx => {
            Outcome::Bounced(format!("556 5.1.10 {domain} accepts no mail (null MX)"))
        }
        DnsError::NxDomain => {
            Outcome::Bounced(format!("550 5.1.2 {domain}: domain does not exist"))
        }
        DnsError::NoAddresses => Outcome::Bounced(format!(
            "550 5.1.2 {domain}: no MX record and no address, so it takes no mail"
        )),
        DnsError::NoExchangerAddress => Outcome::Deferred(format!(
            "451 4.4.4 {domain}: no mail exchanger has an address (will retry: DNS may be fixed)"
        )),
        DnsError::Temporary(why) => Outcome::Deferred(format!("451 4.4.3 {domain}: {why}")),
    }
}
