//! Reading the document: every table's keys and values, each checked where it stands. Cross-references
//! are checked afterwards in `validate`.

use super::Proto;
use super::model::{Endpoint, HealthSpec, TargetSpec, TimerSpec, defaults};
use super::routes::{ReadRoute, read_route};
use super::values;
use super::walk::{Ctx, Span, get};
use std::net::SocketAddr;
use toml::de::DeTable;

const TOP_KEYS: &[&str] = &[
    "listen",
    "defaults",
    "health",
    "emergency",
    "targets",
    "routes",
    "default_route",
    "limits",
    "overload",
    "acl",
    "suspicion",
    "test_calls",
    "tls",
];
const TIMER_KEYS: &[&str] = &[
    "attempt_timeout_ms",
    "ring_timeout_ms",
    "call_deadline_ms",
    "failover_codes",
];
const HEALTH_KEYS: &[&str] = &[
    "probe",
    "probe_interval_ms",
    "probe_timeout_ms",
    "probe_jitter_percent",
    "down_after_probe_failures",
    "up_after_probe_successes",
    "down_after_call_failures",
    "alive_codes",
];
const TARGET_KEYS: &[&str] = &[
    "id",
    "uri",
    "tel",
    "gateway",
    "transport",
    "failure_domain",
    "description",
    "health",
    "test_uri",
    "tls_name",
];
/// A target as read, with the spans `validate` reports at.
pub(crate) struct ReadTarget {
    pub id: String,
    pub id_span: Span,
    pub line: usize,
    /// None when a value of the target was bad (already reported). Its id still counts, so that
    /// chains and gateways naming it do not cascade into more errors.
    pub spec: Option<TargetSpec>,
    /// Written with `tel =`, so it cannot be a gateway.
    pub is_tel: bool,
    pub gateway: Option<(String, Span)>,
}

pub(crate) struct ReadFile {
    pub listen: Vec<(Proto, SocketAddr, Span)>,
    pub defaults: TimerSpec,
    pub health: HealthSpec,
    pub emergency_numbers: Vec<String>,
    pub targets: Vec<ReadTarget>,
    pub routes: Vec<ReadRoute>,
    pub default_route: Option<ReadRoute>,
    pub protection: super::protect::ProtectionSpec,
    pub suspicion: super::suspicion::SuspicionSpec,
    pub test_calls: super::testcalls::TestCallSpec,
    pub tls: Option<(super::tls::TlsSpec, Span)>,
}

pub(crate) fn read_document(ctx: &mut Ctx, doc: &DeTable) -> ReadFile {
    ctx.check_keys(doc, "at the top level", TOP_KEYS);
    let listen = read_listen(ctx, doc);
    let protection = super::protect::read_protection(ctx, doc, &listen);
    let suspicion = super::suspicion::read_suspicion(ctx, doc);
    let test_calls = super::testcalls::read_test_calls(ctx, doc);
    let tls = super::tls::read_tls(ctx, doc);
    let defaults = match ctx.table(doc, "defaults") {
        Some((t, _)) => {
            ctx.check_keys(t, "in [defaults]", TIMER_KEYS);
            read_timers(ctx, t)
        }
        None => TimerSpec::default(),
    };
    let health = match ctx.table(doc, "health") {
        Some((t, _)) => {
            ctx.check_keys(t, "in [health]", HEALTH_KEYS);
            read_health(ctx, t)
        }
        None => HealthSpec::default(),
    };
    let mut emergency_numbers = None;
    if let Some((t, _)) = ctx.table(doc, "emergency") {
        ctx.check_keys(t, "in [emergency]", &["numbers"]);
        emergency_numbers = ctx.string_list(t, "numbers").map(|(list, _)| {
            list.into_iter()
                .filter_map(|(s, span)| checked(ctx, &span, values::parse_dialled(&s)))
                .collect()
        });
    }
    let targets = ctx
        .tables(doc, "targets")
        .into_iter()
        .filter_map(|(t, span)| read_target(ctx, t, span))
        .collect();
    let routes = ctx
        .tables(doc, "routes")
        .into_iter()
        .filter_map(|(t, span)| read_route(ctx, t, span, false))
        .collect();
    let default_route = match ctx.table(doc, "default_route") {
        Some((t, span)) => read_route(ctx, t, span, true),
        None => {
            if get(doc, "default_route").is_none() {
                ctx.error(&(0..0), "missing [default_route]: every rules file needs the route used when no other matches");
            }
            None
        }
    };
    ReadFile {
        listen,
        defaults,
        health,
        emergency_numbers: emergency_numbers.unwrap_or_else(|| {
            defaults::EMERGENCY_NUMBERS
                .iter()
                .map(|s| s.to_string())
                .collect()
        }),
        targets,
        routes,
        default_route,
        protection,
        suspicion,
        test_calls,
        tls,
    }
}

pub(crate) fn checked<T>(ctx: &mut Ctx, span: &Span, r: Result<T, String>) -> Option<T> {
    r.map_err(|m| ctx.error(span, m)).ok()
}

fn read_listen(ctx: &mut Ctx, doc: &DeTable) -> Vec<(Proto, SocketAddr, Span)> {
    let Some((list, span)) = ctx.string_list(doc, "listen") else {
        if get(doc, "listen").is_none() {
            ctx.error(
                &(0..0),
                "missing `listen`: e.g. listen = [\"udp:127.0.0.1:5060\"]",
            );
        }
        return Vec::new();
    };
    if list.is_empty() {
        ctx.error(
            &span,
            "`listen` is empty: the proxy needs at least one address",
        );
    }
    list.into_iter()
        .filter_map(|(s, span)| {
            checked(ctx, &span, values::parse_listen(&s)).map(|(t, a)| (t, a, span))
        })
        .collect()
}

fn timer(ctx: &mut Ctx, t: &DeTable, key: &str) -> Option<u64> {
    ctx.integer(t, key, 1, defaults::MAX_TIMER_MS)
}

fn codes(ctx: &mut Ctx, t: &DeTable, key: &str, may_be_empty: bool) -> Option<Vec<(u16, u16)>> {
    let (list, span) = ctx.string_list(t, key)?;
    if list.is_empty() && !may_be_empty {
        ctx.error(&span, format!("`{key}` must not be empty"));
    }
    Some(
        list.into_iter()
            .filter_map(|(s, span)| checked(ctx, &span, values::parse_code(&s)))
            .collect(),
    )
}

pub(super) fn read_timers(ctx: &mut Ctx, t: &DeTable) -> TimerSpec {
    TimerSpec {
        attempt_timeout_ms: timer(ctx, t, "attempt_timeout_ms"),
        ring_timeout_ms: timer(ctx, t, "ring_timeout_ms"),
        call_deadline_ms: timer(ctx, t, "call_deadline_ms"),
        // Empty is allowed: then no final response fails over, only timers and transport errors do.
        failover_codes: codes(ctx, t, "failover_codes", true),
    }
}

fn read_health(ctx: &mut Ctx, t: &DeTable) -> HealthSpec {
    HealthSpec {
        probe: ctx.boolean(t, "probe").map(|(b, _)| b),
        probe_interval_ms: timer(ctx, t, "probe_interval_ms"),
        probe_timeout_ms: timer(ctx, t, "probe_timeout_ms"),
        probe_jitter_percent: ctx.integer(t, "probe_jitter_percent", 0, 100),
        down_after_probe_failures: ctx.integer(t, "down_after_probe_failures", 1, 1000),
        up_after_probe_successes: ctx.integer(t, "up_after_probe_successes", 1, 1000),
        down_after_call_failures: ctx.integer(t, "down_after_call_failures", 1, 1000),
        alive_codes: codes(ctx, t, "alive_codes", false),
    }
}

/// `failure_domain`: one tag, or a list of tags (every shared element the target depends on, e.g.
/// its site and a firewall shared with others). Required, never empty.
fn failure_domains(ctx: &mut Ctx, t: &DeTable, span: &Span) -> Option<(Vec<String>, Span)> {
    const KEY: &str = "failure_domain";
    let (v, sp) = get(t, KEY).or_else(|| {
        ctx.error(span, format!("[[targets]] entry is missing `{KEY}`"));
        None
    })?;
    let tags: Vec<String> = if matches!(v, toml::de::DeValue::Array(_)) {
        let (items, _) = ctx.string_list(t, KEY)?;
        items.into_iter().map(|(s, _)| s).collect()
    } else {
        vec![ctx.string(t, KEY)?.0]
    };
    if tags.is_empty() || tags.iter().any(|s| s.trim().is_empty()) {
        ctx.error(
            &sp,
            format!("`{KEY}` must not be empty (one tag, or a list of tags)"),
        );
        return None;
    }
    Some((tags, sp))
}

/// A required string key; reports its absence at the table's header.
pub(super) fn required(
    ctx: &mut Ctx,
    t: &DeTable,
    span: &Span,
    what: &str,
    key: &str,
) -> Option<(String, Span)> {
    if get(t, key).is_none() {
        ctx.error(span, format!("{what} is missing `{key}`"));
        return None;
    }
    let (s, sp) = ctx.string(t, key)?;
    if s.trim().is_empty() {
        ctx.error(&sp, format!("`{key}` must not be empty"));
        return None;
    }
    Some((s, sp))
}

fn read_target(ctx: &mut Ctx, t: &DeTable, span: Span) -> Option<ReadTarget> {
    ctx.check_keys(t, "in [[targets]]", TARGET_KEYS);
    let id = required(ctx, t, &span, "[[targets]] entry", "id");
    let failure_domain = failure_domains(ctx, t, &span);
    let description = ctx.string(t, "description").map(|(s, _)| s);
    let test_uri = super::testcalls::read_test_uri(ctx, t);
    let transport_key = ctx.string(t, "transport");
    let transport = transport_key
        .as_ref()
        .and_then(|(s, sp)| checked(ctx, sp, values::parse_transport(s)));
    let tls_name = ctx
        .string(t, "tls_name")
        .and_then(|(s, sp)| checked(ctx, &sp, super::tls::parse_tls_name(&s)).map(|n| (n, sp)));
    let health = match ctx.table(t, "health") {
        Some((h, _)) => {
            ctx.check_keys(h, "in a target's health table", HEALTH_KEYS);
            read_health(ctx, h)
        }
        None => HealthSpec::default(),
    };
    let (uri, tel, gateway) = (
        ctx.string(t, "uri"),
        ctx.string(t, "tel"),
        ctx.string(t, "gateway"),
    );
    let is_tel = tel.is_some();
    let endpoint = match (uri, tel) {
        (Some((uri, sp)), None) => {
            if let Some((_, gsp)) = &gateway {
                ctx.error(
                    gsp,
                    "`gateway` is only for tel targets; a sip target is its own next hop",
                );
            }
            if values::is_sips(&uri)
                && let Some((Some(p), tsp)) = transport_key.as_ref().map(|(_, s)| (transport, s))
                && p != Proto::Tls
            {
                ctx.error(
                    tsp,
                    format!("a sips: URI is reached over TLS only; write transport = \"tls\", not \"{p}\""),
                );
            }
            checked(ctx, &sp, values::parse_sip_uri(&uri)).map(|(user, addr)| Endpoint::Sip {
                uri,
                user,
                addr,
            })
        }
        (None, Some((tel, sp))) => {
            if let Some(tsp) = get(t, "transport").map(|(_, s)| s) {
                ctx.error(
                    &tsp,
                    "a tel target uses its gateway's transport; set `transport` on the gateway",
                );
            }
            let number = checked(
                ctx,
                &sp,
                values::parse_tel(tel.strip_prefix("tel:").unwrap_or(&tel)),
            );
            match &gateway {
                Some((gw, _)) => number.map(|number| Endpoint::Tel {
                    number,
                    gateway: gw.clone(),
                }),
                None => {
                    ctx.error(
                        &sp,
                        "a tel target needs `gateway = \"<id of a sip target>\"`",
                    );
                    None
                }
            }
        }
        (Some(_), Some((_, sp))) => {
            ctx.error(&sp, "a target has either `uri` (sip) or `tel`, not both");
            None
        }
        (None, None) => {
            ctx.error(&span, "[[targets]] entry needs `uri = \"sip:ip:port\"` or `tel = \"+1...\"` with `gateway`");
            None
        }
    };
    // A sips: target with no transport written is a TLS target.
    let transport = match &endpoint {
        Some(Endpoint::Sip { uri, .. }) if values::is_sips(uri) && transport_key.is_none() => {
            Some(Proto::Tls)
        }
        _ => transport,
    };
    match (&tls_name, transport) {
        (Some((_, sp)), t) if t != Some(Proto::Tls) => ctx.error(
            sp,
            "`tls_name` is only for transport = \"tls\" (the name the PSAP's certificate carries)",
        ),
        (None, Some(Proto::Tls)) => ctx.error(
            &span,
            "a TLS target needs `tls_name`: the name its certificate must carry (we connect to the IP literal, without DNS)",
        ),
        _ => {}
    }
    let (id, id_span) = id?;
    let pos = ctx.pos(span.start);
    let spec = match (endpoint, failure_domain) {
        (Some(endpoint), Some((failure_domain, _))) => Some(TargetSpec {
            id: id.clone(),
            endpoint,
            transport,
            tls_name: tls_name.map(|(n, _)| n),
            failure_domain,
            description,
            health,
            test_uri,
            pos,
        }),
        _ => None,
    };
    Some(ReadTarget {
        id,
        id_span,
        line: pos.line,
        spec,
        is_tel,
        gateway: gateway.filter(|_| is_tel),
    })
}
