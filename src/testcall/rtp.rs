//! RTP packets of a test call (RFC 3550): PCMU (payload type 0), 20 ms of audio each.

use bytes::{BufMut, Bytes, BytesMut};
use std::net::SocketAddr;

/// 20 ms of 8 kHz PCMU: 160 samples, one byte each.
pub const PAYLOAD_BYTES: usize = 160;
/// Space between two packets, as a real 20 ms audio stream.
pub const PACKET_GAP: std::time::Duration = std::time::Duration::from_millis(20);
const HEADER_BYTES: usize = 12;
/// PCMU silence (mu-law of 0).
const SILENCE: u8 = 0xff;

/// Packet `n` (0-based) of our stream: version 2, no padding, extension or CSRC, marker on the first,
/// payload type 0, sequence and timestamp from `n`, our SSRC, 160 bytes of silence.
pub fn packet(ssrc: u32, n: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_BYTES + PAYLOAD_BYTES);
    b.put_u8(0x80);
    b.put_u8(if n == 0 { 0x80 } else { 0 });
    b.put_u16(n as u16); // wraps after 65 536 packets; a test call sends at most 100
    b.put_u32(n.wrapping_mul(PAYLOAD_BYTES as u32));
    b.put_u32(ssrc);
    b.put_bytes(SILENCE, PAYLOAD_BYTES);
    b.freeze()
}

/// The SSRC of an RTP version 2 packet; `None` for anything else (RTCP included: payload types
/// 72-76 with the marker bit, RFC 5761).
pub fn ssrc_of(p: &[u8]) -> Option<u32> {
    if p.len() < HEADER_BYTES || p[0] >> 6 != 2 || (72..=76).contains(&(p[1] & 0x7f)) {
        return None;
    }
    Some(u32::from_be_bytes([p[8], p[9], p[10], p[11]]))
}

/// Whether a packet that arrived on our RTP socket is an echo of our stream.
///
/// Accepted: an RTP v2 packet carrying our SSRC, from anywhere (SIPp `-rtp_echo` and other plain
/// reflectors send our packets back unchanged, and a media relay may change the source port), or
/// an RTP v2 packet from exactly the address the answer gave (an RFC 6849 loopback server that
/// re-encodes or encapsulates uses its own SSRC, but sends from its advertised port, as symmetric
/// RTP does). Anything else (a stray packet from elsewhere, non-RTP bytes) is not an echo.
pub fn is_echo(p: &[u8], from: SocketAddr, ours: u32, media: SocketAddr) -> bool {
    match ssrc_of(p) {
        Some(ssrc) => ssrc == ours || from == media,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_layout() {
        let p = packet(0xdead_beef, 3);
        assert_eq!(p.len(), 172);
        assert_eq!(p[0], 0x80);
        assert_eq!(p[1], 0); // no marker after the first, PT 0
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 3);
        assert_eq!(u32::from_be_bytes([p[4], p[5], p[6], p[7]]), 480);
        assert_eq!(ssrc_of(&p), Some(0xdead_beef));
        assert_eq!(packet(1, 0)[1], 0x80);
    }

    #[test]
    fn echoes() {
        let media: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:6001".parse().unwrap();
        let p = packet(7, 0);
        assert!(is_echo(&p, other, 7, media));
        assert!(is_echo(&packet(9, 0), media, 7, media));
        assert!(!is_echo(&packet(9, 0), other, 7, media));
        assert!(!is_echo(b"hello", media, 7, media));
        let mut rtcp = p.to_vec();
        rtcp[1] = 0x80 | 72;
        assert!(!is_echo(&rtcp, media, 7, media));
    }
}
