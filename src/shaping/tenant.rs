//! Tenants' connection counts as one connection holds them: a place in
//! a tenant's count (`[tenant.NAME] connections`, a total over all
//! destinations and cores, kept in the tenant's shared limits) is taken
//! before a connection opens for the tenant's lane and given back when it
//! moves on to another tenant's mail or closes. Its rate, pool and
//! suspensions are the shaper's (`super::Shaper`).

use super::provider::ConnectionSlot;
use super::rules::Tenant;
use super::PROVIDER_FULL_RETRY;
use std::cell::RefCell;
use std::time::Instant;

/// The place in a tenant's connection count that one connection holds:
/// taken when it first carries the tenant's message, given back when it
/// carries another tenant's or closes.
#[derive(Default)]
pub struct TenantPlaces(RefCell<Vec<(String, ConnectionSlot)>>);

impl TenantPlaces {
    /// Whether this connection may carry `tenant`'s mail: it holds a place
    /// in the tenant's count, or takes one now. `Err`: when to look again.
    pub fn admit(&self, tenant: &Tenant, now: Instant) -> Result<(), Instant> {
        let Some(max) = tenant.connections else {
            return Ok(());
        };
        if self.0.borrow().iter().any(|(name, _)| *name == tenant.name) {
            return Ok(());
        }
        // One tenant's place at a time: a connection that moves on to
        // another tenant's mail gives the last one's place back first, so
        // two connections never wait on each other's places.
        self.0.borrow_mut().clear();
        let slot = tenant
            .shared
            .open_connection(max)
            .ok_or(now + PROVIDER_FULL_RETRY)?;
        self.0.borrow_mut().push((tenant.name.clone(), slot));
        Ok(())
    }

    /// Whether a connection not yet open could take a place for `tenant`.
    pub fn would_admit(tenant: &Tenant, now: Instant) -> Result<(), Instant> {
        match tenant.connections {
            Some(max) if tenant.shared.open_connections() >= max => {
                tenant.shared.note_wanted();
                Err(now + PROVIDER_FULL_RETRY)
            }
            _ => Ok(()),
        }
    }

    /// Gives back the place held, if any.
    pub fn release(&self) {
        self.0.borrow_mut().clear();
    }

    pub fn holds_any(&self) -> bool {
        !self.0.borrow().is_empty()
    }

    /// Whether another connection was refused a place this one holds.
    pub fn wanted(&self) -> bool {
        self.0
            .borrow()
            .iter()
            .any(|(_, slot)| slot.limits().place_wanted())
    }
}
