//! Output files: numbered names under the output folder, written atomically.
//!
//! Follows ComfyUI's `filename_prefix` convention: a prefix may name a sub-folder
//! (`portraits/face`), and files are numbered `face_00001.png`, `face_00002.png`, ... A prefix
//! can never point outside the output folder, and a file appears whole or not at all.

use crate::{NodeError, ParamKind, ParamSpec};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// The largest counter tried before giving up on finding a free file name.
const MAX_COUNTER: u32 = 99_999;

/// The `filename_prefix` param every saving node declares, read by [`next_output_path`].
pub fn filename_prefix_param() -> ParamSpec {
    ParamSpec::new(
        "filename_prefix",
        ParamKind::String {
            default: Some("swapgraph"),
            multiline: false,
        },
        "File name before the number; may start with sub-folders inside the output folder.",
    )
}

/// The next free `{prefix}_{NNNNN}.{extension}` path in `output_dir`, creating sub-folders the
/// prefix names.
///
/// # Errors
/// [`NodeError::Message`] when the prefix is empty, absolute or climbs out of the folder with
/// `..`; [`NodeError::Io`] when a sub-folder cannot be created; a message when all numbers are
/// taken.
pub fn next_output_path(output_dir: &Path, prefix: &str, extension: &str) -> Result<PathBuf, NodeError> {
    let relative = Path::new(prefix);
    let escapes = relative.components().any(|part| !matches!(part, Component::Normal(_)));
    if prefix.trim().is_empty() || escapes || prefix.ends_with('/') {
        return Err(NodeError::msg(format!(
            "filename prefix \"{prefix}\" must be a relative name inside the output folder \
             (sub-folders allowed, no \"..\", no leading \"/\")"
        )));
    }
    let target = output_dir.join(relative);
    let folder = target.parent().unwrap_or(output_dir).to_path_buf();
    std::fs::create_dir_all(&folder).map_err(|source| NodeError::Io {
        action: "cannot create folder",
        path: folder.clone(),
        source,
    })?;
    let stem = target
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    (1..=MAX_COUNTER)
        .map(|n| folder.join(format!("{stem}_{n:05}.{extension}")))
        .find(|candidate| !candidate.exists())
        .ok_or_else(|| NodeError::msg(format!("no free file name left for prefix \"{prefix}\"")))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a crash
/// never leaves a partial file under the final name.
///
/// # Errors
/// [`NodeError::Io`] naming the file when writing or renaming fails.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let file_name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.partial"));
    let io = |action, source| NodeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::create(&temporary).map_err(|e| io("cannot create", e))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(io("cannot write", e));
    }
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        io("cannot rename into place", e)
    })
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
        let first = next_output_path(&dir, "sub/face", "txt").unwrap();
        assert_eq!(first, dir.join("sub/face_00001.txt"));
        write_atomically(&first, b"one").unwrap();
        assert_eq!(
            next_output_path(&dir, "sub/face", "txt").unwrap(),
            dir.join("sub/face_00002.txt")
        );
        assert_eq!(std::fs::read(&first).unwrap(), b"one");
        assert_eq!(
            std::fs::read_dir(dir.join("sub")).unwrap().count(),
            1,
            "no temporary left behind"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_prefixes_that_escape() {
        let dir = scratch("escape");
        for bad in ["../x", "/etc/x", "a/../../x", "", "sub/", "./x"] {
            assert!(next_output_path(&dir, bad, "txt").is_err(), "{bad:?}");
        }
    }
}
