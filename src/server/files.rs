//! Files the API reads and writes, confined to their folders: workflow names are single YAML
//! file names in the workflows folder; image names are relative paths inside the output folder
//! that resolve (symlinks followed) to a file still inside it.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Why a name was refused or a file could not be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    /// The name is not allowed; the message says why.
    #[error("{0}")]
    BadName(String),
    /// Nothing by that name.
    #[error("{0} not found")]
    NotFound(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
}

/// The longest workflow file name accepted.
const MAX_NAME_CHARS: usize = 128;

/// The path of workflow `name` in `folder`: a plain file name ending in `.yaml` or `.yml`,
/// made of letters, digits, `_`, `-` and `.`, not starting with a dot.
///
/// # Errors
/// [`FileError::BadName`] naming what is wrong.
pub fn workflow_path(folder: &Path, name: &str) -> Result<PathBuf, FileError> {
    let bad = |why: &str| Err(FileError::BadName(format!("workflow name \"{name}\": {why}")));
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return bad(&format!("needs 1 to {MAX_NAME_CHARS} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return bad(&format!("may hold letters, digits, '_', '-' and '.', not {c:?}"));
    }
    if name.starts_with('.') {
        return bad("cannot start with '.'");
    }
    if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
        return bad("must end in .yaml or .yml");
    }
    Ok(folder.join(name))
}

/// The workflow files in `folder`, sorted.
///
/// # Errors
/// [`FileError::Io`] when the folder cannot be read.
pub fn list_workflows(folder: &Path) -> Result<Vec<String>, FileError> {
    let entries = std::fs::read_dir(folder).map_err(|e| FileError::Io(format!("{}: {e}", folder.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| workflow_path(folder, name).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees half a file.
///
/// # Errors
/// [`FileError::Io`] naming the file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let failed = |e: std::io::Error| FileError::Io(format!("cannot write {}: {e}", path.display()));
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(folder).map_err(failed)?;
    temporary.write_all(bytes).map_err(failed)?;
    temporary.as_file().sync_all().map_err(failed)?;
    temporary.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

/// The file of image `name` (e.g. `sdxl/txt2img_00001.png`) inside `output_dir`.
///
/// # Errors
/// [`FileError::BadName`] for absolute names, `..`, or a path that leaves the folder through a
/// symlink; [`FileError::NotFound`] when there is no such file.
pub fn image_path(output_dir: &Path, name: &str) -> Result<PathBuf, FileError> {
    let relative = Path::new(name);
    if name.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(FileError::BadName(format!(
            "image name \"{name}\": must be a relative path inside the output folder, without '..'"
        )));
    }
    let root = output_dir
        .canonicalize()
        .map_err(|_| FileError::NotFound(format!("image \"{name}\"")))?;
    let resolved = root
        .join(relative)
        .canonicalize()
        .map_err(|_| FileError::NotFound(format!("image \"{name}\"")))?;
    if !resolved.starts_with(&root) {
        return Err(FileError::BadName(format!(
            "image name \"{name}\": resolves outside the output folder"
        )));
    }
    if !resolved.is_file() {
        return Err(FileError::NotFound(format!("image \"{name}\"")));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_names_stay_in_their_folder() {
        let folder = Path::new("workflows");
        assert_eq!(workflow_path(folder, "a-b_c.yaml").unwrap(), folder.join("a-b_c.yaml"));
        for bad in [
            "../x.yaml",
            "x/y.yaml",
            ".hidden.yaml",
            "x.txt",
            "",
            "/etc/passwd.yaml",
            "a b.yaml",
        ] {
            assert!(
                matches!(workflow_path(folder, bad), Err(FileError::BadName(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn image_names_cannot_leave_the_output_folder() {
        let root = tempfile::tempdir().unwrap();
        let output = root.path().join("output");
        std::fs::create_dir_all(output.join("sdxl")).unwrap();
        std::fs::write(output.join("sdxl/a.png"), b"png").unwrap();
        std::fs::write(root.path().join("secret.png"), b"secret").unwrap();
        assert!(image_path(&output, "sdxl/a.png").is_ok());
        for bad in ["../secret.png", "/etc/passwd", "sdxl/../../secret.png", ""] {
            assert!(
                matches!(image_path(&output, bad), Err(FileError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            image_path(&output, "sdxl/none.png"),
            Err(FileError::NotFound(_))
        ));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.path().join("secret.png"), output.join("link.png")).unwrap();
            assert!(matches!(image_path(&output, "link.png"), Err(FileError::BadName(_))));
        }
    }
}
