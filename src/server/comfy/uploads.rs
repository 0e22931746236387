//! `POST /upload/image` and `GET /view`: files in the input and output folders as ComfyUI's
//! clients name them (a file name, a subfolder and a folder type), confined to those folders.

use crate::server::files::{self, FileError};
use futures_util::TryStreamExt;
use std::path::{Path, PathBuf};

/// One part of a multipart form.
pub struct FormPart {
    /// The field's name.
    pub name: String,
    /// The file name a file part carries.
    pub filename: Option<String>,
    /// Its content.
    pub bytes: Vec<u8>,
}

/// Every part of `form`, read whole (the form's length is limited by its filter).
///
/// # Errors
/// A malformed form or a broken connection.
pub async fn read_form(form: warp::multipart::FormData) -> Result<Vec<FormPart>, warp::Error> {
    form.and_then(|part| async move {
        let name = part.name().to_string();
        let filename = part.filename().map(str::to_string);
        let bytes = part
            .stream()
            .try_fold(Vec::new(), |mut bytes, mut chunk| async move {
                use bytes::Buf;
                bytes.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
                Ok(bytes)
            })
            .await?;
        Ok(FormPart { name, filename, bytes })
    })
    .try_collect()
    .await
}

/// The folder a ComfyUI folder type names.
pub fn folder<'a>(kind: &str, inputs: &'a Path, outputs: &'a Path) -> Result<&'a Path, FileError> {
    match kind {
        "" | "output" => Ok(outputs),
        "input" => Ok(inputs),
        other => Err(FileError::BadName(format!(
            "folder type \"{other}\" is not one of input, output (swapgraph keeps no temp files)"
        ))),
    }
}

/// `subfolder/filename` as one relative name, checked: a plain file name, a subfolder of plain
/// names.
pub fn relative_name(subfolder: &str, filename: &str) -> Result<String, FileError> {
    if filename.is_empty() || filename.contains(['/', '\\']) || filename.starts_with('.') {
        return Err(FileError::BadName(format!(
            "\"{filename}\" is not a plain file name (no folders, not starting with a dot)"
        )));
    }
    let parts: Vec<&str> = subfolder.split('/').filter(|part| !part.is_empty()).collect();
    if let Some(bad) = parts.iter().find(|part| part.starts_with('.') || part.contains('\\')) {
        return Err(FileError::BadName(format!(
            "subfolder \"{subfolder}\" has \"{bad}\", which cannot name a folder inside it"
        )));
    }
    Ok(parts.into_iter().chain([filename]).collect::<Vec<_>>().join("/"))
}

/// Where an upload named `name` goes in `folder`: that name, or when a file has it and
/// `overwrite` is off, the first free `stem (n).ext`, as ComfyUI renames. Returns the path and
/// the file name used.
pub fn upload_target(folder: &Path, name: &str, overwrite: bool) -> (PathBuf, String) {
    let path = folder.join(name);
    let (parent, file) = match name.rsplit_once('/') {
        Some((parent, file)) => (folder.join(parent), file.to_string()),
        None => (folder.to_path_buf(), name.to_string()),
    };
    if overwrite || !path.exists() {
        return (path, file);
    }
    let (stem, extension) = match file.rsplit_once('.') {
        Some((stem, extension)) => (stem.to_string(), format!(".{extension}")),
        None => (file.clone(), String::new()),
    };
    (1..)
        .map(|n| format!("{stem} ({n}){extension}"))
        .map(|candidate| (parent.join(&candidate), candidate))
        .find(|(path, _)| !path.exists())
        .unwrap_or((path, file))
}

/// Writes an uploaded file, making its subfolder.
///
/// # Errors
/// [`FileError::Io`] naming the file.
pub fn save(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| FileError::Io(format!("cannot make folder {}: {e}", parent.display())))?;
    }
    files::write_atomically(path, bytes)
}
