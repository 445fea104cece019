//! The delivery log: one JSON object per line, one file per core
//! (`<log dir>/delivery-core<N>.jsonl`), one record per event.
//!
//! Records are buffered in memory and written by a flusher task every
//! `FLUSH_INTERVAL` (or when the buffer passes `BUFFER_BYTES_MAX`), so the
//! hot path never waits for the disk. The log is not fsync'd: the spool is
//! the record of truth, the log is for people and tools.

use glommio::io::{BufferedFile, OpenOptions};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
pub const BUFFER_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    Reception,
    Delivery,
    TransientFailure,
    Bounce,
    Expiration,
}

/// One event. Field meanings are documented in the README.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub id: String,
    pub sender: &'a str,
    pub recipient: &'a str,
    pub domain: &'a str,
    pub mx_host: Option<&'a str>,
    pub mx_ip: Option<IpAddr>,
    /// The delivery connection (per core) the attempt used, if one was made.
    pub connection: Option<u64>,
    pub response: &'a str,
    pub attempt: u32,
    pub size: usize,
    /// Milliseconds from reception to this event.
    pub queue_time_ms: u64,
    pub core: usize,
}

pub struct DeliveryLog {
    file: BufferedFile,
    /// One flush at a time, so a final flush waits for one in flight.
    flushing: glommio::sync::Semaphore,
    position: Cell<u64>,
    pending: RefCell<Vec<u8>>,
    core: usize,
}

impl DeliveryLog {
    /// Opens (appending to) this core's log and starts its flusher.
    pub async fn open(dir: &Path, core: usize) -> std::io::Result<Rc<DeliveryLog>> {
        let path = dir.join(format!("delivery-core{core}.jsonl"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .buffered_open(&path)
            .await?;
        let position = file.file_size().await?;
        let log = Rc::new(DeliveryLog {
            file,
            flushing: glommio::sync::Semaphore::new(1),
            position: Cell::new(position),
            pending: RefCell::new(Vec::new()),
            core,
        });
        let flusher = log.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(FLUSH_INTERVAL).await;
                flusher.flush().await;
            }
        })
        .detach();
        Ok(log)
    }

    pub fn core(&self) -> usize {
        self.core
    }

    /// Adds one record; never waits.
    pub fn write(&self, record: &Record<'_>) {
        let mut pending = self.pending.borrow_mut();
        if pending.len() > BUFFER_BYTES_MAX {
            // The disk is far behind: drop rather than grow without bound.
            return;
        }
        serde_json::to_writer(&mut *pending, record).expect("records serialize");
        pending.push(b'\n');
    }

    /// Writes what is buffered.
    pub async fn flush(&self) {
        let Ok(_permit) = self.flushing.acquire_permit(1).await else {
            return;
        };
        let buf = std::mem::take(&mut *self.pending.borrow_mut());
        if buf.is_empty() {
            return;
        }
        let len = buf.len() as u64;
        let at = self.position.get();
        self.position.set(at + len);
        if let Err(e) = self.file.write_at(buf, at).await {
            eprintln!("spate: core {}: delivery log write failed: {e}", self.core);
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
