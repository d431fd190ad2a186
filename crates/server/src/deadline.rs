//! The socket of an HTTP connection, whose writes have a deadline: a response to a client that
//! stops reading fails after `limits.http.write_timeout` instead of holding its buffers for
//! ever. Once the connection is upgraded to a WebSocket the deadline is off: the session
//! applies its own (`heartbeat.timeout`, then close 4003).

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// Turned on when the connection stops being HTTP (upgraded or ended).
#[derive(Debug, Clone, Default)]
pub struct Upgraded(Arc<AtomicBool>);

impl Upgraded {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `T` whose writes fail with `TimedOut` after waiting `timeout` without progress.
#[derive(Debug)]
pub struct DeadlineIo<T> {
    inner: T,
    timeout: Duration,
    upgraded: Upgraded,
    /// Armed when a write waits; disarmed when bytes are written.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<T> DeadlineIo<T> {
    pub fn new(inner: T, timeout: Duration, upgraded: Upgraded) -> DeadlineIo<T> {
        DeadlineIo {
            inner,
            timeout,
            upgraded,
            waiting: None,
        }
    }

    /// Called when a write returned `Pending`: `Pending` until the deadline, then the error.
    fn poll_deadline<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if self.upgraded.get() {
            self.waiting = None;
            return Poll::Pending;
        }
        let timeout = self.timeout;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response (limits.http.write_timeout)",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// After a write: bytes written disarm the deadline; `Pending` waits for it.
    fn wrote(
        &mut self,
        result: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.waiting = None;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => self.poll_deadline(cx),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A flush that completes is not progress (a socket's always does): only bytes written
        // disarm the deadline.
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_deadline(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_at_the_deadline() {
        // A pipe of 64 bytes whose other end never reads.
        let (near, _far) = tokio::io::duplex(64);
        let mut io = DeadlineIo::new(near, Duration::from_secs(30), Upgraded::default());
        let started = tokio::time::Instant::now();
        let err = io.write_all(&[0; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_has_no_deadline() {
        let (near, _far) = tokio::io::duplex(64);
        let upgraded = Upgraded::default();
        let mut io = DeadlineIo::new(near, Duration::from_secs(30), upgraded.clone());
        upgraded.set();
        let write = tokio::time::timeout(Duration::from_secs(300), io.write_all(&[0; 1024]));
        assert!(write.await.is_err(), "still waiting after 300 s");
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_between_waiting_writes_do_not_rearm_it() {
        let (near, _far) = tokio::io::duplex(64);
        let mut io = DeadlineIo::new(near, Duration::from_secs(30), Upgraded::default());
        io.write_all(&[0; 64]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = loop {
            // A writer that flushes every 10 s while its write waits.
            assert!(started.elapsed() < Duration::from_secs(100), "no deadline");
            match tokio::time::timeout(Duration::from_secs(10), io.write_all(&[0; 8])).await {
                Ok(r) => break r.unwrap_err(),
                Err(_) => io.flush().await.unwrap(),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_rearms_the_deadline() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = DeadlineIo::new(near, Duration::from_secs(30), Upgraded::default());
        let reader = tokio::spawn(async move {
            // Reads 64 bytes every 20 s: slower than the writer, never stuck 30 s.
            let mut buf = [0; 64];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                tokio::io::AsyncReadExt::read_exact(&mut far, &mut buf)
                    .await
                    .unwrap();
            }
            far
        });
        io.write_all(&[0; 256]).await.unwrap();
        drop(reader.await.unwrap());
    }
}
