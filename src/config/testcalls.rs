//! `[test_calls]` (sosrouter's own test calls to a target, RFC 6881 §15) and a target's optional
//! `test_uri`. Every key has a default, so a file without the section gets test calls on demand
//! (when health asks for one) and no periodic ones.

use super::read::checked;
use super::walk::Ctx;
use toml::de::DeTable;

/// Built-in defaults. Why each value: see the field docs of [`TestCallSpec`].
pub mod defaults {
    pub const ENABLED: bool = true;
    pub const TIMEOUT_MS: u64 = 4_000;
    pub const MAX_IN_FLIGHT: u64 = 8;
    pub const INTERVAL_MS: u64 = 0;
    pub const RTP_PACKETS: u64 = 5;
    /// The test service URN of RFC 6881 §15 (NENA i3 test call).
    pub const TEST_URI: &str = "urn:service:test.sos";
    /// Shortest periodic interval accepted: answering points ration test calls.
    pub const MIN_INTERVAL_MS: u64 = 1_000;
}

const KEYS: &[&str] = &[
    "enabled",
    "timeout_ms",
    "max_in_flight",
    "media",
    "interval_ms",
    "rtp_packets",
];

/// Whether a test call must show media flowing to count as good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCallMedia {
    /// When the answer offers media, at least one RTP packet must come back (RFC 6849 loopback).
    Require,
    /// A 200 is enough; no RTP is sent.
    Ignore,
}

/// `[test_calls]`, every key resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCallSpec {
    /// Place test calls at all. Default true (they still only happen when health asks, or periodically
    /// when `interval_ms` is set).
    pub enabled: bool,
    /// From the INVITE to its final response, ms; a provisional does not extend it. Default 4000.
    pub timeout_ms: u64,
    /// Test calls in flight at once, over all targets. Default 8.
    pub max_in_flight: u64,
    /// Default `Require`.
    pub media: TestCallMedia,
    /// Periodic test call to every target this often, ms; 0 (default) = off: PSAPs ration test calls.
    pub interval_ms: u64,
    /// RTP packets sent (20 ms apart) once answered. Default 5.
    pub rtp_packets: u64,
}

impl Default for TestCallSpec {
    fn default() -> Self {
        use defaults::*;
        TestCallSpec {
            enabled: ENABLED,
            timeout_ms: TIMEOUT_MS,
            max_in_flight: MAX_IN_FLIGHT,
            media: TestCallMedia::Require,
            interval_ms: INTERVAL_MS,
            rtp_packets: RTP_PACKETS,
        }
    }
}

/// Reads `[test_calls]`; absent keys keep their defaults.
pub(crate) fn read_test_calls(ctx: &mut Ctx, doc: &DeTable) -> TestCallSpec {
    let mut s = TestCallSpec::default();
    let Some((t, _)) = ctx.table(doc, "test_calls") else {
        return s;
    };
    ctx.check_keys(t, "in [test_calls]", KEYS);
    if let Some((b, _)) = ctx.boolean(t, "enabled") {
        s.enabled = b;
    }
    let max = super::defaults::MAX_TIMER_MS;
    // Below 100 ms not even a healthy answering point on a LAN reliably answers.
    s.timeout_ms = ctx
        .integer(t, "timeout_ms", 100, max)
        .unwrap_or(s.timeout_ms);
    s.max_in_flight = ctx
        .integer(t, "max_in_flight", 1, 1000)
        .unwrap_or(s.max_in_flight);
    s.rtp_packets = ctx
        .integer(t, "rtp_packets", 1, 100)
        .unwrap_or(s.rtp_packets);
    match ctx.string(t, "media") {
        Some((m, _)) if m == "require" => s.media = TestCallMedia::Require,
        Some((m, _)) if m == "ignore" => s.media = TestCallMedia::Ignore,
        Some((m, sp)) => ctx.error(
            &sp,
            format!("`media` must be \"require\" or \"ignore\", not \"{m}\""),
        ),
        None => {}
    }
    if let Some(ms) = ctx.integer(t, "interval_ms", 0, max) {
        match super::walk::get(t, "interval_ms") {
            Some((_, sp)) if ms != 0 && ms < defaults::MIN_INTERVAL_MS => ctx.error(
                &sp,
                format!(
                    "`interval_ms` must be 0 (off) or at least {}: answering points ration test calls",
                    defaults::MIN_INTERVAL_MS
                ),
            ),
            _ => s.interval_ms = ms,
        }
    }
    s
}

/// A target's optional `test_uri`: the Request-URI of its test calls instead of
/// `urn:service:test.sos` (a `sip:`, `sips:`, `tel:` or `urn:` URI).
pub(crate) fn read_test_uri(ctx: &mut Ctx, t: &DeTable) -> Option<String> {
    let (uri, sp) = ctx.string(t, "test_uri")?;
    checked(ctx, &sp, check_uri(&uri))
}

fn check_uri(uri: &str) -> Result<String, String> {
    let lower = uri.to_ascii_lowercase();
    let scheme_ok = ["sip:", "sips:", "tel:", "urn:"]
        .iter()
        .any(|s| lower.starts_with(s) && lower.len() > s.len());
    if !scheme_ok {
        return Err(format!(
            "`test_uri` must be a sip:, sips:, tel: or urn: URI, not \"{uri}\""
        ));
    }
    // It goes verbatim into a Request-URI and a To header.
    if uri
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'<' || b == b'>' || b == b'"')
    {
        return Err(format!(
            "`test_uri` must not contain spaces, quotes, <, > or control characters: \"{uri}\""
        ));
    }
    Ok(uri.to_string())
}
