//! Two of the three reload triggers: SIGHUP and a change of the rules file. (The third, `POST
//! /reload`, is an admin route.) Both end in [`Reloader::reload`], run on a blocking thread because it
//! reads a file and takes the reload lock.
//!
//! Why polling and not inotify: no new dependency, it works the same on every file system (NFS,
//! bind mounts, editors that replace the file by rename), and one `stat` plus one small read per
//! second costs nothing.

use super::reload::{Reloader, file_hash};
use crate::tasks::Tasks;
use std::time::{Duration, SystemTime};
use tracing::{debug, warn};

/// How the file watcher polls. Defaults: 1 s between polls, reload once stable for 500 ms.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// Time between two looks at the file while nothing changes.
    pub poll: Duration,
    /// A changed file must stay unchanged (same mtime and hash) this long before it is loaded, so an
    /// editor's half-written save is not what gets loaded.
    pub stable: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            poll: Duration::from_secs(1),
            stable: Duration::from_millis(500),
        }
    }
}

/// Runs one reload on a blocking thread (tracked: shutdown waits for a reload under way). Errors
/// are logged by the reloader itself.
async fn reload(reloader: &Reloader, tasks: &Tasks, trigger: &'static str) {
    let r = reloader.clone();
    if let Err(e) = tasks.spawn_blocking(move || r.reload(trigger)).await {
        warn!(error = %e, trigger, "reload task failed");
    }
}

/// Reloads on every SIGHUP, on `tasks` until it is cancelled. Fails only when the signal handler
/// cannot be installed.
pub fn reload_on_sighup(reloader: Reloader, tasks: &Tasks) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let t = tasks.clone();
    tasks.spawn(async move {
        while hup.recv().await.is_some() {
            reload(&reloader, &t, "sighup").await;
        }
    });
    Ok(())
}

/// What the watcher saw of the file: modification time and content hash.
type Seen = (Option<SystemTime>, Option<String>);

fn look(reloader: &Reloader) -> Seen {
    let path = reloader.path();
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (mtime, file_hash(path))
}

/// Watches the rules file and reloads it when its content changed and then stayed the same for
/// `settings.stable`:
/// 1. every `poll`, read mtime and content hash;
/// 2. content equal to what was last tried (loaded or refused), or unreadable (mid-rename): nothing
///    to do;
/// 3. otherwise look again every `stable / 5` until mtime and hash have not moved for `stable`;
///    then reload once. A refused file is not retried until its content changes again.
///
/// Runs on `tasks` until it is cancelled.
pub fn watch_file(reloader: Reloader, settings: WatchSettings, tasks: &Tasks) {
    let t = tasks.clone();
    tasks.spawn(async move {
        let step = (settings.stable / 5).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(settings.poll).await;
            let mut seen = look(&reloader);
            if seen.1.is_none() || seen.1 == reloader.last_tried() {
                continue;
            }
            debug!(path = %reloader.path().display(), "rules file changed; waiting for it to settle");
            let mut stable_since = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(step).await;
                let now = look(&reloader);
                if now != seen {
                    seen = now;
                    stable_since = tokio::time::Instant::now();
                } else if stable_since.elapsed() >= settings.stable {
                    break;
                }
            }
            if seen.1.is_some() && seen.1 != reloader.last_tried() {
                reload(&reloader, &t, "file change").await;
            }
        }
    });
}
