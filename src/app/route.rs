//! `sosrouter route`: the edge around `routing::whatif`. Turns command-line options into the
//! call's facts, and reads readiness from a running proxy's admin endpoint when asked to.

use crate::routing::whatif::{WhatIf, readiness_from_word, what_if};
use crate::routing::{CallFacts, Readiness, Rules};
use anyhow::{Context, anyhow, bail};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
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
    /// The admin bearer token's file, for a proxy whose reads need it. Default: the
    /// `SOSROUTER_ADMIN_TOKEN` variable, if set.
    pub admin_token_file: Option<PathBuf>,
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
pub async fn route(rules: &Rules, args: &RouteArgs) -> anyhow::Result<WhatIf> {
    let call = facts(rules, args)?;
    let mut supposed: HashMap<String, Readiness> = match &args.admin {
        Some(url) => {
            let env = std::env::var("SOSROUTER_ADMIN_TOKEN").ok();
            let token = crate::admin::load_token(args.admin_token_file.as_deref(), env.as_deref())?;
            admin_readiness(url, token.as_ref().map(|t| t.secret())).await?
        }
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

/// GET `<url>/status` (with the bearer token when given); each target's `readiness`.
pub async fn admin_readiness(
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<HashMap<String, Readiness>> {
    let addr = format!("{}/status", url.trim_end_matches('/'));
    let status_url = reqwest::Url::parse(&addr)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| anyhow!("--admin `{url}`: expected http://HOST:PORT"))?;
    let client = crate::events::webhook::client_builder()
        .timeout(ADMIN_TIMEOUT)
        .build()
        .context("HTTP client")?;
    let mut req = client.get(status_url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot ask the admin endpoint {addr}"))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .with_context(|| format!("reading the answer of {addr}"))?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        bail!(
            "{addr} answered 401: its reads need the admin token (--admin-token-file or SOSROUTER_ADMIN_TOKEN)"
        );
    }
    if !status.is_success() {
        bail!("{addr} answered {status}: {body}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{addr}: bad JSON"))?;
    let targets = json["targets"]
        .as_array()
        .ok_or_else(|| anyhow!("{addr}: no `targets` array"))?;
    let mut map = HashMap::new();
    for t in targets {
        let (Some(id), Some(r)) = (t["id"].as_str(), t["readiness"].as_str()) else {
            bail!("{addr}: a target without id or readiness: {t}");
        };
        let r = readiness_from_word(r)
            .ok_or_else(|| anyhow!("{addr}: target `{id}`: unknown readiness `{r}`"))?;
        map.insert(id.to_string(), r);
    }
    Ok(map)
}
