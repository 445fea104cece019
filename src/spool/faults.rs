//! Fault hooks on the commit path, so tests can hold a sync open or make it
//! fail. Production runs with `Faults::default()`, which does nothing.
//!
//! `SPATE_FAULT_SYNC_FAIL=N` in the environment makes the first N record
//! syncs of every core fail; the integration tests use it to show that a
//! failed sync never turns into a 250. `SPATE_FAULT_SYNC_DELAY_MS=N` makes
//! every record sync take N ms longer, a disk that stalls.

use glommio::sync::Semaphore;
use std::cell::Cell;
use std::io;
use std::rc::Rc;

#[derive(Default)]
pub struct Faults {
    /// When set, every record sync first takes one permit: a test holds syncs
    /// open by giving none and releases them one by one.
    pub sync_gate: Option<Rc<Semaphore>>,
    /// This many of the next syncs fail with EIO.
    pub fail_syncs: Cell<u32>,
    /// Every sync first waits this long.
    pub sync_delay: Option<std::time::Duration>,
}

impl Faults {
    pub fn from_env() -> Faults {
        let number = |name: &str| -> u64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let delay = number("SPATE_FAULT_SYNC_DELAY_MS");
        Faults {
            sync_gate: None,
            fail_syncs: Cell::new(number("SPATE_FAULT_SYNC_FAIL") as u32),
            sync_delay: (delay > 0).then(|| std::time::Duration::from_millis(delay)),
        }
    }

    pub(super) async fn before_sync(&self) -> io::Result<()> {
        if let Some(gate) = &self.sync_gate {
            gate.acquire(1)
                .await
                .map_err(|_| io::Error::other("sync gate closed"))?;
        }
        if let Some(delay) = self.sync_delay {
            glommio::timer::sleep(delay).await;
        }
        let fail = self.fail_syncs.get();
        if fail > 0 {
            self.fail_syncs.set(fail - 1);
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}
