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

/// First size of a connection's read buffer: room for a burst of
/// pipelined commands or replies. Must exceed the longest text line (1000
/// octets) and the longest command line (512).
pub const READ_BUFFER_FIRST_BYTES: usize = 4 * 1024;
/// Largest size of a connection's read buffer. It doubles from the first
/// size each time a read fills it (DATA arrives in big chunks), so that an
/// idle or command-only connection (every delivery connection, most of a
/// session) keeps only the first size, and a new connection is not made
/// to zero 64 KiB for a message of 4.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Time allowed to write queued replies to the client.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Conn<S> {
    stream: S,
    /// Read buffer: `start..end` is received and not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read filled the buffer to its end: the peer has more.
    filled: bool,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: vec![0; READ_BUFFER_FIRST_BYTES],
            start: 0,
            end: 0,
            filled: false,
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
        self.make_room();
        let n = with_timeout(timeout, self.stream.read(&mut self.buf[self.end..])).await?;
        self.end += n;
        self.filled = self.end == self.buf.len();
        Ok(n)
    }

    /// Frees room at the end of the buffer for the next read: moves what
    /// is unconsumed to the front once the end is reached, and doubles the
    /// buffer (up to `READ_BUFFER_BYTES`) when the last read filled it or
    /// nothing was consumed.
    fn make_room(&mut self) {
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let full = self.end == self.buf.len();
        if (self.filled || full) && self.buf.len() < READ_BUFFER_BYTES {
            let len = (self.buf.len() * 2).min(READ_BUFFER_BYTES);
            self.buf.resize(len, 0);
        }
        self.filled = false;
        assert!(
            self.end < self.buf.len(),
            "callers consume before the largest buffer fills"
        );
    }

    /// Size of the read buffer now.
    #[cfg(test)]
    fn read_buffer_bytes(&self) -> usize {
        self.buf.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A peer that sends `data` at most `chunk` bytes a read.
    struct Peer {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
    }

    impl AsyncRead for Peer {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Peer {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Reads everything `peer` sends, consuming `take` bytes after each
    /// read; returns what was read and each buffer size seen.
    fn drain(peer: Peer, take: usize) -> (Vec<u8>, Vec<usize>) {
        glommio::LocalExecutor::default().run(async move {
            let mut conn = Conn::new(peer);
            let (mut got, mut sizes) = (Vec::new(), vec![conn.read_buffer_bytes()]);
            while conn.fill(Duration::from_secs(5)).await.unwrap() > 0 {
                sizes.push(conn.read_buffer_bytes());
                let n = conn.buffered().len().min(take);
                got.extend_from_slice(&conn.buffered()[..n]);
                conn.consume(n);
            }
            got.extend_from_slice(conn.buffered());
            (got, sizes)
        })
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn short_reads_keep_the_first_buffer() {
        let data = b"EHLO client\r\nMAIL FROM:<a@b>\r\n".repeat(200);
        let (got, sizes) = drain(
            Peer {
                data: data.clone(),
                at: 0,
                chunk: 40,
            },
            usize::MAX,
        );
        assert_eq!(got, data);
        assert!(
            sizes.iter().all(|&s| s == READ_BUFFER_FIRST_BYTES),
            "{sizes:?}"
        );
    }

    #[test]
    fn full_reads_double_the_buffer_up_to_its_largest() {
        let data = pattern(1 << 20);
        let (got, sizes) = drain(
            Peer {
                data: data.clone(),
                at: 0,
                chunk: usize::MAX,
            },
            usize::MAX,
        );
        assert_eq!(got, data);
        assert_eq!(sizes[..5], [4096, 4096, 8192, 16384, 32768]);
        assert_eq!(sizes.iter().max(), Some(&READ_BUFFER_BYTES));
    }

    #[test]
    fn bytes_left_unconsumed_grow_the_buffer_and_stay_in_order() {
        // The reader takes less than each read brings, so the buffer both
        // moves what is left to its front and grows.
        let data = pattern(300_000);
        let (got, sizes) = drain(
            Peer {
                data: data.clone(),
                at: 0,
                chunk: 3000,
            },
            1000,
        );
        assert_eq!(got, data);
        assert_eq!(sizes.iter().max(), Some(&READ_BUFFER_BYTES));
    }
}
