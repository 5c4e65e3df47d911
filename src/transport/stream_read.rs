//! The read side of one stream connection (TCP or TLS): framing by Content-Length, keep-alive
//! pings answered (RFC 5626 §4.4.1), and the three limits that keep a
//! hostile or broken peer from holding memory: the message size (via `sip::frame_len`), the idle
//! timeout between messages, and the deadline for finishing a message once its first byte arrived.
//!
//! The deadline is what stops slowloris: a peer that trickles one byte every few seconds never trips
//! an idle timeout, but it cannot stretch one message past `tcp_message_deadline`.

use super::{ConnId, Handler, Incoming, TransportConfig};
use crate::config::Proto;
use crate::sip::frame_len;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Reads and hands up messages until the connection ends; returns why it ended (for the log).
/// `pong`: the connection's write queue, for answering a keep-alive ping.
pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    (peer, id, proto): (SocketAddr, ConnId, Proto),
    cfg: &TransportConfig,
    handler: &dyn Handler,
    pong: Option<&mpsc::Sender<Bytes>>,
) -> String {
    let limits = cfg.limits;
    let mut buf = BytesMut::with_capacity(8192);
    // When the first byte of the message now in `buf` arrived; None while `buf` is empty.
    let mut started: Option<Instant> = None;
    loop {
        loop {
            match frame_len(&buf, &limits) {
                Ok(Some(n)) => {
                    let frame = buf.split_to(n).freeze();
                    started = None;
                    if frame.iter().all(|b| *b == b'\r' || *b == b'\n') {
                        // Keep-alive: a ping (CRLFCRLF) gets a pong (CRLF); a pong needs nothing.
                        if frame.len() >= 4
                            && let Some(tx) = pong
                        {
                            let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                        }
                        continue;
                    }
                    handler.on_message(Incoming {
                        data: frame,
                        peer,
                        proto,
                        conn: Some(id),
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "stream framing refused the stream");
                    return format!("bad framing: {e}");
                }
            }
        }
        let now = Instant::now();
        let wait = if buf.is_empty() {
            cfg.tcp_idle_timeout
        } else {
            let since = *started.get_or_insert(now);
            let left = (since + cfg.tcp_message_deadline).saturating_duration_since(now);
            left.min(cfg.tcp_idle_timeout)
        };
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(4096);
        }
        match tokio::time::timeout(wait, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return "closed by peer".to_string(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("read error: {e}"),
            Err(_) if started.is_some() => {
                tracing::debug!(peer = %peer, pending_bytes = buf.len(),
                    deadline_ms = cfg.tcp_message_deadline.as_millis() as u64,
                    "stream message not finished within its deadline");
                return "incomplete message deadline".to_string();
            }
            Err(_) => return "idle timeout".to_string(),
        }
    }
}
