//! `sosrouter route`: the edge around `routing::whatif`. Turns command-line options into the
//! call's facts, and reads readiness from a running proxy's admin endpoint when asked to.

use crate::routing::whatif::{WhatIf, readiness_from_word, what_if};
use crate::routing::{CallFacts, Readiness, Rules};
use anyhow::{Context, anyhow, bail};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// The options of `sosrouter route`.
#[derive(Debug, Clone, Default)]
pub struct RouteArgs {
    /// A full Request-URI (`urn:service:sos`, `sip:911@...`, `tel:...`).
    pub uri: Option<String>,
    /// A dialled number: Request-URI `sip:NUMBER@<first listen address>`.
    pub dialled: Option<String>,
    pub caller: Option<String>,
    /// The source (trunk) address. Default 127.0.0.1.
    pub source: Option<IpAddr>,
    /// `Name: value` headers, for header conditions.
    pub headers: Vec<String>,
    /// Targets supposed down (NotReady) and disabled; applied on top of `--admin` readiness.
    pub down: Vec<String>,
    pub disabled: Vec<String>,
    /// Admin base URL of a running proxy (`http://127.0.0.1:9060`): read readiness from its /status.
    pub admin: Option<String>,
}

/// How long the admin endpoint may take to connect and answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The call's facts from the options. Exactly one of `uri` and `dialled` must be given.
pub fn facts(rules: &Rules, args: &RouteArgs) -> anyhow::Result<CallFacts> {
    let request_uri = match (&args.uri, &args.dialled) {
        (Some(u), None) => u.clone(),
        (None, Some(n)) => {
            let at = rules
                .listen
                .first()
                .map(|l| l.addr.to_string())
                .ok_or_else(|| anyhow!("the rules file has no listen address"))?;
            format!("sip:{n}@{at}")
        }
        _ => bail!("give exactly one of --uri and --dialled"),
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("--header `{h}`: expected `Name: value`"))?;
        // Stored the way `CallFacts::from_message` stores them: lower-case name, trimmed value.
        headers.push((
            name.trim().to_ascii_lowercase(),
            value.trim().as_bytes().to_vec(),
        ));
    }
    Ok(CallFacts {
        request_uri: request_uri.into_bytes(),
        caller: args.caller.clone(),
        source: args.source.unwrap_or(IpAddr::from([127, 0, 0, 1])),
        headers,
    })
}

/// Answers the question: loads readiness (admin, then `--down`/`--disabled`), routes the call.
pub fn route(rules: &Rules, args: &RouteArgs) -> anyhow::Result<WhatIf> {
    let call = facts(rules, args)?;
    let mut supposed: HashMap<String, Readiness> = match &args.admin {
        Some(url) => admin_readiness(url)?,
        None => HashMap::new(),
    };
    for id in &args.down {
        supposed.insert(id.clone(), Readiness::NotReady);
    }
    for id in &args.disabled {
        supposed.insert(id.clone(), Readiness::Disabled);
    }
    for id in args.down.iter().chain(&args.disabled) {
        if rules.target(id).is_none() {
            bail!(
                "--down/--disabled: `{id}` is not a target id of {}",
                rules.source
            );
        }
    }
    let from = match &args.admin {
        Some(url) => format!("{url}/status"),
        None => "supposed (all ready unless --down/--disabled)".to_string(),
    };
    // An id the running proxy does not know (added since it loaded its rules) is ready, as health
    // treats an id it has not seen yet.
    let readiness = |id: &str| supposed.get(id).copied().unwrap_or(Readiness::Ready);
    Ok(what_if(rules, &call, &readiness, &from))
}

/// GET `<url>/status` over one plain HTTP/1.1 request; each target's `readiness`.
pub fn admin_readiness(url: &str) -> anyhow::Result<HashMap<String, Readiness>> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--admin `{url}`: expected http://IP:PORT"))?;
    let authority = rest.trim_end_matches('/');
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("--admin `{url}`: expected http://IP:PORT (IP literal)"))?;
    let mut s = TcpStream::connect_timeout(&addr, ADMIN_TIMEOUT)
        .with_context(|| format!("cannot connect to the admin endpoint {addr}"))?;
    s.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    s.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .with_context(|| format!("reading the answer of {addr}"))?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{addr}: not an HTTP answer"))?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        bail!("{addr}/status answered {status}: {body}");
    }
    let json: serde_json::Value =
        serde_json::from_str(body).with_context(|| format!("{addr}/status: bad JSON"))?;
    let targets = json["targets"]
        .as_array()
        .ok_or_else(|| anyhow!("{addr}/status: no `targets` array"))?;
    let mut map = HashMap::new();
    for t in targets {
        let (Some(id), Some(r)) = (t["id"].as_str(), t["readiness"].as_str()) else {
            bail!("{addr}/status: a target without id or readiness: {t}");
        };
        let r = readiness_from_word(r)
            .ok_or_else(|| anyhow!("{addr}/status: target `{id}`: unknown readiness `{r}`"))?;
        map.insert(id.to_string(), r);
    }
    Ok(map)
}
