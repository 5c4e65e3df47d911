//! Does a call meet a route's conditions, and is it an emergency call. AND across condition kinds,
//! OR within one kind's list; the `headers` table is AND (every listed header must carry its value).

use super::CallFacts;
use crate::config::Conditions;

/// The emergency service URN; it and every sub-service (`urn:service:sos.fire`) are emergency.
pub(super) const SOS_URN: &str = "urn:service:sos";

/// What a Request-URI addresses, as routes see it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Dest<'a> {
    /// A service URN, lower-cased (`urn:service:sos.fire`).
    Service(String),
    /// sip/sips user part or tel number, without parameters (`911`, `+19785386180`).
    Number(&'a str),
    None,
}

pub(super) fn dest<'a>(request_uri: &'a [u8]) -> Dest<'a> {
    let Ok(uri) = std::str::from_utf8(request_uri) else {
        return Dest::None;
    };
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Dest::None;
    };
    let before_params = |s: &'a str| s.split(';').next().unwrap_or("");
    match scheme.to_ascii_lowercase().as_str() {
        "urn" => Dest::Service(uri.to_ascii_lowercase()),
        "tel" => Dest::Number(before_params(rest)),
        "sip" | "sips" => match rest.split_once('@') {
            // The user may carry a password (`user:pw`) or user parameters (`911;phone-context=...`).
            Some((userinfo, _)) => {
                Dest::Number(before_params(userinfo.split(':').next().unwrap_or("")))
            }
            None => Dest::None,
        },
        _ => Dest::None,
    }
}

/// `urn` is `prefix` or one of its sub-services, comparing whole `.`-separated labels (so
/// `urn:service:sos` covers `urn:service:sos.fire` but not `urn:service:sosx`).
pub(super) fn urn_under(urn: &str, prefix: &str) -> bool {
    urn.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

pub(super) fn is_emergency(request_uri: &[u8], numbers: &[String]) -> bool {
    match dest(request_uri) {
        Dest::Service(urn) => urn_under(&urn, SOS_URN),
        Dest::Number(n) => numbers.iter().any(|e| e == n),
        Dest::None => false,
    }
}

/// `Some(why)` when every condition holds: one clause per condition kind, naming what matched.
/// The call carries header `name` (lower case) with exactly `value` (surrounding blanks ignored).
pub(super) fn has_header(call: &CallFacts, name: &str, value: &str) -> bool {
    call.headers
        .iter()
        .any(|(n, v)| n == name && v.trim_ascii() == value.as_bytes())
}

pub(super) fn matches(c: &Conditions, call: &CallFacts) -> Option<String> {
    let mut why = Vec::new();
    let dest = dest(&call.request_uri);
    if !c.service_urns.is_empty() {
        let Dest::Service(urn) = &dest else {
            return None;
        };
        let p = c.service_urns.iter().find(|p| urn_under(urn, p))?;
        why.push(format!("service {urn} matched service_urns {p}"));
    }
    if !c.dialled.is_empty() {
        let Dest::Number(n) = dest else { return None };
        c.dialled.iter().find(|d| *d == n)?;
        why.push(format!("dialled {n} matched dialled"));
    }
    if !c.sources.is_empty() {
        let block = c.sources.iter().find(|b| b.contains(call.source))?;
        why.push(format!("source {} matched sources {block}", call.source));
    }
    if !c.caller_prefixes.is_empty() {
        let caller = call.caller.as_deref()?;
        let p = c
            .caller_prefixes
            .iter()
            .find(|p| caller.starts_with(p.as_str()))?;
        why.push(format!("caller {caller} matched caller_prefixes {p}"));
    }
    for (name, value) in &c.headers {
        if !has_header(call, name, value) {
            return None;
        }
        why.push(format!("header {name}: {value} matched headers"));
    }
    if why.is_empty() {
        why.push("no conditions (matches every call)".to_string());
    }
    Some(why.join("; "))
}
