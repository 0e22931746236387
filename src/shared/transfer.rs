//! Files travelling through the queue's object stores: a job's input files from the server that
//! took it to the worker that runs it (named by content, so each is stored once), and its
//! outputs back (named by job, so a job run twice stores one set).

use super::{InputFile, Queue};
use crate::plan::Plan;
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};
use swapgraph_node_api::{FileFolder, FileRoots};
use tokio::io::AsyncReadExt;

impl Queue {
    /// Stores the input files `plan` names (in `files`' input folder) and lists them. A name
    /// that is not a file there is left to the worker, whose run reports it as `run` would.
    ///
    /// # Errors
    /// A name leading out of the input folder, or the store refusing a file.
    pub(super) async fn store_inputs(&self, plan: &Plan, files: &FileRoots) -> Result<Vec<InputFile>, String> {
        let mut stored = Vec::new();
        for (param, name) in plan.files_named(FileFolder::Inputs) {
            let path = files.input(param, &name).map_err(|e| e.to_string())?;
            let Ok(bytes) = tokio::fs::read(&path).await else {
                continue;
            };
            let sha256 = hex(&Sha256::digest(&bytes));
            if self.inputs.info(&sha256).await.is_err() {
                self.inputs
                    .put(sha256.as_str(), &mut bytes.as_slice())
                    .await
                    .map_err(|e| format!("{param}: storing {name} for the workers: {e}"))?;
            }
            stored.push(InputFile {
                param: param.to_string(),
                name,
                sha256,
            });
        }
        Ok(stored)
    }

    /// Writes `inputs` under `files`' input folder by their names, each checked against its
    /// SHA-256.
    ///
    /// # Errors
    /// A name leading out of the folder, a file missing from the store, or one whose bytes
    /// differ from its hash.
    pub(super) async fn fetch_inputs(&self, inputs: &[InputFile], files: &FileRoots) -> Result<(), String> {
        for input in inputs {
            let path = files.input(&input.param, &input.name).map_err(|e| e.to_string())?;
            let bytes = read_object(&self.inputs, &input.sha256)
                .await
                .map_err(|e| format!("{}: fetching {}: {e}", input.param, input.name))?;
            if hex(&Sha256::digest(&bytes)) != input.sha256 {
                return Err(format!(
                    "{}: {} arrived changed (its SHA-256 differs)",
                    input.param, input.name
                ));
            }
            if let Some(folder) = path.parent() {
                tokio::fs::create_dir_all(folder).await.map_err(|e| e.to_string())?;
            }
            tokio::fs::write(&path, bytes)
                .await
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Stores the output file at `relative` under `folder` as job `id`'s, and returns its name
    /// in the store (`<id>/<relative>`).
    ///
    /// # Errors
    /// The file unreadable or the store refusing it.
    pub(super) async fn store_output(&self, id: u64, folder: &Path, relative: &str) -> Result<String, String> {
        let bytes = tokio::fs::read(folder.join(relative))
            .await
            .map_err(|e| format!("reading the output {relative}: {e}"))?;
        let name = format!("{id}/{relative}");
        self.outputs
            .put(name.as_str(), &mut bytes.as_slice())
            .await
            .map_err(|e| format!("storing the output {name}: {e}"))?;
        Ok(name)
    }

    /// Copies the stored output `name` into `output_dir` under the same name, unless it is
    /// there already.
    ///
    /// # Errors
    /// A name that would lead out of the folder, or the store or the disk failing.
    pub(super) async fn fetch_output(&self, name: &str, output_dir: &Path) -> Result<PathBuf, String> {
        let relative = Path::new(name);
        if !relative.components().all(|part| matches!(part, Component::Normal(_))) {
            return Err(format!("the output name {name} leads out of the output folder"));
        }
        let path = output_dir.join(relative);
        if path.is_file() {
            return Ok(path);
        }
        let bytes = read_object(&self.outputs, name).await?;
        if let Some(folder) = path.parent() {
            tokio::fs::create_dir_all(folder).await.map_err(|e| e.to_string())?;
        }
        // Written beside it and renamed, so a reader never sees half an image.
        let partial = path.with_extension("partial");
        tokio::fs::write(&partial, bytes).await.map_err(|e| e.to_string())?;
        tokio::fs::rename(&partial, &path).await.map_err(|e| e.to_string())?;
        Ok(path)
    }
}

/// The bytes of object `name`.
async fn read_object(store: &async_nats::jetstream::object_store::ObjectStore, name: &str) -> Result<Vec<u8>, String> {
    let mut object = store.get(name).await.map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    object.read_to_end(&mut bytes).await.map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
