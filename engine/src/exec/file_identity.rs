//! What a node reads from disk, as part of its cache key: ComfyUI's `IS_CHANGED`, declared
//! rather than coded per node.
//!
//! A param declared with [`ParamSpec::reads_file`] names a file or folder; a node's cached result
//! stays valid only while what it names is unchanged. Small files are identified by their bytes
//! (an image replaced within the file system's timestamp resolution is still seen); large ones,
//! such as checkpoints, by size and modification time, which costs no reading. A folder (a
//! diffusers model, face models) is identified by the names and identities of the files in it.

use super::schedule::Schedule;
use crate::plan::Plan;
use std::hash::{Hash, Hasher};
use std::path::Path;
use swapgraph_node_api::{FileRoots, ParamSpec, Value};

/// Files up to this size are identified by their contents.
const HASHED_CONTENT_BYTES: u64 = 4 << 20;
/// How deep into a folder files are looked at.
const FOLDER_DEPTH: usize = 3;
/// How many entries of a folder are looked at, so a huge folder costs bounded time.
const FOLDER_ENTRIES: usize = 4096;

/// The identity of every file `plan`'s step `index` reads, through literal or linked params;
/// its producers must be done.
pub fn files_read(plan: &Plan, index: usize, schedule: &Schedule, files: &FileRoots) -> u64 {
    let step = &plan.steps[index];
    let mut hasher = std::hash::DefaultHasher::new();
    for param in step.node_type.descriptor().params.iter().filter(|p| p.reads.is_some()) {
        let literal = step
            .literals
            .iter()
            .find(|(name, _)| *name == param.name)
            .map(|(_, v)| v);
        let linked = || {
            let input = step.inputs.iter().find(|input| input.arg == param.name)?;
            schedule.output(input.step, input.output)
        };
        if let Some(value) = literal.or_else(linked) {
            hash_file_param(param, value, files, &mut hasher);
        }
    }
    hasher.finish()
}

/// Adds to `hasher` the identity of the file or folder that `value` of `param` names, when the
/// param declares one. A name that cannot be resolved adds the reason: the node will fail on it,
/// and a later fix changes the key.
fn hash_file_param(param: &ParamSpec, value: &Value, files: &FileRoots, hasher: &mut impl Hasher) {
    let (Some(folder), Value::String(name)) = (param.reads, value) else {
        return;
    };
    match files.locate(folder, param.name, name) {
        Ok(Some(path)) => hash_path(&path, FOLDER_DEPTH, hasher),
        Ok(None) => {}
        Err(error) => error.to_string().hash(hasher),
    }
}

fn hash_path(path: &Path, depth: usize, hasher: &mut impl Hasher) {
    let Ok(metadata) = std::fs::metadata(path) else {
        "missing".hash(hasher);
        return;
    };
    if metadata.is_dir() {
        "folder".hash(hasher);
        if depth == 0 {
            return;
        }
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map(|entries| entries.filter_map(Result::ok).take(FOLDER_ENTRIES).collect())
            .unwrap_or_default();
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            entry.file_name().hash(hasher);
            hash_path(&entry.path(), depth - 1, hasher);
        }
        return;
    }
    metadata.len().hash(hasher);
    let contents = (metadata.len() <= HASHED_CONTENT_BYTES)
        .then(|| std::fs::read(path).ok())
        .flatten();
    match contents {
        Some(bytes) => bytes.hash(hasher),
        None => metadata.modified().ok().hash(hasher),
    }
}

/// The identity of a file alone, for tests.
#[cfg(test)]
fn identity(path: &Path) -> u64 {
    use std::hash::DefaultHasher;
    let mut hasher = DefaultHasher::new();
    hash_path(path, FOLDER_DEPTH, &mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_with_contents_size_and_folder_entries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("face.png");
        std::fs::write(&file, b"one").unwrap();
        let first = identity(&file);
        assert_eq!(identity(&file), first, "stable while unchanged");
        std::fs::write(&file, b"two").unwrap();
        assert_ne!(identity(&file), first, "same size and maybe same second, other bytes");
        let folder = identity(dir.path());
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        assert_ne!(identity(dir.path()), folder, "a file added to a folder");
        assert_ne!(identity(&dir.path().join("gone")), identity(&file));
    }
}
