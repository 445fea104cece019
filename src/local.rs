//! Small single-core synchronisation helpers for code that runs on one
//! glommio executor: a wake-up flag for one waiting task, and a stop signal
//! many tasks can wait on. They are `!Send` on purpose; cross-core traffic
//! belongs in `mesh`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes one waiting task. A `notify` with nobody waiting is remembered, so
/// the next `notified().await` returns at once.
#[derive(Default)]
pub struct Notify {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.pending.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// A one-way switch: once stopped, every present and future waiter returns.
/// Waiters that give up (are dropped) leave nothing behind.
#[derive(Default)]
pub struct StopSignal {
    stopped: Cell<bool>,
    next_key: Cell<u64>,
    wakers: RefCell<HashMap<u64, Waker>>,
}

impl StopSignal {
    pub fn stop(&self) {
        self.stopped.set(true);
        for (_, w) in self.wakers.borrow_mut().drain() {
            w.wake();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    pub fn wait(&self) -> StopWait<'_> {
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        StopWait { signal: self, key }
    }
}

pub struct StopWait<'a> {
    signal: &'a StopSignal,
    key: u64,
}

impl Future for StopWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.stopped.get() {
            return Poll::Ready(());
        }
        self.signal
            .wakers
            .borrow_mut()
            .insert(self.key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for StopWait<'_> {
    fn drop(&mut self) {
        self.signal.wakers.borrow_mut().remove(&self.key);
    }
}

/// Wakes every task waiting at the moment of `notify_all`. A waiter passes
/// the generation it last saw, so a notification between looking and
/// waiting is never lost. Waiters that give up leave nothing behind.
#[derive(Default)]
pub struct Event {
    generation: Cell<u64>,
    next_key: Cell<u64>,
    wakers: RefCell<HashMap<u64, Waker>>,
}

impl Event {
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for (_, w) in self.wakers.borrow_mut().drain() {
            w.wake();
        }
    }

    /// Returns once the generation differs from `seen`.
    pub fn wait(&self, seen: u64) -> EventWait<'_> {
        let key = self.next_key.get();
        self.next_key.set(key + 1);
        EventWait {
            event: self,
            seen,
            key,
        }
    }
}

pub struct EventWait<'a> {
    event: &'a Event,
    seen: u64,
    key: u64,
}

impl Future for EventWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.seen {
            return Poll::Ready(());
        }
        self.event
            .wakers
            .borrow_mut()
            .insert(self.key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for EventWait<'_> {
    fn drop(&mut self) {
        self.event.wakers.borrow_mut().remove(&self.key);
    }
}
