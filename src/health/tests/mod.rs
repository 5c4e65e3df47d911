//! Tests of the health module, by layer: the pure machine (unit + proptest), the keyed store
//! (proptest over reloads), the prober (fake transport, paused time).

mod prober_tests;
mod state_props;
mod state_unit;
mod store_props;

use crate::config::Proto;
use crate::routing::{HealthSettings, Target, TargetKind};
use std::sync::Arc;
use std::time::Duration;

/// The documented defaults of [`HealthSettings`].
pub(super) fn settings() -> HealthSettings {
    HealthSettings {
        probe: true,
        probe_interval: Duration::from_millis(1000),
        probe_timeout: Duration::from_millis(400),
        probe_jitter_percent: 20,
        down_after_probe_failures: 2,
        up_after_probe_successes: 2,
        down_after_call_failures: 3,
        alive_codes: vec![(200, 299)],
    }
}

pub(super) fn sip_target(id: &str, port: u16) -> Arc<Target> {
    Arc::new(Target {
        id: id.into(),
        kind: TargetKind::Sip,
        uri: format!("sip:127.0.0.1:{port}"),
        next_hop: format!("127.0.0.1:{port}").parse().unwrap(),
        transport: Proto::Udp,
        tls_name: None,
        failure_domain: vec!["lab".into()],
        health: settings(),
        line: 1,
    })
}

pub(super) fn tel_target(id: &str, gateway: &Target) -> Arc<Target> {
    Arc::new(Target {
        id: id.into(),
        kind: TargetKind::Tel {
            number: "+19785386180".into(),
            gateway: gateway.id.clone(),
        },
        uri: gateway.uri.clone(),
        next_hop: gateway.next_hop,
        transport: gateway.transport,
        tls_name: gateway.tls_name.clone(),
        failure_domain: vec!["pstn".into()],
        health: settings(),
        line: 1,
    })
}
