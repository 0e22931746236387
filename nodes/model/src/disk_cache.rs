//! One-off results kept on disk between runs (compiled kernels, device-memory measurements), so
//! that a run pays for them only the first time a card, driver and build meet.

use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A folder of kept results, a file per name and key.
pub struct DiskCache {
    dir: PathBuf,
}

/// Where one result is kept.
pub struct CacheFile {
    path: PathBuf,
}

impl DiskCache {
    /// The cache in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The user's cache of `kind` (see [`user_cache_dir`]).
    pub fn in_user_cache(kind: &str) -> Option<Self> {
        user_cache_dir(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")).map(|dir| Self::at(dir.join(kind)))
    }

    /// The file of `name` made from what `key` names (for kernels: the source, the options, the
    /// compiler's and the driver's versions): its name changes whenever any part of the key
    /// does, so a changed source or toolkit is never served an old result.
    pub fn file(&self, name: &str, key: &[&str]) -> CacheFile {
        let mut hash = Sha256::new();
        for part in key {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        let hex: String = digest[..8].iter().map(|byte| format!("{byte:02x}")).collect();
        CacheFile {
            path: self.dir.join(format!("{name}-{hex}")),
        }
    }
}

/// `$XDG_CACHE_HOME/swapgraph` (`xdg_cache_home`), else `~/.cache/swapgraph` (`home`); none
/// when neither is set.
fn user_cache_dir(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let base = xdg_cache_home
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|home| Path::new(&home).join(".cache")))?;
    Some(base.join("swapgraph"))
}

impl CacheFile {
    /// What the file keeps, if it is there (a file is only ever renamed into place whole: see
    /// [`CacheFile::write`]).
    pub fn read(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        tracing::debug!("read {}", self.path.display());
        (!text.is_empty()).then_some(text)
    }

    /// Keeps `text` in the file, written beside it first and renamed into place so that a run
    /// started meanwhile never reads half a file. A cache that cannot be written costs only the
    /// next run's one-off work again, so it is reported and otherwise ignored.
    pub fn write(&self, text: &str) {
        let written = (|| {
            let dir = self.path.parent().expect("a cache file sits in the cache folder");
            std::fs::create_dir_all(dir)?;
            let name = self.path.file_name().unwrap_or_default().to_string_lossy();
            let partial = dir.join(format!(".{}.{name}", std::process::id()));
            std::fs::write(&partial, text)?;
            std::fs::rename(&partial, &self.path)
        })();
        if let Err(e) = written {
            tracing::warn!("{} could not be kept: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_kept_are_read_back_under_the_same_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::at(dir.path().join("kernels"));
        let key = ["source", "--gpu-architecture=compute_90", "nvrtc 13.0", "driver 13000"];
        let file = cache.file("swapgraph-attention-sm90", &key);
        assert_eq!(file.read(), None, "nothing kept yet");
        file.write(".version 9.0\n");
        assert_eq!(
            cache.file("swapgraph-attention-sm90", &key).read().as_deref(),
            Some(".version 9.0\n")
        );
        for changed in 0..key.len() {
            let mut other = key;
            other[changed] = "something else";
            assert_eq!(
                cache.file("swapgraph-attention-sm90", &other).read(),
                None,
                "a change in key part {changed} is a different file"
            );
        }
        let files: Vec<_> = std::fs::read_dir(dir.path().join("kernels")).unwrap().collect();
        assert_eq!(files.len(), 1, "no partial file is left beside the kept one");
    }

    #[test]
    fn the_user_cache_is_xdg_s_else_the_home_folder_s() {
        let os = |text: &str| Some(OsString::from(text));
        assert_eq!(
            user_cache_dir(os("/x"), os("/home/u")),
            Some(PathBuf::from("/x/swapgraph"))
        );
        assert_eq!(
            user_cache_dir(os(""), os("/home/u")),
            Some(PathBuf::from("/home/u/.cache/swapgraph")),
            "an empty XDG_CACHE_HOME is unset"
        );
        assert_eq!(user_cache_dir(None, None), None);
    }

    #[test]
    fn a_cache_that_cannot_be_written_costs_nothing_but_the_next_runs_one_off_work() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("a file, not a folder");
        std::fs::write(&blocked, "").unwrap();
        let file = DiskCache::at(&blocked).file("m", &["source"]);
        file.write("ptx");
        assert_eq!(file.read(), None);
    }
}
