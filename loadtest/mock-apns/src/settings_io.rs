//! SETTINGS_MAX_CONCURRENT_STREAMS on a live connection, which `h2`'s server cannot change.
//!
//! [`SettingsIo`] sits between `h2` and the TLS stream and edits the frame stream:
//! - writing: it appends `MAX_CONCURRENT_STREAMS = limit` to h2's first SETTINGS frame, and when
//!   the wanted limit changes it writes a SETTINGS frame of its own at the next flush (h2 calls
//!   flush only between whole frames);
//! - reading: it passes the client's ACK of h2's SETTINGS on to h2 and swallows the ACKs of its
//!   own frames (h2 would treat them as unexpected), and it notes the highest client stream id
//!   seen so that each limit is enforced exactly from the first stream the client opened after
//!   acknowledging it (RFC 9113 §6.5.3).
//!
//! h2 itself is built without a stream limit; the mock enforces the acknowledged limit
//! ([`StreamLimits::limit_for`]) and refuses streams above it with REFUSED_STREAM, as APNs does.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const FRAME_HEADER: usize = 9;
const CLIENT_PREFACE_LEN: usize = 24;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// The stream limits of one connection: the one wanted and those acknowledged by the client.
#[derive(Debug)]
pub struct StreamLimits {
    wanted: Arc<AtomicU32>,
    /// `(first client stream id it applies to, limit)`, ascending.
    acked: Mutex<Vec<(u32, u32)>>,
}

impl StreamLimits {
    /// Limits that follow `wanted` (shared by all connections of a server).
    pub fn new(wanted: Arc<AtomicU32>) -> Self {
        StreamLimits {
            wanted,
            acked: Mutex::new(Vec::new()),
        }
    }

    /// The limit in force for the client stream `stream_id` (unlimited before the client
    /// acknowledged any). Streams must be asked about in increasing id order.
    pub fn limit_for(&self, stream_id: u32) -> u32 {
        let mut acked = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        // Entries superseded for this and all later streams are dropped.
        let applicable = acked.iter().rposition(|(from, _)| *from <= stream_id);
        match applicable {
            Some(i) => {
                let limit = acked[i].1;
                acked.drain(..i);
                limit
            }
            None => u32::MAX,
        }
    }

    /// The latest limit the client acknowledged, if any.
    pub fn acknowledged(&self) -> Option<u32> {
        let acked = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        acked.last().map(|(_, l)| *l)
    }

    fn record_ack(&self, from_stream: u32, limit: u32) {
        let mut acked = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        acked.push((from_stream, limit));
    }
}

/// What to do with the client's next SETTINGS ACK.
#[derive(Debug, Clone, Copy)]
struct PendingAck {
    /// Pass it to h2 (the ACK of h2's own SETTINGS).
    pass: bool,
    /// The stream limit that takes effect with this ACK.
    limit: Option<u32>,
}

/// The I/O wrapper; see the module documentation.
pub struct SettingsIo<T> {
    inner: T,
    limits: Arc<StreamLimits>,
    // Writing.
    first_settings_seen: bool,
    sent_limit: Option<u32>,
    out: Vec<u8>,
    out_pos: usize,
    pending_acks: VecDeque<PendingAck>,
    // Reading.
    preface_left: usize,
    payload_left: usize,
    stash: [u8; FRAME_HEADER],
    stash_len: usize,
    /// Filtered bytes not yet handed over (only after a read into a too-small buffer).
    ready: Vec<u8>,
    max_stream_id: u32,
}

impl<T> SettingsIo<T> {
    /// Wraps the server side of a connection (the client preface is still unread).
    pub fn new(inner: T, limits: Arc<StreamLimits>) -> Self {
        SettingsIo {
            inner,
            limits,
            first_settings_seen: false,
            sent_limit: None,
            out: Vec::new(),
            out_pos: 0,
            pending_acks: VecDeque::new(),
            preface_left: CLIENT_PREFACE_LEN,
            payload_left: 0,
            stash: [0; FRAME_HEADER],
            stash_len: 0,
            ready: Vec::new(),
            max_stream_id: 0,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn settings_frame(limit: u32) -> [u8; FRAME_HEADER + 6] {
        let mut f = [0u8; FRAME_HEADER + 6];
        f[2] = 6;
        f[3] = TYPE_SETTINGS;
        f[9..11].copy_from_slice(&SETTINGS_MAX_CONCURRENT_STREAMS.to_be_bytes());
        f[11..15].copy_from_slice(&limit.to_be_bytes());
        f
    }

    /// Scans `data` (new bytes from the client), removing swallowed ACK frames in place and
    /// keeping back an incomplete frame header. Returns the number of bytes to pass on.
    fn filter_read(&mut self, data: &mut [u8]) -> usize {
        let mut len = data.len();
        let mut pos = 0;
        while pos < len {
            if self.preface_left > 0 {
                let n = self.preface_left.min(len - pos);
                self.preface_left -= n;
                pos += n;
                continue;
            }
            if self.payload_left > 0 {
                let n = self.payload_left.min(len - pos);
                self.payload_left -= n;
                pos += n;
                continue;
            }
            if len - pos < FRAME_HEADER {
                let rest = len - pos;
                self.stash[..rest].copy_from_slice(&data[pos..len]);
                self.stash_len = rest;
                return pos;
            }
            let h = &data[pos..pos + FRAME_HEADER];
            let frame_len =
                (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let kind = h[3];
            let flags = h[4];
            let stream_id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if kind == TYPE_HEADERS && stream_id > self.max_stream_id {
                self.max_stream_id = stream_id;
            }
            if kind == TYPE_SETTINGS && flags & FLAG_ACK != 0 && frame_len == 0 {
                if let Some(ack) = self.pending_acks.pop_front() {
                    if let Some(limit) = ack.limit {
                        self.limits.record_ack(self.max_stream_id + 1, limit);
                    }
                    if !ack.pass {
                        data.copy_within(pos + FRAME_HEADER..len, pos);
                        len -= FRAME_HEADER;
                        continue;
                    }
                }
            }
            self.payload_left = frame_len;
            pos += FRAME_HEADER;
        }
        len
    }
}

impl<T: AsyncWrite + Unpin> SettingsIo<T> {
    fn poll_drain_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Handles h2's first write, which starts with its SETTINGS frame. Returns how many bytes
    /// of `buf` were taken, or `None` to pass `buf` through unchanged.
    fn rewrite_first_settings(&mut self, buf: &[u8]) -> Option<usize> {
        self.first_settings_seen = true;
        if buf.len() < FRAME_HEADER || buf[3] != TYPE_SETTINGS || buf[4] & FLAG_ACK != 0 {
            // Not what h2 sends first; still expect one ACK for h2's SETTINGS.
            self.pending_acks.push_back(PendingAck {
                pass: true,
                limit: None,
            });
            return None;
        }
        let payload_len =
            (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
        let frame_len = FRAME_HEADER + payload_len;
        if buf.len() < frame_len {
            self.pending_acks.push_back(PendingAck {
                pass: true,
                limit: None,
            });
            return None;
        }
        let limit = self.limits.wanted.load(Ordering::Relaxed);
        let new_len = payload_len + 6;
        self.out.clear();
        self.out
            .extend_from_slice(&[(new_len >> 16) as u8, (new_len >> 8) as u8, new_len as u8]);
        self.out.extend_from_slice(&buf[3..frame_len]);
        self.out
            .extend_from_slice(&SETTINGS_MAX_CONCURRENT_STREAMS.to_be_bytes());
        self.out.extend_from_slice(&limit.to_be_bytes());
        self.out_pos = 0;
        self.sent_limit = Some(limit);
        self.pending_acks.push_back(PendingAck {
            pass: true,
            limit: Some(limit),
        });
        Some(frame_len)
    }

    /// Queues a SETTINGS frame if the wanted limit differs from the one last sent.
    fn queue_limit_change(&mut self) {
        if !self.first_settings_seen {
            return;
        }
        let wanted = self.limits.wanted.load(Ordering::Relaxed);
        if self.sent_limit == Some(wanted) {
            return;
        }
        self.out.extend_from_slice(&Self::settings_frame(wanted));
        self.sent_limit = Some(wanted);
        self.pending_acks.push_back(PendingAck {
            pass: false,
            limit: Some(wanted),
        });
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SettingsIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let start = buf.filled().len();
            let stashed = this.stash_len;
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() <= stashed {
                // Too little room for a held-back header plus new bytes: read aside.
                let mut tmp = vec![0u8; 4096];
                tmp[..stashed].copy_from_slice(&this.stash[..stashed]);
                let mut side = ReadBuf::new(&mut tmp[stashed..]);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut side))?;
                let got = side.filled().len();
                if got == 0 {
                    return Poll::Ready(Ok(()));
                }
                this.stash_len = 0;
                let keep = this.filter_read(&mut tmp[..stashed + got]);
                tmp.truncate(keep);
                this.ready = tmp;
                continue;
            }
            buf.put_slice(&this.stash[..stashed]);
            this.stash_len = 0;
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Pending => {
                    buf.set_filled(start);
                    this.stash_len = stashed;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    buf.set_filled(start);
                    this.stash_len = stashed;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(())) => {}
            }
            let end = buf.filled().len();
            if end == start + stashed {
                // End of stream: hand over whatever is left, h2 reports a truncated frame.
                return Poll::Ready(Ok(()));
            }
            let keep = this.filter_read(&mut buf.filled_mut()[start..end]);
            buf.set_filled(start + keep);
            if keep > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SettingsIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_drain_out(cx))?;
        if !this.first_settings_seen {
            if let Some(taken) = this.rewrite_first_settings(buf) {
                // The rewritten frame goes out now or at the next write or flush.
                if let Poll::Ready(Err(e)) = this.poll_drain_out(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(taken));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.first_settings_seen || !self.out.is_empty() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain_out(cx))?;
        // h2 flushes only after handing over whole frames: a frame may be inserted here.
        this.queue_limit_change();
        ready!(this.poll_drain_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> SettingsIo<tokio::io::DuplexStream> {
        let (a, _b) = tokio::io::duplex(64);
        SettingsIo::new(a, Arc::new(StreamLimits::new(Arc::new(AtomicU32::new(10)))))
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 0, payload.len() as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn swallows_only_injected_acks_and_tracks_streams() {
        let mut io = io();
        io.pending_acks.push_back(PendingAck {
            pass: true,
            limit: Some(10),
        });
        io.pending_acks.push_back(PendingAck {
            pass: false,
            limit: Some(3),
        });
        let mut data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        data.extend(frame(TYPE_SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        data.extend(frame(TYPE_SETTINGS, FLAG_ACK, 0, &[]));
        data.extend(frame(TYPE_HEADERS, 0x4, 5, &[1, 2, 3]));
        let ack = frame(TYPE_SETTINGS, FLAG_ACK, 0, &[]);
        data.extend(&ack);
        let tail = frame(TYPE_HEADERS, 0x4, 7, &[9]);
        data.extend(&tail);
        let expected_len = data.len() - ack.len();
        // Feed in two pieces, split inside the swallowed ACK's header.
        let split = data.len() - tail.len() - 4;
        let mut first = data[..split].to_vec();
        let kept = io.filter_read(&mut first);
        assert_eq!(io.stash_len, 5);
        let mut second = io.stash[..io.stash_len].to_vec();
        second.extend_from_slice(&data[split..]);
        io.stash_len = 0;
        let kept2 = io.filter_read(&mut second);
        assert_eq!(kept + kept2, expected_len);
        assert_eq!(&second[..kept2], &tail[..]);
        assert_eq!(io.limits.limit_for(1), 10);
        assert_eq!(io.limits.limit_for(5), 10);
        assert_eq!(io.limits.limit_for(7), 3);
        assert_eq!(io.limits.acknowledged(), Some(3));
    }

    #[test]
    fn rewrites_first_settings() {
        let mut io = io();
        let h2_settings = frame(TYPE_SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]);
        let mut buf = h2_settings.clone();
        buf.extend(frame(0x8, 0, 0, &[0, 0, 0, 1]));
        assert_eq!(io.rewrite_first_settings(&buf), Some(h2_settings.len()));
        assert_eq!(&io.out[..3], &[0, 0, 12]);
        assert_eq!(&io.out[9..15], &[0, 4, 0, 1, 0, 0]);
        assert_eq!(&io.out[15..], &[0, 3, 0, 0, 0, 10]);
        io.limits.wanted.store(2, Ordering::Relaxed);
        io.out.clear();
        io.queue_limit_change();
        assert_eq!(
            io.out,
            SettingsIo::<tokio::io::DuplexStream>::settings_frame(2)
        );
        io.out.clear();
        io.queue_limit_change();
        assert!(io.out.is_empty());
    }
}
