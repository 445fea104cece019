//! An idle limit for the admin and injection listeners' connections: a
//! connection that moves no byte either way for `admin.idle_timeout_secs`
//! is closed. It bounds a client that opens a connection and sends
//! nothing, or half a request header (hyper's own header timeout needs a
//! `Send` timer, which glommio's are not), and a TLS handshake that never
//! ends. An event stream stays open: its keep-alive comments are bytes.
//!
//! Two halves: [`Idle`] wraps the stream and notes when bytes last moved;
//! [`watch`] runs beside the connection's future (in the same task) and
//! ends when the limit has passed since then, which drops the connection.
//! The watch does not depend on the connection polling its stream.

use futures_lite::{AsyncRead, AsyncWrite};
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// When bytes last moved on a connection.
pub type Moved = Rc<Cell<Instant>>;

pub struct Idle<S> {
    inner: S,
    moved: Moved,
}

impl<S> Idle<S> {
    pub fn new(inner: S, moved: Moved) -> Idle<S> {
        Idle { inner, moved }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn note(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved.set(Instant::now());
        }
        r
    }
}

/// Ends once `limit` has passed with no byte moved.
pub async fn watch(moved: Moved, limit: Duration) {
    loop {
        let deadline = moved.get() + limit;
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        glommio::timer::sleep(deadline - now).await;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.note(r)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
