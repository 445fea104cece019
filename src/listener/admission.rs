//! What one core's listener lets in: sessions (per core and per client
//! address) and the memory that open DATA transactions hold.
//!
//! Owns the counts; sessions take a [`SessionPass`] and DATA bodies take a
//! [`DataLease`], and dropping either gives its share back. Never blocks
//! and never waits: a request over a limit is refused at once, and the
//! session tells its client to try again later.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

/// The first bytes of each message's DATA that the budget does not count:
/// small messages are never refused for memory, whatever large ones hold.
/// Their total is bounded by the session limits.
pub const DATA_FREE_BYTES: usize = 64 * 1024;

/// One core's admission state.
pub struct Inbound {
    /// From each final dot to its reply (the listener's whole latency:
    /// signing, append, group commit).
    pub final_dot: crate::meter::Histogram,
    sessions: Cell<usize>,
    per_ip: RefCell<HashMap<IpAddr, u32>>,
    data: Rc<DataBudget>,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    CoreFull,
    AddressFull,
}

impl Inbound {
    pub fn new(data_bytes_max: u64) -> Inbound {
        Inbound {
            final_dot: crate::meter::Histogram::new(crate::meter::LATENCY_BOUNDS),
            sessions: Cell::new(0),
            per_ip: RefCell::default(),
            data: Rc::new(DataBudget {
                held: Cell::new(0),
                max: data_bytes_max as usize,
            }),
        }
    }

    /// Open sessions on this core.
    pub fn sessions(&self) -> usize {
        self.sessions.get()
    }

    /// Counts a new session from `ip`, within both limits.
    pub fn admit(
        self: &Rc<Self>,
        ip: IpAddr,
        per_core_max: u32,
        per_ip_max: u32,
    ) -> Result<SessionPass, Refusal> {
        if self.sessions.get() >= per_core_max as usize {
            return Err(Refusal::CoreFull);
        }
        let mut per_ip = self.per_ip.borrow_mut();
        let from_ip = per_ip.entry(ip).or_default();
        if *from_ip >= per_ip_max {
            if *from_ip == 0 {
                per_ip.remove(&ip);
            }
            return Err(Refusal::AddressFull);
        }
        *from_ip += 1;
        self.sessions.set(self.sessions.get() + 1);
        Ok(SessionPass {
            inbound: self.clone(),
            ip,
        })
    }

    /// An empty lease on this core's DATA budget.
    pub fn data_lease(&self) -> DataLease {
        DataLease {
            budget: self.data.clone(),
            held: 0,
        }
    }

    /// Bytes of DATA held past the free share, all sessions together.
    pub fn data_bytes_held(&self) -> usize {
        self.data.held.get()
    }
}

/// One open session; dropping it gives the place back.
pub struct SessionPass {
    inbound: Rc<Inbound>,
    ip: IpAddr,
}

impl Drop for SessionPass {
    fn drop(&mut self) {
        let inbound = &self.inbound;
        inbound.sessions.set(inbound.sessions.get() - 1);
        let mut per_ip = inbound.per_ip.borrow_mut();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// The bytes of DATA one core may hold past each message's free share.
struct DataBudget {
    held: Cell<usize>,
    max: usize,
}

/// What one message's body holds of the budget. Dropped (when the message
/// is refused, or durable and its buffer gone) it gives it all back.
pub struct DataLease {
    budget: Rc<DataBudget>,
    held: usize,
}

impl DataLease {
    /// Makes the lease cover a buffer of `capacity` bytes: true if it does
    /// (the budget had room, or the buffer is within the free share).
    pub fn cover(&mut self, capacity: usize) -> bool {
        let want = capacity.saturating_sub(DATA_FREE_BYTES);
        if want <= self.held {
            return true;
        }
        let more = want - self.held;
        let b = &self.budget;
        if b.held.get() + more > b.max {
            return false;
        }
        b.held.set(b.held.get() + more);
        self.held = want;
        true
    }

    /// Gives back everything this lease holds.
    pub fn release(&mut self) {
        self.budget.held.set(self.budget.held.get() - self.held);
        self.held = 0;
    }
}

impl Drop for DataLease {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_never_pass_the_budget_and_give_it_back() {
        let inbound = Inbound::new(1 << 20);
        let mut a = inbound.data_lease();
        let mut b = inbound.data_lease();
        assert!(a.cover(DATA_FREE_BYTES), "the free share costs nothing");
        assert_eq!(inbound.data_bytes_held(), 0);
        assert!(a.cover(DATA_FREE_BYTES + (768 << 10)));
        assert!(!b.cover(DATA_FREE_BYTES + (512 << 10)), "over the budget");
        assert!(b.cover(DATA_FREE_BYTES + (256 << 10)));
        assert_eq!(inbound.data_bytes_held(), 1 << 20);
        drop(a);
        assert_eq!(inbound.data_bytes_held(), 256 << 10);
        b.release();
        assert_eq!(inbound.data_bytes_held(), 0);
        let mut c = inbound.data_lease();
        assert!(c.cover(DATA_FREE_BYTES + (1 << 20)));
    }

    #[test]
    fn sessions_are_counted_per_core_and_per_address() {
        let inbound = Rc::new(Inbound::new(0));
        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let p1 = inbound.admit(x, 3, 2).unwrap();
        let _p2 = inbound.admit(x, 3, 2).unwrap();
        assert_eq!(inbound.admit(x, 3, 2).err(), Some(Refusal::AddressFull));
        let _p3 = inbound.admit(y, 3, 2).unwrap();
        assert_eq!(inbound.admit(y, 3, 2).err(), Some(Refusal::CoreFull));
        drop(p1);
        assert_eq!(inbound.sessions(), 2);
        assert!(inbound.admit(x, 3, 2).is_ok());
    }
}
