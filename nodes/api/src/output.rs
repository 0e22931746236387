//! Output files: numbered names under the output folder, each claimed atomically and written
//! whole.
//!
//! Follows ComfyUI's `filename_prefix` convention: a prefix may name a sub-folder
//! (`portraits/face`), and files are numbered `face_00001.png`, `face_00002.png`, ... A prefix
//! can never point outside the output folder. Saves race each other (parallel branches, `--jobs`,
//! the server's jobs, several processes sharing one folder), so a file is first written whole
//! under a temporary name of its own and then linked to the first free number in one step that
//! fails, rather than replaces, when another save took that number first.

use crate::{NodeError, Params};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The largest counter tried before giving up on finding a free file name.
const MAX_COUNTER: u32 = 99_999;

/// The `filename_prefix` param every saving node declares (`.params::<FilenamePrefix>()`, or
/// `#[param(flatten)]` among other params), passed to [`save_output`]. Validation refuses a
/// literal prefix that leaves the output folder, as the save would.
#[derive(Params)]
pub struct FilenamePrefix {
    /// File name before the number; may start with sub-folders inside the output folder.
    #[param(default = "swapgraph", rule = check_prefix)]
    pub filename_prefix: Arc<str>,
}

/// Checks that `prefix` is a relative name that stays inside the output folder.
///
/// # Errors
/// What is wrong with the prefix, for a message that names the param.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let escapes = Path::new(prefix)
        .components()
        .any(|part| !matches!(part, Component::Normal(_)));
    if prefix.trim().is_empty() || escapes || prefix.ends_with('/') {
        return Err(format!(
            "\"{prefix}\" must be a relative name inside the output folder (sub-folders allowed, no \"..\", \
             no leading \"/\")"
        ));
    }
    Ok(())
}

/// Saves `bytes` as the first free `{prefix}_{NNNNN}.{extension}` in `output_dir`, creating the
/// sub-folders the prefix names, and returns the path. The file appears whole under its number
/// or not at all, and no two saves ever share a number, whichever thread or process made them.
///
/// # Errors
/// [`NodeError::Message`] when the prefix leaves the folder (see [`check_prefix`]) or every
/// number is taken; [`NodeError::Io`] naming the folder or file that could not be created,
/// written or linked.
pub fn save_output(output_dir: &Path, prefix: &str, extension: &str, bytes: &[u8]) -> Result<PathBuf, NodeError> {
    check_prefix(prefix).map_err(|problem| NodeError::msg(format!("filename prefix {problem}")))?;
    let target = output_dir.join(prefix);
    let folder = target.parent().unwrap_or(output_dir).to_path_buf();
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| NodeError::Io { action, path, source }
    };
    std::fs::create_dir_all(&folder).map_err(io("cannot create folder", &folder))?;
    let stem = target
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{stem}_"))
        .suffix(".partial")
        .tempfile_in(&folder)
        .map_err(io("cannot create a file in", &folder))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(io("cannot write", file.path()))?;
    for number in 1..=MAX_COUNTER {
        let candidate = folder.join(format!("{stem}_{number:05}.{extension}"));
        if candidate.exists() {
            continue;
        }
        // Fails with `AlreadyExists` when another save claimed the name since the check.
        match file.persist_noclobber(&candidate) {
            Ok(_) => return Ok(candidate),
            Err(refused) if refused.error.kind() == std::io::ErrorKind::AlreadyExists => file = refused.file,
            Err(failed) => return Err(io("cannot move into place", &candidate)(failed.error)),
        }
    }
    Err(NodeError::msg(format!(
        "no free file name left for prefix \"{prefix}\" in {}",
        folder.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("swapgraph-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn numbers_files_and_creates_sub_folders() {
        let dir = scratch("numbers");
        let first = save_output(&dir, "sub/face", "txt", b"one").unwrap();
        assert_eq!(first, dir.join("sub/face_00001.txt"));
        let second = save_output(&dir, "sub/face", "txt", b"two").unwrap();
        assert_eq!(second, dir.join("sub/face_00002.txt"));
        assert_eq!(std::fs::read(&first).unwrap(), b"one");
        assert_eq!(std::fs::read(&second).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.join("sub")).unwrap().count(),
            2,
            "no temporary left behind"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_saves_each_get_their_own_name() {
        let dir = scratch("concurrent");
        let saves = 64;
        let saved: Vec<PathBuf> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..saves)
                .map(|i| {
                    let dir = &dir;
                    scope.spawn(move || save_output(dir, "race/out", "txt", format!("{i}").as_bytes()).unwrap())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut contents: Vec<usize> = saved
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap().parse().unwrap())
            .collect();
        contents.sort_unstable();
        assert_eq!(
            contents,
            (0..saves).collect::<Vec<_>>(),
            "every save kept under its own name"
        );
        let names = std::fs::read_dir(dir.join("race")).unwrap().count();
        assert_eq!(names, saves, "one file per save, no temporaries");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_prefixes_that_escape() {
        let dir = scratch("escape");
        for bad in ["../x", "/etc/x", "a/../../x", "", "sub/", "./x"] {
            let error = save_output(&dir, bad, "txt", b"").unwrap_err().to_string();
            assert!(error.starts_with("filename prefix"), "{bad:?}: {error}");
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(!dir.exists(), "nothing created for a refused prefix");
    }
}
