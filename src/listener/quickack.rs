//! `TCP_NODELAY` and `TCP_QUICKACK` on every accepted TCP connection. Without them each
//! message meets two Nagle and delayed-ACK stalls of about 40 ms. `TCP_NODELAY` sends our
//! replies at once; Linux clears `TCP_QUICKACK` after it acknowledges, so it is set again after
//! every read, which makes the kernel acknowledge the MTA's no-reply commands at once instead of
//! holding its next write.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// A TCP stream with `TCP_NODELAY`, that re-arms `TCP_QUICKACK` after every read.
pub struct QuickAckStream {
    inner: TcpStream,
}

impl QuickAckStream {
    pub(super) fn new(inner: TcpStream) -> Self {
        let _ = inner.set_nodelay(true);
        let stream = Self { inner };
        stream.quickack();
        stream
    }

    fn quickack(&self) {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&self.inner).set_quickack(true);
    }
}

impl AsyncRead for QuickAckStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.quickack();
        }
        result
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
