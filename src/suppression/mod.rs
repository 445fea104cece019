//! Suppression: addresses that must get no more mail, on a global list
//! (tenant `""`) and on one list per tenant. A hard bounce of the
//! invalid-recipient class adds the address to the global list (the
//! mailbox does not exist, for anyone's mail); a complaint or a one-click
//! unsubscribe adds it to the list of the tenant whose mail it was about;
//! operators add and remove through the admin API.
//!
//! Every core holds a full copy of the lists ([`lists::Lists`]), so the
//! checks at RCPT, at HTTP injection and before delivery never leave the
//! core. A change is owned by the core that owns the address's domain: it
//! journals the change durably ([`journal`]; read back and compacted at
//! start by [`load`]), applies it, gives it to
//! every other core over the control mesh, and only then logs a
//! `Suppression` record and answers. Changes to one address are therefore
//! made in one order everywhere. This module must never block a core: the
//! journal writes through io_uring, and a change made on behalf of a
//! bounce runs in a task of its own, never in the delivery path.

pub mod journal;
pub mod lists;
pub mod load;

use crate::control::{Control, Reply, Request};
use crate::delivery_log::{DeliveryLog, Kind, Record};
use lists::{Applied, Change, Listed, Lists, Op};
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::{Rc, Weak};

/// Entries one list request returns at most.
pub const LIST_LIMIT_MAX: usize = 10_000;

/// One core's copy of the lists and its share of the journal.
pub struct Suppression {
    core: usize,
    cores: usize,
    lists: RefCell<Lists>,
    journal: Rc<journal::Journal>,
    log: Rc<DeliveryLog>,
    control: OnceCell<Weak<Control>>,
    /// The time of the last change this core committed.
    last_ms: Cell<u64>,
}

impl Suppression {
    pub fn new(
        core: usize,
        cores: usize,
        lists: Lists,
        journal: Rc<journal::Journal>,
        log: Rc<DeliveryLog>,
    ) -> Suppression {
        Suppression {
            core,
            cores,
            lists: RefCell::new(lists),
            journal,
            log,
            control: OnceCell::new(),
            last_ms: Cell::new(0),
        }
    }

    /// Gives the lists their way to the other cores (once, at start).
    pub fn attach(&self, control: &Rc<Control>) {
        let _ = self.control.set(Rc::downgrade(control));
    }

    /// Which list keeps `address` from getting mail of `tenant`, if one
    /// does.
    pub fn check(&self, tenant: &str, address: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let address = lists::normalize(address).ok()?;
        let lists = self.lists.borrow();
        // The reason stays out: it is anyone's text, and this goes into
        // SMTP replies and bounce records.
        let (list, _) = lists.check(tenant, &address)?;
        let list = if list.is_empty() {
            "the global suppression list".to_string()
        } else {
            format!("tenant {list}'s suppression list")
        };
        Some(format!("{address} is on {list}"))
    }

    pub fn len(&self) -> usize {
        self.lists.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.borrow().is_empty()
    }

    pub fn list(&self, tenant: Option<&str>, address: Option<&str>, limit: usize) -> Vec<Listed> {
        let address = address.map(|a| lists::normalize(a).unwrap_or_else(|_| a.to_string()));
        self.lists.borrow().list(tenant, address.as_deref(), limit)
    }

    /// Makes `change` on the core that owns it; returns once every core
    /// has it in force.
    pub async fn submit(&self, change: Change) -> Result<Applied, String> {
        let owner = crate::router::owner_of(change.domain(), self.cores);
        // Asked over the mesh even when this core owns it: the commit then
        // runs in a task of its own, which a client going away (dropping
        // this future) cannot cut between the journal and the other cores.
        let control = self.control()?;
        match control.ask(owner, Request::Suppress(change)).await {
            Reply::Suppressed(r) => r,
            Reply::Unavailable(c) => Err(format!("core {c} did not answer")),
            _ => unreachable!("a suppression change answers Suppressed"),
        }
    }

    /// Makes `change` in a task of its own (for the delivery path, which
    /// must not wait on a journal write); failures are reported.
    pub fn submit_later(self: &Rc<Self>, change: Change) {
        let me = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = me.submit(change.clone()).await {
                eprintln!(
                    "spate: core {}: suppressing {}: {e}",
                    me.core, change.address
                );
            }
        })
        .detach();
    }

    /// On the owning core: journal, apply, give to every core, log.
    pub async fn commit(&self, mut change: Change) -> Result<Applied, String> {
        let listed = self
            .lists
            .borrow()
            .contains(&change.tenant, &change.address);
        match (change.op, listed) {
            // Nothing to change: no journal line, no replication (a burst
            // of bounces, or a link clicked again, costs nothing).
            (Op::Add, true) => return Ok(Applied::Renewed),
            (Op::Remove, false) => return Ok(Applied::Absent),
            (Op::Add, false) if self.len() >= self.lists.borrow().max() => {
                return Err(format!(
                    "the suppression lists are full ({} entries)",
                    self.len()
                ))
            }
            _ => {}
        }
        // The owner's clock, never going back: one address's changes are
        // loaded at start in the order they were made.
        let at = crate::delivery_log::now_ms().max(self.last_ms.get());
        change.time_ms = at;
        self.last_ms.set(at);
        self.journal.append(&change).await?;
        let applied = self.lists.borrow_mut().apply(&change);
        let control = self.control()?;
        let others = (0..self.cores).filter(|&c| c != self.core).map(|to| {
            let control = control.clone();
            let change = change.clone();
            glommio::spawn_local(async move { control.ask(to, Request::Replicate(change)).await })
        });
        let asks: Vec<_> = others.collect();
        let mut missed = Vec::new();
        for ask in asks {
            if let Reply::Unavailable(c) = ask.await {
                missed.push(c);
            }
        }
        self.log_change(&change, applied);
        if !missed.is_empty() {
            // Journaled and in force here; the others load it at restart.
            return Err(format!(
                "journaled, but cores {missed:?} did not take it in time"
            ));
        }
        Ok(applied)
    }

    /// A change another core committed.
    pub fn replicate(&self, change: &Change) {
        self.lists.borrow_mut().apply(change);
    }

    fn control(&self) -> Result<Rc<Control>, String> {
        self.control
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| "the control mesh is not up".to_string())
    }

    fn log_change(&self, c: &Change, applied: Applied) {
        let what = match applied {
            Applied::Added => "added",
            Applied::Renewed => "renewed",
            Applied::Removed => "removed",
            Applied::Absent => "was not listed",
            Applied::Full => "not added: the lists are full",
        };
        let mut record = Record::admin(what, &c.by, &c.reason, self.core);
        record.kind = Kind::Suppression;
        record.time_ms = c.time_ms;
        record.recipient = &c.address;
        record.domain = c.domain();
        record.tenant = &c.tenant;
        self.log.write(&record);
    }
}
