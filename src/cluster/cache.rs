//! The local cache of the last rules a node ran from etcd, so that a node started while etcd is
//! down still starts (on what it last ran). Written after every successful swap: to a temporary
//! file beside it, synced, then renamed over the old one, so a crash leaves the old or the new
//! file, never half of one.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// The etcd version these rules were.
    pub version: u64,
    pub hash: String,
    pub text: String,
    pub saved_unix_ms: u64,
}

/// Writes the cache (blocking).
pub fn save(path: &Path, c: &Cached) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(c).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Reads the cache: Ok(None) when there is none, Err when it exists but cannot be used.
pub fn load(path: &Path) -> Result<Option<Cached>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("rules cache {}: unreadable: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("rules cache {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sosrouter-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_saved_cache_loads_back_and_replaces_the_old_one() {
        let d = dir("roundtrip");
        let p = d.join("rules.cache.json");
        assert_eq!(load(&p), Ok(None));
        let mut c = Cached {
            version: 3,
            hash: "abc".into(),
            text: "[[targets]]\n".into(),
            saved_unix_ms: 1,
        };
        save(&p, &c).unwrap();
        c.version = 4;
        save(&p, &c).unwrap();
        assert_eq!(load(&p), Ok(Some(c)));
        assert!(!d.join("rules.cache.json.tmp").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_cache_is_an_error_not_empty_rules() {
        let d = dir("damaged");
        let p = d.join("c.json");
        std::fs::write(&p, b"{\"version\": 3, \"te").unwrap();
        assert!(load(&p).unwrap_err().contains("unreadable"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
