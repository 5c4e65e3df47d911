//! The undelivered-call record: every call no target answered, appended as one JSON line and synced,
//! so a PSAP can call the person back. Written by one thread fed over a channel: the call path never
//! waits on the disk. What queued while the thread wrote goes in its next write, with one sync (a
//! group commit: past the knee a 10 s step ended up to 2 000 calls undelivered, each with a sync of
//! its own before). At shutdown the thread writes what is queued, then ends.

use crate::tasks::Tasks;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;

pub struct Sink {
    /// `None` tells the writer to stop (sent at shutdown).
    tx: Option<mpsc::Sender<Option<serde_json::Value>>>,
}

impl Sink {
    /// Starts the writer thread (when there is a file to write). A task on `tasks` stops it when
    /// shutdown begins and ends when the thread has written what was queued before that.
    pub fn new(path: Option<PathBuf>, tasks: &Tasks) -> Sink {
        let Some(path) = path else {
            return Sink { tx: None };
        };
        let (tx, rx) = mpsc::channel::<Option<serde_json::Value>>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let writer = std::thread::Builder::new()
            .name("undelivered".to_string())
            .spawn(move || {
                let _done = done_tx; // dropped, so `done_rx` wakes, when this thread ends
                let mut batch = Vec::new();
                while let Ok(Some(first)) = rx.recv() {
                    batch.push(first);
                    let stop = loop {
                        if batch.len() >= BATCH_MAX {
                            break false;
                        }
                        match rx.try_recv() {
                            Ok(Some(rec)) => batch.push(rec),
                            Ok(None) => break true,
                            Err(_) => break false,
                        }
                    };
                    if let Err(e) = append(&path, &batch) {
                        for rec in &batch {
                            tracing::error!(path = %path.display(), error = %e, record = %rec, "cannot write undelivered record");
                        }
                    }
                    batch.clear();
                    if stop {
                        break;
                    }
                }
            });
        if let Err(e) = writer {
            tracing::error!(error = %e, "cannot start the undelivered-record writer; records are only logged");
            return Sink { tx: None };
        }
        let (stop, token) = (tx.clone(), tasks.token().clone());
        tasks.spawn_watching(async move {
            token.cancelled().await;
            let _ = stop.send(None);
            let _ = done_rx.await;
        });
        Sink { tx: Some(tx) }
    }

    /// Logs the record at error level and queues it for the file.
    pub fn record(&self, rec: serde_json::Value) {
        tracing::error!(record = %rec, "undelivered call");
        if let Some(tx) = &self.tx {
            let _ = tx.send(Some(rec));
        }
    }
}

/// The most records one write and sync carries.
const BATCH_MAX: usize = 1024;

/// Appends the records, one JSON line each, in one write, and syncs the file.
fn append(path: &PathBuf, recs: &[serde_json::Value]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut lines = Vec::new();
    for rec in recs {
        serde_json::to_writer(&mut lines, rec)?;
        lines.push(b'\n');
    }
    f.write_all(&lines)?;
    f.sync_data()
}

/// Builds the record from the INVITE and the attempts.
pub fn record(
    invite: &crate::sip::Message,
    route: &str,
    emergency: bool,
    attempts: &[super::call::AttemptRecord],
) -> serde_json::Value {
    let h = |n: &[u8]| {
        invite
            .header_named(n)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    json!({
        "time_unix_ms": now.as_millis() as u64,
        "call_id": String::from_utf8_lossy(invite.call_id()),
        "emergency": emergency,
        "request_uri": invite.request_uri().map(|u| String::from_utf8_lossy(u).into_owned()),
        "p_asserted_identity": h(b"P-Asserted-Identity"),
        "from": h(b"From"),
        "contact": h(b"Contact"),
        "geolocation": h(b"Geolocation"),
        "geolocation_routing": h(b"Geolocation-Routing"),
        "route": route,
        "attempts": attempts.iter().map(|a| json!({
            "target": &*a.target,
            "reason": a.outcome.to_string(),
            "status": a.outcome.status(),
            "started_ms": a.started_ms,
            "elapsed_ms": a.elapsed_ms,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_record_queued_before_shutdown_is_written_once_in_order() {
        let dir = std::env::temp_dir().join(format!("sos-undelivered-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("undelivered.jsonl");
        let tasks = Tasks::new();
        let sink = Sink::new(Some(path.clone()), &tasks);
        // More than one batch, queued faster than the thread syncs.
        let n = BATCH_MAX * 2 + 7;
        for i in 0..n {
            sink.record(json!({ "call_id": format!("c{i}") }));
        }
        assert!(
            tasks
                .cancel_and_join(std::time::Duration::from_secs(30))
                .await
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).expect("one JSON record per line");
                v["call_id"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(ids, (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
