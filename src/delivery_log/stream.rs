//! Live subscribers to one core's delivery log (the admin server's
//! `/api/v1/events` streams): each says which records it wants, the log
//! copies matching lines into the subscriber's buffer as they are written,
//! and hands the buffer over at each flush (every
//! [`super::FLUSH_INTERVAL`]), so a busy core wakes a subscriber's thread
//! ten times a second, not once a record.
//!
//! A subscriber that does not keep up loses lines (counted, and told in
//! its stream) rather than holding memory: at most
//! [`SUBSCRIBER_BYTES_MAX`] wait for it on each core, and at most
//! [`SUBSCRIBERS_MAX`] subscribe at once.

use super::{Kind, Record};
use futures_channel::mpsc;
use std::cell::RefCell;

pub const SUBSCRIBERS_MAX: usize = 64;
pub const SUBSCRIBER_BYTES_MAX: usize = 4 << 20;
/// Flushes' worth of lines a subscriber's channel holds.
pub const CHANNEL_CHUNKS: usize = 16;

/// Which records a subscriber wants; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kinds: Vec<Kind>,
    pub domain: String,
    pub tenant: String,
}

impl Filter {
    fn matches(&self, r: &Record<'_>) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&r.kind))
            && (self.domain.is_empty() || self.domain.eq_ignore_ascii_case(r.domain))
            && (self.tenant.is_empty() || self.tenant == r.tenant)
    }
}

/// Records as server-sent events (`data: {JSON}` and an empty line
/// each, ready to be written as they are), or word of records lost.
#[derive(Debug)]
pub enum Chunk {
    Events(Vec<u8>),
    Lost(u64),
}

pub type Sender = mpsc::Sender<Chunk>;

struct Subscriber {
    filter: Filter,
    tx: Sender,
    pending: Vec<u8>,
    lost: u64,
}

#[derive(Default)]
pub struct Stream {
    subscribers: RefCell<Vec<Subscriber>>,
}

/// A channel for one subscription: its receiver gets chunks from every
/// core the sender is given to.
pub fn channel() -> (Sender, mpsc::Receiver<Chunk>) {
    mpsc::channel(CHANNEL_CHUNKS)
}

impl Stream {
    /// False when this core already has [`SUBSCRIBERS_MAX`].
    pub fn subscribe(&self, filter: Filter, tx: Sender) -> bool {
        let mut subs = self.subscribers.borrow_mut();
        subs.retain(|s| !s.tx.is_closed());
        if subs.len() >= SUBSCRIBERS_MAX {
            return false;
        }
        subs.push(Subscriber {
            filter,
            tx,
            pending: Vec::new(),
            lost: 0,
        });
        true
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.borrow().len()
    }

    /// Copies `line` (the record's JSON and its newline), as an event, to
    /// each subscriber that wants `record`.
    pub(super) fn offer(&self, record: &Record<'_>, line: &[u8]) {
        let mut subs = self.subscribers.borrow_mut();
        for s in subs.iter_mut().filter(|s| s.filter.matches(record)) {
            if s.pending.len() + line.len() + 7 > SUBSCRIBER_BYTES_MAX {
                s.lost += 1;
            } else {
                s.pending.extend_from_slice(b"data: ");
                s.pending.extend_from_slice(line);
                s.pending.push(b'\n');
            }
        }
    }

    /// Hands each subscriber what it has gathered; forgets the gone.
    pub(super) fn dispatch(&self) {
        let mut subs = self.subscribers.borrow_mut();
        subs.retain_mut(|s| {
            if s.lost > 0 {
                match s.tx.try_send(Chunk::Lost(s.lost)) {
                    Ok(()) => s.lost = 0,
                    Err(e) if e.is_disconnected() => return false,
                    Err(_) => {}
                }
            }
            if s.pending.is_empty() {
                return !s.tx.is_closed();
            }
            let lines = std::mem::take(&mut s.pending);
            match s.tx.try_send(Chunk::Events(lines)) {
                Ok(()) => true,
                Err(e) if e.is_disconnected() => false,
                Err(e) => {
                    // Its channel is full: keep the lines for next time,
                    // within the bound `offer` keeps.
                    if let Chunk::Events(lines) = e.into_inner() {
                        s.pending = lines;
                    }
                    true
                }
            }
        });
    }
}
