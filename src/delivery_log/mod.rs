//! The delivery log: one JSON object per line, one file per core
//! (`<log dir>/delivery-core<N>.jsonl`), one record per event.
//!
//! Records are buffered in memory and written by a flusher task every
//! `FLUSH_INTERVAL`, or at once when the buffer passes `BUFFER_BYTES_MAX`,
//! so the hot path never waits for the disk. Only if the disk falls so far
//! behind that the buffer reaches `PENDING_BYTES_MAX` are records dropped,
//! and then they are counted and the count is reported. The log is not
//! fsync'd: the spool is the record of truth, the log is for people and
//! tools.
//!
//! Each record is also counted ([`tally`]: by kind and tenant, and each
//! destination's last replies, for the admin API and metrics) and offered
//! to live subscribers ([`stream`]: the admin server's event streams),
//! which get it at the next flush. Neither may make a write wait.

pub mod stream;
pub mod tally;

use crate::local::Notify;
use glommio::io::{BufferedFile, OpenOptions};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Past this many buffered bytes the flusher is woken at once.
pub const BUFFER_BYTES_MAX: usize = 1 << 20;
/// Past this many buffered bytes records are dropped (and counted): a burst
/// of outcomes (a whole queue deferred at once) fits; a dead disk does not
/// take the core's memory.
pub const PENDING_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Kind {
    Reception,
    Delivery,
    TransientFailure,
    Bounce,
    Expiration,
    /// A message from the null sender (a bounce notice, spate's or one it
    /// relays) bounced or expired: no one can be told, so this record is
    /// the only trace. Written after the message's `Bounce` or `Expiration`.
    DoubleBounce,
    /// A reply rule of the shaping file acted (suspend, throttle, bounce):
    /// the response says what it did to what, and the reply that made it.
    Backoff,
    /// A warming source sent the last message of today's volume for a
    /// provider; the response says how much, which day of which plan, and
    /// where more mail goes today.
    Warmup,
    /// An operator's change through the admin API (suspend, resume,
    /// bounce, reroute, override, reload): the response says what, `by`
    /// names the token, `reason` is theirs.
    Admin,
    /// A recipient complained: an ARF report (RFC 5965) about one of
    /// spate's messages, or a one-click unsubscribe (RFC 8058). `id` is the
    /// original message's, when it was found; `recipient` the complainer.
    Complaint,
    /// A suppression list changed: `recipient` was added to or removed
    /// from the list of `tenant` (the global list when there is none);
    /// `by` says who (a token's name, `bounce`, `complaint`,
    /// `unsubscribe`), `reason` why.
    Suppression,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Reception,
        Kind::Delivery,
        Kind::TransientFailure,
        Kind::Bounce,
        Kind::Expiration,
        Kind::DoubleBounce,
        Kind::Backoff,
        Kind::Warmup,
        Kind::Admin,
        Kind::Complaint,
        Kind::Suppression,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Reception => "Reception",
            Kind::Delivery => "Delivery",
            Kind::TransientFailure => "TransientFailure",
            Kind::Bounce => "Bounce",
            Kind::Expiration => "Expiration",
            Kind::DoubleBounce => "DoubleBounce",
            Kind::Backoff => "Backoff",
            Kind::Warmup => "Warmup",
            Kind::Admin => "Admin",
            Kind::Complaint => "Complaint",
            Kind::Suppression => "Suppression",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
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
    /// The `[source.NAME]` of the shaping file the connection went out
    /// from; `None` without pools.
    pub source: Option<&'a str>,
    pub response: &'a str,
    pub attempt: u32,
    pub size: usize,
    /// Milliseconds from reception to this event.
    pub queue_time_ms: u64,
    pub core: usize,
    /// The message's tenant and campaign (`X-Spate-Tenant`,
    /// `X-Spate-Campaign`); left out when it named none.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub tenant: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub campaign: &'a str,
    /// `Admin` records: the name of the token that made the change, and
    /// the reason given with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// Failures (`TransientFailure`, `Bounce`, `Expiration`) and
    /// complaints: the bounce class ([`crate::classify::Class`]), e.g.
    /// `invalid_recipient`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<&'a str>,
    /// `Reception` records: the message's Message-ID, without angle
    /// brackets (complaint reports are matched by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<&'a str>,
}

impl Record<'_> {
    /// An `Admin` record: `what` was done by `by`, for `reason`.
    pub fn admin<'a>(what: &'a str, by: &'a str, reason: &'a str, core: usize) -> Record<'a> {
        Record {
            kind: Kind::Admin,
            time_ms: now_ms(),
            id: String::new(),
            sender: "",
            recipient: "",
            domain: "",
            mx_host: None,
            mx_ip: None,
            connection: None,
            source: None,
            response: what,
            attempt: 0,
            size: 0,
            queue_time_ms: 0,
            core,
            tenant: "",
            campaign: "",
            by: Some(by),
            reason: Some(reason),
            class: None,
            message_id: None,
        }
    }
}

/// Opens (creating) a file of lines to append to: the file, its size, and
/// whether its last line is torn (does not end in `\n`).
pub async fn open_lines(path: &Path) -> std::io::Result<(BufferedFile, u64, bool)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .buffered_open(path)
        .await?;
    let size = file.file_size().await?;
    let torn = size > 0 && *file.read_at(size - 1, 1).await? != [b'\n'];
    Ok((file, size, torn))
}

pub struct DeliveryLog {
    file: BufferedFile,
    /// One flush at a time, so a final flush waits for one in flight.
    flushing: glommio::sync::Semaphore,
    position: Cell<u64>,
    pending: RefCell<Vec<u8>>,
    /// Wakes the flusher before its interval when the buffer is large.
    kick: Notify,
    /// Records dropped since the last report.
    dropped: Cell<u64>,
    core: usize,
    pub tally: tally::Tally,
    pub stream: stream::Stream,
}

/// This core's log file in `dir` (read by [`crate::webhook`] too).
pub fn file_path(dir: &Path, core: usize) -> std::path::PathBuf {
    dir.join(format!("delivery-core{core}.jsonl"))
}

impl DeliveryLog {
    /// Opens (appending to) this core's log and starts its flusher.
    pub async fn open(dir: &Path, core: usize) -> std::io::Result<Rc<DeliveryLog>> {
        let (file, position, torn) = open_lines(&file_path(dir, core)).await?;
        // A crash can leave half a line at the end: start on a line of our
        // own, so the next record is not glued to it.
        let pending = if torn { vec![b'\n'] } else { Vec::new() };
        let log = Rc::new(DeliveryLog {
            file,
            flushing: glommio::sync::Semaphore::new(1),
            position: Cell::new(position),
            pending: RefCell::new(pending),
            kick: Notify::default(),
            dropped: Cell::new(0),
            core,
            tally: tally::Tally::default(),
            stream: stream::Stream::default(),
        });
        let flusher = log.clone();
        glommio::spawn_local(async move {
            loop {
                let tick = glommio::timer::sleep(FLUSH_INTERVAL);
                futures_lite::future::or(tick, flusher.kick.notified()).await;
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
        self.tally.count(record);
        let mut pending = self.pending.borrow_mut();
        if pending.len() > PENDING_BYTES_MAX {
            // The disk is far behind: drop rather than grow without bound.
            self.dropped.set(self.dropped.get() + 1);
            return;
        }
        let start = pending.len();
        serde_json::to_writer(&mut *pending, record).expect("records serialize");
        pending.push(b'\n');
        self.stream.offer(record, &pending[start..]);
        if pending.len() > BUFFER_BYTES_MAX {
            self.kick.notify();
        }
    }

    /// Writes what is buffered.
    pub async fn flush(&self) {
        let Ok(_permit) = self.flushing.acquire_permit(1).await else {
            return;
        };
        self.stream.dispatch();
        let dropped = self.dropped.replace(0);
        if dropped > 0 {
            eprintln!(
                "spate: core {}: the delivery log fell behind the disk; {dropped} records were dropped",
                self.core
            );
        }
        let buf = std::mem::take(&mut *self.pending.borrow_mut());
        if buf.is_empty() {
            return;
        }
        let len = buf.len() as u64;
        let at = self.position.get();
        self.position.set(at + len);
        if let Err(e) = self.file.write_at(buf, at).await {
            eprintln!("spate: core {}: delivery log write failed: {e}", self.core);
            return;
        }
        self.start_writeback(at, len).await;
    }

    /// Starts writing what was just written out to the disk, without
    /// waiting for it. Left to the kernel's writeback, a core's log reached
    /// the disk in a burst every 5 s (`vm.dirty_writeback_centisecs`), and
    /// the spool's fdatasyncs, whose device flush waits for such a burst,
    /// took 25-67 ms then: the largest part of the final-dot tail on ext4
    /// (`perf/results/2026-12-04-tail.md`). Off the core's thread: starting
    /// writeback can wait for the device's queue.
    async fn start_writeback(&self, at: u64, len: u64) {
        let fd = self.file.as_raw_fd();
        let started = glommio::executor()
            .spawn_blocking(move || {
                // SAFETY: plain syscall on a descriptor that `self.file`
                // keeps open while this is awaited.
                let rc = unsafe {
                    libc::sync_file_range(fd, at as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE)
                };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
            .await;
        if let Err(e) = started {
            eprintln!("spate: core {}: delivery log writeback: {e}", self.core);
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> String {
        format!("r{i}@example.test")
    }

    /// Regression: a burst of records between two flushes (a whole queue
    /// deferred at once) was cut at 1 MiB and the rest silently dropped.
    #[test]
    fn a_burst_past_the_flush_threshold_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let lines = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let log = DeliveryLog::open(&path, 0).await.unwrap();
                // About 10 MiB in one go, with no await in between.
                for i in 0..40_000 {
                    let rcpt = record(i);
                    log.write(&Record {
                        kind: Kind::TransientFailure,
                        time_ms: 1,
                        id: format!("{i:016x}"),
                        sender: "s@example.test",
                        recipient: &rcpt,
                        domain: "example.test",
                        mx_host: None,
                        mx_ip: None,
                        connection: None,
                        source: None,
                        response: "451 4.3.0 try again later, this is a long enough reason",
                        attempt: 1,
                        size: 1000,
                        queue_time_ms: 0,
                        core: 0,
                        tenant: "",
                        campaign: "",
                        by: None,
                        reason: None,
                        class: None,
                        message_id: None,
                    });
                }
                log.flush().await;
                std::fs::read_to_string(path.join("delivery-core0.jsonl")).unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(lines.len() > 2 * BUFFER_BYTES_MAX);
        assert_eq!(lines.lines().count(), 40_000);
        assert!(lines.lines().last().unwrap().contains(&record(39_999)));
    }
}
