//! Two of the three reload triggers: SIGHUP and a change of the rules file. (The third, `POST
//! /reload`, is an admin route.) Both end in [`Reloader::reload`], run on a blocking thread because it
//! reads a file and takes the reload lock.
//!
//! Why polling and not inotify: no new dependency, it works the same on every file system (NFS,
//! bind mounts, editors that replace the file by rename), and one `stat` per second costs nothing.
//! The file is read and hashed only when its `stat` changed, on a background thread: a carrier's
//! rules (6 000 routes x 30 prefixes, 4.7 MB) took a runtime thread for milliseconds every second
//! when the watcher hashed them there on each poll.

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

/// What `stat` says of the file. The content is read again only when one of these moved (a
/// rename onto the path changes the inode, a write in place the size or the times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    mtime: Option<SystemTime>,
    ctime: (i64, i64),
    len: u64,
    dev: u64,
    ino: u64,
}

fn stat(path: &std::path::Path) -> Option<Stat> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stat {
        mtime: m.modified().ok(),
        ctime: (m.ctime(), m.ctime_nsec()),
        len: m.len(),
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// What the watcher saw of the file: its stat (taken before the read) and content hash.
type Seen = (Option<Stat>, Option<String>);

/// File times have a coarse clock (a kernel tick): two writes within one tick can leave the same
/// stat. A content read this long after the file's mtime cannot have missed a write of that tick.
const RACY: Duration = Duration::from_secs(1);

/// Whether the file is the one whose content was read at `read_at` with stat `then`: same stat,
/// and read at least [`RACY`] after its last modification (else it is read again, like git's
/// "racily clean" index entries).
fn unchanged(now: Option<Stat>, then: Option<(Stat, SystemTime)>) -> bool {
    match (now, then) {
        (Some(now), Some((then, read_at))) => {
            now == then
                && now
                    .mtime
                    .and_then(|m| read_at.duration_since(m).ok())
                    .is_some_and(|age| age >= RACY)
        }
        _ => false,
    }
}

/// Stats, reads and hashes the file on a background thread.
async fn look(reloader: &Reloader, tasks: &Tasks) -> Seen {
    let path = reloader.path().to_path_buf();
    tasks
        .spawn_blocking(move || (stat(&path), file_hash(&path)))
        .await
        .unwrap_or((None, None))
}

/// Watches the rules file and reloads it when its content changed and then stayed the same for
/// `settings.stable`:
/// 1. every `poll`, stat the file; the same stat as when the content was last read: nothing to do;
/// 2. otherwise read and hash it; content equal to what was last tried (loaded or refused), or
///    unreadable (mid-rename): nothing to do;
/// 3. otherwise look again every `stable / 5` until stat and hash have not moved for `stable`;
///    then reload once. A refused file is not retried until its content changes again.
///
/// Runs on `tasks` until it is cancelled.
pub fn watch_file(reloader: Reloader, settings: WatchSettings, tasks: &Tasks) {
    let t = tasks.clone();
    tasks.spawn(async move {
        let step = (settings.stable / 5).max(Duration::from_millis(10));
        // The stat of the file, and when, at the last read that found its content already tried.
        let mut checked: Option<(Stat, SystemTime)> = None;
        loop {
            tokio::time::sleep(settings.poll).await;
            if unchanged(stat(reloader.path()), checked) {
                continue;
            }
            let read_at = SystemTime::now();
            let mut seen = look(&reloader, &t).await;
            if seen.1.is_none() {
                continue;
            }
            if seen.1 == reloader.last_tried() {
                checked = seen.0.map(|s| (s, read_at));
                continue;
            }
            debug!(path = %reloader.path().display(), "rules file changed; waiting for it to settle");
            let mut stable_since = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(step).await;
                let now = look(&reloader, &t).await;
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
            // The next poll reads the file again, and finds it tried unless it changed since.
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_is_read_again_unless_the_stat_is_the_same_and_was_read_well_after_its_write() {
        let dir = std::env::temp_dir().join(format!("sos-watch-stat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        let first = stat(&path).expect("the file is there");
        assert_eq!(stat(&path), Some(first), "nothing changed");
        let written = first.mtime.unwrap();
        let later = written + RACY;
        assert!(unchanged(Some(first), Some((first, later))));
        assert!(
            !unchanged(Some(first), Some((first, later - Duration::from_millis(1)))),
            "read within a tick or so of its write: a second write may share its times"
        );
        assert!(!unchanged(Some(first), None), "never read");
        assert!(!unchanged(None, Some((first, later))), "gone (mid-rename)");
        // Another file renamed onto the path (as editors save): another inode, read again.
        let other = dir.join("rules.toml.new");
        std::fs::write(&other, "a = 1\n").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let renamed = stat(&path).unwrap();
        assert_ne!(renamed.ino, first.ino, "a rename brings another inode");
        assert!(!unchanged(Some(renamed), Some((first, later))));
        // A longer file written in place: another length, read again.
        std::fs::write(&path, "a = 10\n").unwrap();
        assert!(!unchanged(stat(&path), Some((renamed, later))));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(stat(&path), None, "a missing file has no stat");
        let _ = std::fs::remove_dir(&dir);
    }
}
