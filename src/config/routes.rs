//! Reading `[[routes]]` and `[default_route]`: chain, timer overrides, match conditions.

use super::model::{Conditions, RouteSpec};
use super::read::{checked, read_timers, required};
use super::values::{self, Cidr};
use super::walk::{Ctx, Span, get};
use toml::de::{DeTable, DeValue};

const ROUTE_KEYS: &[&str] = &[
    "id",
    "description",
    "chain",
    "attempt_timeout_ms",
    "ring_timeout_ms",
    "call_deadline_ms",
    "failover_codes",
    "service_urns",
    "dialled",
    "sources",
    "caller_prefixes",
    "headers",
];
const CONDITION_KEYS: &[&str] = &[
    "service_urns",
    "dialled",
    "sources",
    "caller_prefixes",
    "headers",
];

pub(crate) struct ReadRoute {
    pub spec: RouteSpec,
    pub span: Span,
    pub id_span: Span,
    pub chain_span: Span,
    pub chain_spans: Vec<Span>,
}

pub(super) fn read_route(
    ctx: &mut Ctx,
    t: &DeTable,
    span: Span,
    is_default: bool,
) -> Option<ReadRoute> {
    let (what, table) = if is_default {
        ("[default_route]", "in [default_route]")
    } else {
        ("[[routes]] entry", "in [[routes]]")
    };
    ctx.check_keys(t, table, ROUTE_KEYS);
    if is_default {
        for key in CONDITION_KEYS {
            if let Some((_, span)) = get(t, key) {
                let msg = format!(
                    "`{key}`: [default_route] takes no conditions; it serves every call no [[routes]] entry matched"
                );
                ctx.error(&span, msg);
            }
        }
    }
    let id = if is_default && get(t, "id").is_none() {
        Some(("default".to_string(), span.clone()))
    } else {
        required(ctx, t, &span, what, "id")
    };
    let description = ctx.string(t, "description").map(|(s, _)| s);
    let timers = read_timers(ctx, t);
    let conditions = if is_default {
        Conditions::default()
    } else {
        read_conditions(ctx, t)
    };
    if get(t, "chain").is_none() {
        ctx.error(
            &span,
            format!("{what} is missing `chain` (target ids in failover order)"),
        );
    }
    let (chain, chain_span) = ctx.string_list(t, "chain")?;
    if chain.is_empty() {
        ctx.error(
            &chain_span,
            "`chain` is empty: a route needs at least one target",
        );
    }
    let (chain, chain_spans) = chain.into_iter().unzip();
    let (id, id_span) = id?;
    let spec = RouteSpec {
        id,
        description,
        chain,
        timers,
        conditions,
        pos: ctx.pos(span.start),
    };
    Some(ReadRoute {
        spec,
        span,
        id_span,
        chain_span,
        chain_spans,
    })
}

fn read_conditions(ctx: &mut Ctx, t: &DeTable) -> Conditions {
    let mut list = |key: &str, parse: fn(&str) -> Result<String, String>| -> Vec<String> {
        let Some((items, _)) = ctx.string_list(t, key) else {
            return Vec::new();
        };
        items
            .into_iter()
            .filter_map(|(s, span)| checked(ctx, &span, parse(&s)))
            .collect()
    };
    let service_urns = list("service_urns", values::parse_service_urn);
    let dialled = list("dialled", values::parse_dialled);
    let caller_prefixes = list("caller_prefixes", values::parse_dialled);
    let sources = match ctx.string_list(t, "sources") {
        Some((items, _)) => items
            .into_iter()
            .filter_map(|(s, span)| checked(ctx, &span, Cidr::parse(&s)))
            .collect(),
        None => Vec::new(),
    };
    let mut headers = Vec::new();
    if let Some((h, _)) = ctx.table(t, "headers") {
        for (name, value) in h.iter() {
            let Some(name) = checked(ctx, &name.span(), values::parse_header_name(name.get_ref()))
            else {
                continue;
            };
            match value.get_ref() {
                DeValue::String(v) => headers.push((name, v.trim().to_string())),
                other => ctx.error(
                    &value.span(),
                    format!(
                        "header `{name}` must be given a string value, not {}",
                        super::walk::type_name(other)
                    ),
                ),
            }
        }
    }
    Conditions {
        service_urns,
        dialled,
        sources,
        caller_prefixes,
        headers,
    }
}
