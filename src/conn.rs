//! An SMTP connection, either side, with our own read and write buffers.
//!
//! Lines (replies for the listener, commands for the delivery client) are
//! queued and written in one go just before the next read, which is what
//! PIPELINING (RFC 2920) asks of both sides: never wait for input while
//! holding output back. Message bodies bypass the buffer and go straight
//! from the spool mapping to the stream. Every network wait has an explicit
//! timer.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::io;
use std::time::Duration;

/// Size of a session's read buffer: room for many pipelined commands or one
/// chunk of DATA. Must exceed the longest text line (1000 octets).
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Time allowed to write queued replies to the client.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Conn<S> {
    stream: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::with_capacity(512),
        }
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.end - self.start);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops everything buffered (after STARTTLS: plaintext sent before the
    /// handshake must never be read as part of the TLS session).
    pub fn discard_input(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Queues one line; `line` has no CRLF.
    pub fn queue_line(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Writes the queued lines.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        with_timeout(WRITE_TIMEOUT, write).await?;
        self.out.clear();
        Ok(())
    }

    /// Queues bytes as they are (they must not hold a bare CR or LF).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Flushes queued lines, then writes `bytes` straight to the stream.
    pub async fn write_direct(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush().await?;
        with_timeout(WRITE_TIMEOUT, self.stream.write_all(bytes)).await
    }

    /// Flushes queued lines, then reads more input. `Ok(0)` is end of stream.
    pub async fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        self.flush().await?;
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        assert!(
            self.end < self.buf.len(),
            "callers consume before the buffer fills"
        );
        let n = with_timeout(timeout, self.stream.read(&mut self.buf[self.end..])).await?;
        self.end += n;
        Ok(n)
    }

    pub fn into_stream(self) -> S {
        self.stream
    }
}

/// Runs `fut` with a timer; running out is `ErrorKind::TimedOut`.
pub async fn with_timeout<T>(
    dur: Duration,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    futures_lite::future::or(fut, async {
        glommio::timer::sleep(dur).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    })
    .await
}
