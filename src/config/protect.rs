//! The optional protection sections of the rules file: `[limits]` (message and TCP limits),
//! `[overload]` (shedding and per-source rate limits) and `[[acl]]` (trunk allowlists per listen
//! address). Every key has a default, so a file without them is protected out of the box.

use super::Proto;
use super::read::checked;
use super::values::{self, Cidr};
use super::walk::{Ctx, Span};
use std::net::SocketAddr;
use toml::de::DeTable;

/// Built-in defaults. Units are in the names; why each value: see the field docs below.
pub mod defaults {
    pub const MAX_MESSAGE_BYTES: u64 = 65_535;
    pub const MAX_HEADERS: u64 = 128;
    pub const MAX_LINE_BYTES: u64 = 8_192;
    pub const TCP_CONNECTIONS_PER_SOURCE: u64 = 64;
    pub const TCP_MESSAGE_DEADLINE_MS: u64 = 10_000;
    pub const TCP_IDLE_TIMEOUT_MS: u64 = 300_000;
    pub const TCP_CONNECT_TIMEOUT_MS: u64 = 2_000;
    pub const NON_EMERGENCY_CALLS_MAX: u64 = 2_000;
    pub const CALLS_MAX: u64 = 10_000;
    pub const RETRY_AFTER_S: u64 = 5;
    pub const SOURCE_INVITES_PER_S: u64 = 20;
    pub const SOURCE_EMERGENCY_INVITES_PER_S: u64 = 200;
    pub const SOURCES_TRACKED_MAX: u64 = 100_000;
}

const LIMIT_KEYS: &[&str] = &[
    "max_message_bytes",
    "max_headers",
    "max_line_bytes",
    "tcp_connections_per_source",
    "tcp_message_deadline_ms",
    "tcp_idle_timeout_ms",
    "tcp_connect_timeout_ms",
];
const OVERLOAD_KEYS: &[&str] = &[
    "non_emergency_calls_max",
    "calls_max",
    "retry_after_s",
    "source_invites_per_s",
    "source_emergency_invites_per_s",
    "sources_tracked_max",
    "trusted_sources",
];
const ACL_KEYS: &[&str] = &["listen", "allow", "emergency_from_unlisted"];

/// `[limits]`, every key resolved. Read at start: a reload does not rebind sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsSpec {
    pub max_message_bytes: u64,
    pub max_headers: u64,
    pub max_line_bytes: u64,
    pub tcp_connections_per_source: u64,
    pub tcp_message_deadline_ms: u64,
    pub tcp_idle_timeout_ms: u64,
    pub tcp_connect_timeout_ms: u64,
}

/// `[overload]`, every key resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverloadSpec {
    pub non_emergency_calls_max: u64,
    pub calls_max: u64,
    pub retry_after_s: u64,
    pub source_invites_per_s: u64,
    pub source_emergency_invites_per_s: u64,
    pub sources_tracked_max: u64,
    pub trusted_sources: Vec<Cidr>,
}

/// What to do with an emergency call from a source not on the listen address's allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlistedEmergency {
    /// Route it and log a warning (default: a wrong ACL must not block 911).
    Accept,
    /// Refuse it with 403 like any other call.
    Reject,
}

/// One `[[acl]]` table: the sources allowed to send calls to one listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclSpec {
    pub transport: Proto,
    pub listen: SocketAddr,
    pub allow: Vec<Cidr>,
    pub emergency_from_unlisted: UnlistedEmergency,
}

/// All protection settings of a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionSpec {
    pub limits: LimitsSpec,
    pub overload: OverloadSpec,
    pub acl: Vec<AclSpec>,
}

impl Default for ProtectionSpec {
    fn default() -> Self {
        use defaults::*;
        ProtectionSpec {
            limits: LimitsSpec {
                max_message_bytes: MAX_MESSAGE_BYTES,
                max_headers: MAX_HEADERS,
                max_line_bytes: MAX_LINE_BYTES,
                tcp_connections_per_source: TCP_CONNECTIONS_PER_SOURCE,
                tcp_message_deadline_ms: TCP_MESSAGE_DEADLINE_MS,
                tcp_idle_timeout_ms: TCP_IDLE_TIMEOUT_MS,
                tcp_connect_timeout_ms: TCP_CONNECT_TIMEOUT_MS,
            },
            overload: OverloadSpec {
                non_emergency_calls_max: NON_EMERGENCY_CALLS_MAX,
                calls_max: CALLS_MAX,
                retry_after_s: RETRY_AFTER_S,
                source_invites_per_s: SOURCE_INVITES_PER_S,
                source_emergency_invites_per_s: SOURCE_EMERGENCY_INVITES_PER_S,
                sources_tracked_max: SOURCES_TRACKED_MAX,
                trusted_sources: Vec::new(),
            },
            acl: Vec::new(),
        }
    }
}

const DAY_MS: u64 = 86_400_000;

/// Reads `[limits]`, `[overload]` and `[[acl]]` of the document; absent keys keep their defaults.
pub(crate) fn read_protection(
    ctx: &mut Ctx,
    doc: &DeTable,
    listen: &[(Proto, SocketAddr, Span)],
) -> ProtectionSpec {
    let mut p = ProtectionSpec::default();
    if let Some((t, _)) = ctx.table(doc, "limits") {
        ctx.check_keys(t, "in [limits]", LIMIT_KEYS);
        let l = &mut p.limits;
        // Below ~1 KiB not even a plain INVITE fits; above 1 MiB a UDP datagram cannot carry it anyway.
        set(
            &mut l.max_message_bytes,
            ctx.integer(t, "max_message_bytes", 1024, 1 << 20),
        );
        set(&mut l.max_headers, ctx.integer(t, "max_headers", 16, 4096));
        set(
            &mut l.max_line_bytes,
            ctx.integer(t, "max_line_bytes", 256, 1 << 20),
        );
        let per_source = ctx.integer(t, "tcp_connections_per_source", 1, 1_000_000);
        set(&mut l.tcp_connections_per_source, per_source);
        let deadline = ctx.integer(t, "tcp_message_deadline_ms", 100, DAY_MS);
        set(&mut l.tcp_message_deadline_ms, deadline);
        set(
            &mut l.tcp_idle_timeout_ms,
            ctx.integer(t, "tcp_idle_timeout_ms", 1000, DAY_MS),
        );
        let connect = ctx.integer(t, "tcp_connect_timeout_ms", 10, 60_000);
        set(&mut l.tcp_connect_timeout_ms, connect);
    }
    if let Some((t, span)) = ctx.table(doc, "overload") {
        ctx.check_keys(t, "in [overload]", OVERLOAD_KEYS);
        let o = &mut p.overload;
        let max = 10_000_000;
        set(
            &mut o.non_emergency_calls_max,
            ctx.integer(t, "non_emergency_calls_max", 0, max),
        );
        set(&mut o.calls_max, ctx.integer(t, "calls_max", 1, max));
        set(
            &mut o.retry_after_s,
            ctx.integer(t, "retry_after_s", 1, 3600),
        );
        set(
            &mut o.source_invites_per_s,
            ctx.integer(t, "source_invites_per_s", 1, max),
        );
        let em = ctx.integer(t, "source_emergency_invites_per_s", 1, max);
        set(&mut o.source_emergency_invites_per_s, em);
        set(
            &mut o.sources_tracked_max,
            ctx.integer(t, "sources_tracked_max", 1, max),
        );
        o.trusted_sources = cidrs(ctx, t, "trusted_sources");
        if o.non_emergency_calls_max > o.calls_max {
            ctx.error(
                &span,
                format!(
                    "[overload]: non_emergency_calls_max {} exceeds calls_max {}: emergency calls would be shed before others",
                    o.non_emergency_calls_max, o.calls_max
                ),
            );
        }
    }
    for (t, span) in ctx.tables(doc, "acl") {
        ctx.check_keys(t, "in [[acl]]", ACL_KEYS);
        p.acl.extend(read_acl(ctx, t, &span, listen));
    }
    p
}

fn set(slot: &mut u64, v: Option<u64>) {
    if let Some(v) = v {
        *slot = v;
    }
}

fn cidrs(ctx: &mut Ctx, t: &DeTable, key: &str) -> Vec<Cidr> {
    let Some((list, _)) = ctx.string_list(t, key) else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|(s, span)| checked(ctx, &span, Cidr::parse(&s)))
        .collect()
}

fn read_acl(
    ctx: &mut Ctx,
    t: &DeTable,
    span: &Span,
    listen: &[(Proto, SocketAddr, Span)],
) -> Option<AclSpec> {
    let Some((listen_s, lsp)) = ctx.string(t, "listen") else {
        ctx.error(
            span,
            "[[acl]] entry needs `listen`, e.g. listen = \"udp:127.0.0.1:5060\"",
        );
        return None;
    };
    let (transport, addr) = checked(ctx, &lsp, values::parse_listen(&listen_s))?;
    if !listen.iter().any(|(t, a, _)| *t == transport && *a == addr) {
        ctx.error(
            &lsp,
            format!("[[acl]] listen `{listen_s}` is not one of the `listen` addresses"),
        );
    }
    if ctx.string_list(t, "allow").is_none() {
        ctx.error(
            span,
            "[[acl]] entry needs `allow`, a list of sources (\"10.0.0.0/8\")",
        );
        return None;
    }
    let allow = cidrs(ctx, t, "allow");
    let unlisted = match ctx.string(t, "emergency_from_unlisted") {
        None => UnlistedEmergency::Accept,
        Some((s, _)) if s == "accept" => UnlistedEmergency::Accept,
        Some((s, _)) if s == "reject" => UnlistedEmergency::Reject,
        Some((s, sp)) => {
            ctx.error(
                &sp,
                format!("`emergency_from_unlisted` must be \"accept\" or \"reject\", not \"{s}\""),
            );
            return None;
        }
    };
    Some(AclSpec {
        transport,
        listen: addr,
        allow,
        emergency_from_unlisted: unlisted,
    })
}
