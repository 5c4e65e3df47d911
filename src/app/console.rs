//! The data behind the operator console (`admin::console`): routes and chains from the running
//! rules, a small series of call and failover counts, the tail of the undelivered record, and the
//! what-if answered against health's readiness now.

use crate::admin::{ConsoleData, WhatIfQuery};
use crate::health::Health;
use crate::metrics::CallFigures;
use crate::metrics::{FailoverReason, Metrics};
use crate::routing::Rules;
use crate::routing::whatif::{render_text, what_if};
use crate::tasks::Tasks;
use arc_swap::ArcSwap;
use serde_json::json;
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One bucket of the traffic series.
pub const BUCKET: Duration = Duration::from_secs(10);
/// Buckets kept: 5 minutes.
pub const BUCKETS: usize = 30;
/// The most of the undelivered record read for the console (its tail).
const UNDELIVERED_TAIL_BYTES: u64 = 256 * 1024;

/// Cumulative counts at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sample {
    unix_ms: u64,
    calls: u64,
    failovers: u64,
    undelivered: u64,
}

/// The console's view of a running proxy. Cheap to clone.
#[derive(Clone)]
pub struct Console {
    rules: Arc<ArcSwap<Rules>>,
    health: Health,
    /// The proxy's call figures; None once the proxy is gone.
    figures: Arc<dyn Fn() -> Option<CallFigures> + Send + Sync>,
    metrics: Arc<Metrics>,
    undelivered_path: Option<PathBuf>,
    samples: Arc<Mutex<VecDeque<Sample>>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Console {
    pub fn new(
        rules: Arc<ArcSwap<Rules>>,
        health: Health,
        figures: Arc<dyn Fn() -> Option<CallFigures> + Send + Sync>,
        metrics: Arc<Metrics>,
        undelivered_path: Option<PathBuf>,
    ) -> Console {
        let c = Console {
            rules,
            health,
            figures,
            metrics,
            undelivered_path,
            samples: Arc::new(Mutex::new(VecDeque::with_capacity(BUCKETS + 1))),
        };
        c.sample();
        c
    }

    /// Samples the counters every [`BUCKET`] on `tasks`.
    pub fn spawn_sampler(&self, tasks: &Tasks) {
        let c = self.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + BUCKET, BUCKET);
            loop {
                tick.tick().await;
                if (c.figures)().is_none() {
                    return;
                }
                c.sample();
            }
        });
    }

    fn now(&self) -> Sample {
        let (calls, undelivered) = (self.figures)().map_or((0, 0), |f| (f.calls, f.undelivered));
        Sample {
            unix_ms: unix_ms(),
            calls,
            failovers: FailoverReason::ALL
                .iter()
                .map(|&r| self.metrics.failovers(r))
                .sum(),
            undelivered,
        }
    }

    fn sample(&self) {
        let s = self.now();
        let mut q = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() > BUCKETS {
            q.pop_front();
        }
        q.push_back(s);
    }
}

/// Buckets between consecutive cumulative samples, oldest first.
fn buckets(samples: &[Sample]) -> Vec<serde_json::Value> {
    samples
        .windows(2)
        .map(|w| {
            json!({
                "end_unix_ms": w[1].unix_ms,
                "calls": w[1].calls.saturating_sub(w[0].calls),
                "failovers": w[1].failovers.saturating_sub(w[0].failovers),
                "undelivered": w[1].undelivered.saturating_sub(w[0].undelivered),
            })
        })
        .collect()
}

/// The last `limit` JSON lines of the record (at most its last 256 KiB), newest first.
fn tail_records(path: &Path, limit: usize) -> std::io::Result<Vec<serde_json::Value>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(UNDELIVERED_TAIL_BYTES);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(UNDELIVERED_TAIL_BYTES).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if from > 0 && !lines.is_empty() {
        lines.remove(0); // cut in the middle
    }
    Ok(lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str(l).ok())
        .take(limit)
        .collect())
}

impl ConsoleData for Console {
    fn routes(&self) -> serde_json::Value {
        let rules = self.rules.load();
        let route = |r: &crate::routing::Route, default: bool| {
            json!({
                "id": &*r.id,
                "line": r.line,
                "description": r.description(),
                "default": default,
                "chain": r.chain.iter().map(|t| &**t).collect::<Vec<_>>(),
                "last_resort": r.chain.last().map(|t| &**t),
            })
        };
        let mut routes: Vec<_> = rules.routes.iter().map(|r| route(r, false)).collect();
        routes.push(route(&rules.default_route, true));
        let targets: Vec<_> = rules
            .targets
            .iter()
            .map(|t| {
                json!({
                    "id": &*t.id,
                    "uri": t.uri,
                    "transport": t.transport.to_string(),
                    "failure_domain": t.failure_domain,
                })
            })
            .collect();
        json!({ "routes": routes, "targets": targets })
    }

    fn traffic(&self) -> serde_json::Value {
        let mut samples: Vec<Sample> = self
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        samples.push(self.now());
        json!({ "bucket_ms": BUCKET.as_millis() as u64, "buckets": buckets(&samples) })
    }

    fn undelivered(&self, limit: usize) -> serde_json::Value {
        let Some(path) = &self.undelivered_path else {
            return json!([]);
        };
        match tail_records(path, limit) {
            Ok(v) => json!(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!([]),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the undelivered record");
                json!([])
            }
        }
    }

    fn systemic(&self) -> serde_json::Value {
        self.health.systemic_status()
    }

    fn what_if(&self, q: &WhatIfQuery) -> Result<serde_json::Value, String> {
        let rules = self.rules.load();
        let args = super::route::RouteArgs {
            uri: q.uri.clone(),
            dialled: q.dialled.clone(),
            caller: q.caller.clone(),
            ..Default::default()
        };
        let call = super::route::facts(&rules, &args).map_err(|e| e.to_string())?;
        let readiness = |id: &str| self.health.readiness(id);
        let answer = what_if(&rules, &call, &readiness, "this proxy's health now");
        let mut v = serde_json::to_value(&answer).map_err(|e| e.to_string())?;
        if let Some(o) = v.as_object_mut() {
            o.insert("text".into(), json!(render_text(&answer)));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_differences_of_cumulative_samples() {
        let s = |unix_ms, calls, failovers, undelivered| Sample {
            unix_ms,
            calls,
            failovers,
            undelivered,
        };
        let b = buckets(&[s(0, 1, 0, 0), s(10, 5, 2, 1), s(20, 5, 2, 1)]);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["calls"], 4);
        assert_eq!(b[0]["failovers"], 2);
        assert_eq!(b[0]["undelivered"], 1);
        assert_eq!(b[1]["calls"], 0);
        assert_eq!(b[1]["end_unix_ms"], 20);
        assert!(buckets(&[s(0, 1, 0, 0)]).is_empty());
    }

    const RULES: &str = "listen = [\"udp:127.0.0.1:5999\"]\n\
        [emergency]\nnumbers = [\"911\"]\n\
        [[targets]]\nid = \"a\"\nuri = \"sip:127.0.0.1:5998\"\nfailure_domain = \"x\"\n\
        [[targets]]\nid = \"b\"\nuri = \"sip:127.0.0.1:5997\"\nfailure_domain = \"y\"\n\
        [[routes]]\nid = \"urn\"\nchain = [\"a\", \"b\"]\nservice_urns = [\"urn:service:sos\"]\n\
        [default_route]\nchain = [\"b\", \"a\"]\n";

    fn console() -> Console {
        let (rules, _) = Rules::parse(RULES, "t.toml").unwrap();
        let health = Health::new(&rules);
        let figures = Arc::new(|| {
            Some(CallFigures {
                calls: 7,
                ..Default::default()
            })
        });
        Console::new(
            Arc::new(ArcSwap::from_pointee(rules)),
            health,
            figures,
            Arc::new(Metrics::default()),
            None,
        )
    }

    #[test]
    fn routes_list_every_chain_then_the_default() {
        let v = console().routes();
        assert_eq!(v["routes"][0]["id"], "urn");
        assert_eq!(v["routes"][0]["chain"], json!(["a", "b"]));
        assert_eq!(v["routes"][0]["last_resort"], "b");
        assert_eq!(v["routes"][1]["default"], true);
        assert_eq!(v["routes"][1]["chain"], json!(["b", "a"]));
        assert_eq!(v["targets"][1]["id"], "b");
    }

    #[test]
    fn what_if_answers_as_sosrouter_route_with_health_now() {
        let c = console();
        c.health.set_enabled("b", false);
        let q = WhatIfQuery {
            caller: Some("+15085550100".into()),
            dialled: Some("911".into()),
            uri: None,
        };
        let v = c.what_if(&q).unwrap();
        assert_eq!(v["request_uri"], "sip:911@127.0.0.1:5999");
        assert_eq!(v["route"], "default");
        assert_eq!(v["emergency"], true);
        // b is disabled: a first, then b.
        assert_eq!(v["plan"][0]["id"], "a");
        assert_eq!(v["plan"][1]["readiness"], "disabled");
        assert!(v["text"].as_str().unwrap().contains("+15085550100"));
        let both = WhatIfQuery {
            uri: Some("urn:service:sos".into()),
            dialled: Some("911".into()),
            caller: None,
        };
        assert!(c.what_if(&both).is_err());
        assert_eq!(c.traffic()["buckets"][0]["calls"], 0);
        assert_eq!(c.undelivered(5), json!([]));
    }

    #[test]
    fn tail_reads_the_newest_records_first_and_skips_bad_lines() {
        let dir = std::env::temp_dir().join(format!("sosrouter-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("undelivered.jsonl");
        std::fs::write(&path, "{\"n\":1}\nnot json\n{\"n\":2}\n{\"n\":3}\n").unwrap();
        let v = tail_records(&path, 2).unwrap();
        assert_eq!(v, vec![json!({"n": 3}), json!({"n": 2})]);
        assert_eq!(tail_records(&path, 10).unwrap().len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
