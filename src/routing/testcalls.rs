//! Test-call settings in the snapshot: `[test_calls]` resolved, and each target's test Request-URI.

use super::{Target, TargetId, TargetKind};
use crate::config::{TargetSpec, TestCallMedia, TestCallSpec, test_call_defaults};
use std::collections::HashMap;
use std::time::Duration;

/// `[test_calls]` plus the per-target `test_uri` overrides, read by `crate::testcall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCallSettings {
    /// Place test calls at all. Default true.
    pub enabled: bool,
    /// INVITE to final response; a provisional does not extend it. Default 4 s.
    pub timeout: Duration,
    /// Test calls in flight at once, over all targets. Default 8.
    pub max_in_flight: usize,
    /// Default `Require` (when the answer offers media).
    pub media: TestCallMedia,
    /// Periodic test calls per target; `None` (default) = off.
    pub interval: Option<Duration>,
    /// RTP packets sent once answered, 20 ms apart. Default 5.
    pub rtp_packets: u32,
    /// Targets whose rules set `test_uri`.
    uris: HashMap<TargetId, String>,
}

impl TestCallSettings {
    /// The Request-URI of a test call to `target`: its `test_uri`, else `urn:service:test.sos` for a
    /// SIP target. `None` for a tel target without `test_uri`: its test call would ring a
    /// business line's human, so it gets none unless the operator names a test number.
    pub fn uri_for(&self, target: &Target) -> Option<&str> {
        match (self.uris.get(&target.id), &target.kind) {
            (Some(uri), _) => Some(uri),
            (None, TargetKind::Sip) => Some(test_call_defaults::TEST_URI),
            (None, TargetKind::Tel { .. }) => None,
        }
    }

    /// Sets (or with `None` removes) a target's test URI; for code that builds targets without a file.
    pub fn set_uri(&mut self, target: &TargetId, uri: Option<String>) {
        match uri {
            Some(u) => self.uris.insert(target.clone(), u),
            None => self.uris.remove(target),
        };
    }
}

impl Default for TestCallSettings {
    fn default() -> Self {
        compile(&TestCallSpec::default(), &[])
    }
}

pub(super) fn compile(spec: &TestCallSpec, targets: &[TargetSpec]) -> TestCallSettings {
    TestCallSettings {
        enabled: spec.enabled,
        timeout: Duration::from_millis(spec.timeout_ms),
        max_in_flight: usize::try_from(spec.max_in_flight).unwrap_or(usize::MAX),
        media: spec.media,
        interval: (spec.interval_ms > 0).then(|| Duration::from_millis(spec.interval_ms)),
        rtp_packets: u32::try_from(spec.rtp_packets).unwrap_or(u32::MAX),
        uris: targets
            .iter()
            .filter_map(|t| Some((t.id.as_str().into(), t.test_uri.clone()?)))
            .collect(),
    }
}
