//! An idle limit for the admin and injection listeners' connections: a
//! connection that moves no byte either way for `admin.idle_timeout_secs`
//! fails with `TimedOut` and is closed. It bounds a client that opens a
//! connection and sends nothing, or half a request header (hyper's own
//! header timeout needs a `Send` timer, which glommio's are not), and a
//! TLS handshake that never ends. An event stream stays open: its
//! keep-alive comments are activity.
//!
//! One glommio timer per connection, armed while a read or write waits;
//! activity only notes the time, and the timer, when it fires early, is
//! set again for what is left.

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::timer::Timer;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub struct Idle<S> {
    inner: S,
    limit: Duration,
    last: Instant,
    timer: Timer,
}

impl<S> Idle<S> {
    pub fn new(inner: S, limit: Duration) -> Idle<S> {
        Idle {
            inner,
            limit,
            last: Instant::now(),
            timer: Timer::new(limit),
        }
    }

    /// Pending, or the idle error once `limit` has passed without activity.
    fn expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        loop {
            if Pin::new(&mut self.timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
            let quiet = self.last.elapsed();
            if quiet >= self.limit {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection was idle too long",
                )));
            }
            self.timer.reset(self.limit - quiet);
        }
    }

    fn moved<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.last = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => self.expired(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.moved(r, cx)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.moved(r, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.moved(r, cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
