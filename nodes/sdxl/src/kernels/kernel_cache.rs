//! Compiled kernels kept on disk between runs, so that a run pays the compilation only the
//! first time a card, driver and build meet.

use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A folder of compiled kernels, a file per module and key.
pub struct KernelCache {
    dir: PathBuf,
}

/// Where one module's compiled kernels are kept.
pub struct KernelFile {
    path: PathBuf,
}

impl KernelCache {
    /// The cache in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The user's cache (see [`user_cache_dir`]).
    #[cfg(feature = "cuda")]
    pub fn in_user_cache() -> Option<Self> {
        user_cache_dir(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")).map(Self::at)
    }

    /// The file of `module` compiled from what `key` names (the source, the options, the
    /// compiler's and the driver's versions): its name changes whenever any part of the key
    /// does, so a changed source or toolkit is never served an old build.
    pub fn file(&self, module: &str, key: &[&str]) -> KernelFile {
        let mut hash = Sha256::new();
        for part in key {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        let hex: String = digest[..8].iter().map(|byte| format!("{byte:02x}")).collect();
        KernelFile {
            path: self.dir.join(format!("{module}-{hex}.ptx")),
        }
    }
}

/// `$XDG_CACHE_HOME/swapgraph/kernels` (`xdg_cache_home`), else `~/.cache/swapgraph/kernels`
/// (`home`); none when neither is set.
fn user_cache_dir(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let base = xdg_cache_home
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|home| Path::new(&home).join(".cache")))?;
    Some(base.join("swapgraph").join("kernels"))
}

impl KernelFile {
    /// The kernels kept in the file, if it is there (a file is only ever renamed into place
    /// whole: see [`KernelFile::write`]).
    pub fn read(&self) -> Option<String> {
        let ptx = std::fs::read_to_string(&self.path).ok()?;
        tracing::debug!("kernels read from {}", self.path.display());
        (!ptx.is_empty()).then_some(ptx)
    }

    /// Keeps `ptx` in the file, written beside it first and renamed into place so that a run
    /// started meanwhile never reads half a file. A cache that cannot be written costs only the
    /// next run's compilation, so it is reported and otherwise ignored.
    pub fn write(&self, ptx: &str) {
        let written = (|| {
            let dir = self.path.parent().expect("a cache file sits in the cache folder");
            std::fs::create_dir_all(dir)?;
            let name = self.path.file_name().unwrap_or_default().to_string_lossy();
            let partial = dir.join(format!(".{}.{name}", std::process::id()));
            std::fs::write(&partial, ptx)?;
            std::fs::rename(&partial, &self.path)
        })();
        if let Err(e) = written {
            tracing::warn!("the compiled kernels could not be kept in {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_kept_are_read_back_under_the_same_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::at(dir.path().join("kernels"));
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
            Some(PathBuf::from("/x/swapgraph/kernels"))
        );
        assert_eq!(
            user_cache_dir(os(""), os("/home/u")),
            Some(PathBuf::from("/home/u/.cache/swapgraph/kernels")),
            "an empty XDG_CACHE_HOME is unset"
        );
        assert_eq!(user_cache_dir(None, None), None);
    }

    #[test]
    fn a_cache_that_cannot_be_written_costs_nothing_but_the_next_compilation() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("a file, not a folder");
        std::fs::write(&blocked, "").unwrap();
        let file = KernelCache::at(&blocked).file("m", &["source"]);
        file.write("ptx");
        assert_eq!(file.read(), None);
    }
}
