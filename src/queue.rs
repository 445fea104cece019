//! Each core's queues of recipients waiting for delivery: one queue per
//! destination domain, holding only domains this core owns.
//!
//! An entry holds the message handle (shared by the entries of all its
//! domains on this core) and the indexes of its recipients in that domain;
//! never the body. Delivery out of these queues is not built yet (issue 3):
//! today they hold what was accepted or recovered, and report counts.

use crate::message::MessageHandle;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

pub struct QueuedMessage {
    pub message: Rc<MessageHandle>,
    /// Indexes into `message.recipients`.
    pub recipients: Vec<u32>,
}

#[derive(Default)]
pub struct DomainQueue {
    pub ready: VecDeque<QueuedMessage>,
}

#[derive(Default)]
pub struct Queues {
    core: usize,
    domains: RefCell<HashMap<Box<str>, DomainQueue>>,
    messages: Cell<u64>,
    recipients: Cell<u64>,
}

/// Counts for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSummary {
    pub messages: u64,
    pub recipients: u64,
    pub domains: usize,
}

impl Queues {
    pub fn new(core: usize) -> Queues {
        Queues {
            core,
            ..Default::default()
        }
    }

    /// Queues every recipient of `handle`; all must belong to this core.
    pub fn enqueue(&self, handle: MessageHandle) {
        let message = Rc::new(handle);
        let mut by_domain: Vec<(String, Vec<u32>)> = Vec::new();
        for (i, r) in message.recipients.iter().enumerate() {
            let domain = r.domain().to_ascii_lowercase();
            match by_domain.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, list)) => list.push(i as u32),
                None => by_domain.push((domain, vec![i as u32])),
            }
        }
        let mut domains = self.domains.borrow_mut();
        for (domain, recipients) in by_domain {
            self.recipients
                .set(self.recipients.get() + recipients.len() as u64);
            let entry = QueuedMessage {
                message: message.clone(),
                recipients,
            };
            domains
                .entry(domain.into_boxed_str())
                .or_default()
                .ready
                .push_back(entry);
        }
        self.messages.set(self.messages.get() + 1);
    }

    pub fn summary(&self) -> QueueSummary {
        QueueSummary {
            messages: self.messages.get(),
            recipients: self.recipients.get(),
            domains: self.domains.borrow().len(),
        }
    }

    pub fn core(&self) -> usize {
        self.core
    }
}
