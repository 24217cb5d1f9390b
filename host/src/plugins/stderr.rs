//! A plugin's stderr, kept as a bounded tail per instance: a guest panic writes its message
//! there before trapping, and the fault report quotes it instead of a bare "unreachable".

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::{
    cli::{IsTerminal, StdoutStream},
    p2::{OutputStream, Pollable, StreamResult},
};

use super::escape::escape_control;

/// Bytes of stderr kept per instance: the end of the output, where a panic message is.
pub(crate) const STDERR_TAIL_BYTES: usize = 4096;

/// Longest summary quoted in a fault report.
const SUMMARY_CHARS: usize = 600;

/// The last [`STDERR_TAIL_BYTES`] written to stderr. Clones share the buffer.
#[derive(Clone, Default)]
pub(crate) struct StderrTail {
    buf: Arc<Mutex<VecDeque<u8>>>,
}

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock();
        let bytes = &bytes[bytes.len().saturating_sub(STDERR_TAIL_BYTES)..];
        let overflow = (buf.len() + bytes.len()).saturating_sub(STDERR_TAIL_BYTES);
        let drop = overflow.min(buf.len());
        buf.drain(..drop);
        buf.extend(bytes);
    }

    /// Forgets what was written (a reused instance starts each call empty).
    pub(crate) fn clear(&self) {
        self.buf.lock().clear();
    }

    /// The last non-empty lines written, joined with `; `, control characters escaped; `None`
    /// if nothing was written.
    pub(crate) fn summary(&self) -> Option<String> {
        let bytes: Vec<u8> = self.buf.lock().iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            return None;
        }
        // The panic hook writes the message; the last few lines hold it and its location.
        let tail = lines[lines.len().saturating_sub(3)..].join("; ");
        let mut start = tail.len().saturating_sub(SUMMARY_CHARS);
        while !tail.is_char_boundary(start) {
            start += 1;
        }
        Some(escape_control(&tail[start..]).into_owned())
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl Pollable for StderrTail {
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always writable: old output is dropped to make room.
        Ok(64 << 10)
    }
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_and_summarises_the_last_lines() {
        let tail = StderrTail::default();
        assert_eq!(tail.summary(), None);
        tail.push(&vec![b'x'; 10_000]);
        tail.push(b"\nthread 'main' panicked at src/lib.rs:1:1:\nboom\x1b[31m\n");
        assert_eq!(tail.buf.lock().len(), STDERR_TAIL_BYTES);
        let s = tail.summary().unwrap();
        assert!(
            s.ends_with("panicked at src/lib.rs:1:1:; boom\\u{1b}[31m"),
            "{s}"
        );
        tail.clear();
        assert_eq!(tail.summary(), None);
    }
}
