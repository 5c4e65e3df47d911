//! Hot reload of the rules file: the one place that replaces the running rules.
//!
//! The signal handler (SIGHUP), the file watcher (`watch.rs`) and the admin route (`POST /reload`)
//! all call [`Reloader::reload`]. One reload at a time (a mutex around read-validate-swap), so two
//! triggers firing together cannot interleave a rekey of one file with the swap of another.
//!
//! A reload, in order:
//! 1. read the file and hash its bytes (the hash identifies what is running, in `/status`);
//! 2. parse and validate it completely beside the running rules; any error refuses it whole;
//! 3. refuse a change of listen addresses (sockets are bound once, at start);
//! 4. swap in the `[tls]` certificates (read and checked in step 2: a bad file refuses the reload)
//!    and the targets' `tls_name`s;
//! 5. re-key health (surviving ids keep state, counters and the operator switch);
//! 6. swap the snapshot in one `ArcSwap::store`. Calls in flight keep the plan they started with:
//!    each call loaded its own `Arc<Rules>` when it began (`proxy/task.rs`).

use crate::config::Severity;
use crate::health::Health;
use crate::routing::{Listen, Rules};
use crate::transport::{Transport, tls};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// What `/status` shows about the running rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesStatus {
    /// 1 at start, +1 per successful reload.
    pub version: u64,
    /// The rules file as given on the command line.
    pub source: String,
    /// SHA-256 of the file's bytes in lowercase hex, as `sha256sum` prints it; null when the
    /// rules did not come from a file (tests that start from text).
    pub hash: Option<String>,
    /// When the running rules were loaded, Unix time in milliseconds.
    pub loaded_unix_ms: u64,
    /// Every error line of the last refused reload; null once a reload succeeds.
    pub last_reload_error: Option<Vec<String>>,
}

/// A successful reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reloaded {
    pub version: u64,
    pub hash: String,
    pub warnings: Vec<String>,
}

/// A refused reload: the old rules keep serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rules reload refused:\n{}", errors.join("\n"))]
pub struct Refused {
    /// One `file:line:col: error: message` line per error.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// SHA-256 of a rules file's bytes, in lowercase hex: what `sha256sum FILE` prints, so an
/// operator can tell which file is running (`/status`, `/reload`) with the tools they have.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A rules file read and checked: its content hash (None when unreadable) and the outcome.
pub struct Read {
    pub hash: Option<String>,
    pub result: Result<(Rules, Vec<String>), Refused>,
    /// The `[tls]` files, loaded when the rules are good and have the section.
    pub tls: Option<crate::transport::TlsMaterial>,
    /// Line of the top-level `listen` key, for messages (compiled rules keep no position for it).
    listen_line: usize,
}

/// Reads and parses a rules file: the rules and the warning lines, or every error line (an
/// unreadable file is one error at 1:1).
pub fn read_rules(path: &Path) -> Read {
    let source = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Read {
                hash: None,
                result: Err(Refused {
                    errors: vec![format!("{source}:1:1: error: cannot read the file: {e}")],
                    warnings: Vec::new(),
                }),
                tls: None,
                listen_line: 1,
            };
        }
    };
    parse_text(&text, &source)
}

/// Parses and validates rules text as `check` does (`source` names it in messages).
pub fn parse_text(text: &str, source: &str) -> Read {
    let listen_line = text
        .lines()
        .position(|l| l.trim_start().starts_with("listen"))
        .map_or(1, |i| i + 1);
    let mut tls = None;
    let result = match Rules::parse(text, source) {
        // Certificate files are part of the rules: a bad one refuses the file like a bad key.
        Ok((rules, mut warnings)) => match rules.tls.as_deref().map(|s| tls::load(s, source)) {
            None => Ok((rules, lines(&warnings, Severity::Warning))),
            Some(Ok((material, tls_warnings))) => {
                tls = Some(material);
                warnings.extend(tls_warnings);
                Ok((rules, lines(&warnings, Severity::Warning)))
            }
            Some(Err(diags)) => {
                warnings.extend(diags);
                Err(Refused {
                    errors: lines(&warnings, Severity::Error),
                    warnings: lines(&warnings, Severity::Warning),
                })
            }
        },
        Err(diags) => Err(Refused {
            errors: lines(&diags, Severity::Error),
            warnings: lines(&diags, Severity::Warning),
        }),
    };
    Read {
        hash: Some(content_hash(text.as_bytes())),
        result,
        tls,
        listen_line,
    }
}

fn lines(diags: &[crate::config::Diagnostic], severity: Severity) -> Vec<String> {
    diags
        .iter()
        .filter(|d| d.severity == severity)
        .map(|d| d.to_string())
        .collect()
}

/// Hash of the file as it is now, if readable (the watcher's cheap "did it change" test).
pub(super) fn file_hash(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| content_hash(&b))
}

/// Takes a lock even when a thread panicked while holding it: every value these locks guard is
/// whole after each statement (a reload that panicked half-way leaves the old rules running), so
/// one panic must not turn every later `/status` and reload into a panic too.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shared reload entry point. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    rules: Arc<ArcSwap<Rules>>,
    health: Health,
    /// Where new `[tls]` certificates and `tls_name`s go.
    transport: Transport,
    /// The listen addresses the running sockets were bound from, as the file wrote them. None when
    /// the command line chose them: then the file's `listen` is not in effect and may change.
    bound_listen: Option<Vec<Listen>>,
    /// Serializes reloads; held for the whole read-validate-swap.
    reload: Mutex<()>,
    /// Held only to copy or update; `/status` never waits on a file read.
    status: Mutex<RulesStatus>,
    /// Hash of the last file content a reload was tried with, good or bad: the watcher does not
    /// retry a broken file every second, only a changed one.
    last_tried: Mutex<Option<String>>,
    /// Every reload is counted and published as an alert event.
    metrics: Arc<crate::metrics::Metrics>,
    events: crate::events::Bus,
    /// Set in cluster mode: the rules come from etcd, `/status` shows the cluster, and file
    /// reloads (SIGHUP, `/reload`) are refused.
    cluster: std::sync::OnceLock<crate::cluster::Cluster>,
    /// The test-call scheduler: its plan (settings, targets, pace) follows the rules.
    test_calls: std::sync::OnceLock<crate::testcall::TestCalls>,
}

impl Reloader {
    pub(super) fn new(
        path: PathBuf,
        rules: Arc<ArcSwap<Rules>>,
        hash: Option<String>,
        health: Health,
        transport: Transport,
        bound_listen: Option<Vec<Listen>>,
        telemetry: (Arc<crate::metrics::Metrics>, crate::events::Bus),
    ) -> Reloader {
        let status = RulesStatus {
            version: 1,
            source: rules.load().source.clone(),
            hash: hash.clone(),
            loaded_unix_ms: unix_ms(),
            last_reload_error: None,
        };
        Reloader {
            inner: Arc::new(Inner {
                path,
                rules,
                health,
                transport,
                bound_listen,
                reload: Mutex::new(()),
                status: Mutex::new(status),
                last_tried: Mutex::new(hash),
                metrics: telemetry.0,
                events: telemetry.1,
                cluster: std::sync::OnceLock::new(),
                test_calls: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The test-call scheduler to give each new rules' plan to (the wiring sets it once).
    pub fn set_test_calls(&self, calls: crate::testcall::TestCalls) -> bool {
        self.inner.test_calls.set(calls).is_ok()
    }

    /// Cluster mode: rules come from etcd through [`Reloader::apply_text`]; `/status` gains the
    /// cluster object.
    pub fn set_cluster(&self, c: crate::cluster::Cluster) -> bool {
        self.inner.cluster.set(c).is_ok()
    }

    /// Sets the version `/status` shows (cluster mode: the etcd version started on).
    pub fn set_version(&self, version: u64) {
        lock(&self.inner.status).version = version;
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn status(&self) -> RulesStatus {
        lock(&self.inner.status).clone()
    }

    /// Hash of the file content last tried (see `Inner::last_tried`).
    pub fn last_tried(&self) -> Option<String> {
        lock(&self.inner.last_tried).clone()
    }

    /// Reloads the rules file; `trigger` names who asked ("sighup", "file change", "admin") for
    /// the log. Blocking (reads a file): call it from `spawn_blocking` or a short sync handler.
    pub fn reload(&self, trigger: &str) -> Result<Reloaded, Refused> {
        if self.inner.cluster.get().is_some() {
            return Err(Refused {
                errors: vec![format!(
                    "reload ({trigger}) refused: this node runs its rules from etcd; change them \
                     with `sosrouter rules push FILE --etcd URL` (or `rules rollback VERSION`)"
                )],
                warnings: Vec::new(),
            });
        }
        let _one_at_a_time = lock(&self.inner.reload);
        let read = read_rules(&self.inner.path);
        *lock(&self.inner.last_tried) = read.hash.clone();
        let result = self.swap(read, None);
        self.finish(result, trigger)
    }

    /// Validates `text` (etcd version `version`) as `check` does and swaps it in; the same
    /// steps, events and counters as a file reload. Blocking (parses): a blocking thread.
    pub fn apply_text(
        &self,
        version: u64,
        text: &str,
        source: &str,
        trigger: &str,
    ) -> Result<Reloaded, Refused> {
        let _one_at_a_time = lock(&self.inner.reload);
        let result = self.swap(parse_text(text, source), Some(version));
        self.finish(result, trigger)
    }

    fn finish(
        &self,
        result: Result<Reloaded, Refused>,
        trigger: &str,
    ) -> Result<Reloaded, Refused> {
        let mut status = lock(&self.inner.status);
        self.inner.metrics.reload(result.is_ok());
        let detail = match &result {
            Ok(r) => format!("version {} ({}), trigger {trigger}", r.version, r.hash),
            Err(e) => format!("refused ({trigger}): {}", e.errors.join("; ")),
        };
        let event = crate::events::Event::reload(result.is_ok(), &detail);
        self.inner.events.publish(event);
        match &result {
            Ok(r) => {
                status.version = r.version;
                status.source = self.inner.rules.load().source.clone();
                status.hash = Some(r.hash.clone());
                status.loaded_unix_ms = unix_ms();
                status.last_reload_error = None;
                info!(version = r.version, hash = %r.hash, trigger, warnings = r.warnings.len(),
                    source = %self.inner.path.display(), "rules reloaded");
                for w in &r.warnings {
                    warn!(version = r.version, reason = %w, "rules warning");
                }
            }
            Err(refused) => {
                status.last_reload_error = Some(refused.errors.clone());
                warn!(version = status.version, trigger, errors = refused.errors.len(),
                    source = %self.inner.path.display(),
                    "rules reload refused; the running rules keep serving");
                for e in &refused.errors {
                    warn!(version = status.version, reason = %e, "rules reload error");
                }
            }
        }
        result
    }

    /// Steps 2-6 of the module doc, on rules already read. Called with the reload lock held.
    /// `version`: the version to show (cluster mode); None: the running one + 1.
    fn swap(&self, read: Read, version: Option<u64>) -> Result<Reloaded, Refused> {
        let inner = &*self.inner;
        let (new, warnings) = read.result?;
        let hash = read.hash.unwrap_or_default(); // Some whenever the file parsed
        if let Some(bound) = &inner.bound_listen
            && *bound != new.listen
        {
            return Err(Refused {
                errors: vec![format!(
                    "{}:{}:1: error: `listen` changed from {} to {}: listen addresses cannot \
                     change on reload because the sockets are bound once, at start; restore \
                     them, or restart sosrouter to move it",
                    new.source,
                    read.listen_line,
                    show(bound),
                    show(&new.listen),
                )],
                warnings,
            });
        }
        // New certificates and trust for new connections; those up keep theirs until they close.
        let tls = read.tls;
        inner.transport.set_tls_material(tls.clone());
        inner.transport.set_tls_names(super::tls_names(&new));
        inner.health.rekey(&new);
        inner.health.test_calls_decide(new.test_calls.enabled);
        if let Some(calls) = inner.test_calls.get() {
            calls.update(super::test_call_plan(&new, tls));
        }
        inner.metrics.prepare_rules(&new);
        inner.rules.store(Arc::new(new));
        let version = version.unwrap_or_else(|| lock(&inner.status).version + 1);
        Ok(Reloaded {
            version,
            hash,
            warnings,
        })
    }
}

fn show(listen: &[Listen]) -> String {
    let v: Vec<String> = listen
        .iter()
        .map(|l| format!("{}:{}", l.transport, l.addr))
        .collect();
    format!("[{}]", v.join(", "))
}

/// Runs `f`, a blocking reload, from a runtime thread without stalling the tasks queued on it: on
/// the multi-threaded runtime the thread hands its other tasks to the rest of the runtime first
/// (`block_in_place`; reading and compiling an 18 000-target file takes hundreds of milliseconds).
/// Elsewhere (a current-thread runtime in tests, or no runtime) it simply runs.
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The admin endpoint's view. The admin route calls this on its connection's task; the reload
/// itself runs through [`off_the_runtime`], so calls in flight are not held up behind it.
impl crate::admin::RulesControl for Reloader {
    fn reload(&self) -> Result<serde_json::Value, serde_json::Value> {
        match off_the_runtime(|| Reloader::reload(self, "admin")) {
            Ok(r) => Ok(serde_json::json!({
                "ok": true, "version": r.version, "hash": r.hash, "warnings": r.warnings,
            })),
            Err(e) => Err(serde_json::json!({
                "ok": false, "errors": e.errors, "warnings": e.warnings,
            })),
        }
    }

    fn status(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(Reloader::status(self)).unwrap_or_default();
        if let (Some(c), Some(obj)) = (self.inner.cluster.get(), v.as_object_mut()) {
            obj.insert("cluster".into(), c.status());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_anyway() {
        let m = Arc::new(Mutex::new(7));
        let m2 = m.clone();
        let panicked = std::thread::spawn(move || {
            let _held = m2.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 8);
    }

    #[test]
    fn a_files_hash_is_what_sha256sum_prints() {
        let dir = std::env::temp_dir().join(format!("sosrouter-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.toml");
        std::fs::write(&path, "abc").unwrap();
        let read = read_rules(&path);
        let known = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(read.hash.as_deref(), Some(known));
        assert_eq!(file_hash(&path).as_deref(), Some(known));
        let sum = std::process::Command::new("sha256sum")
            .arg(&path)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let sum = String::from_utf8(sum.stdout).unwrap();
        assert_eq!(sum.split_whitespace().next(), Some(known), "{sum}");
    }

    #[test]
    fn the_hash_is_sha256_in_lowercase_hex() {
        // FIPS 180-2 test vectors.
        assert_eq!(
            content_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            content_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
