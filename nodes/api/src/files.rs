//! The folders a run reads models and inputs from and writes outputs to, and the confinement of
//! every file name a workflow gives to them.
//!
//! A workflow is a document people share, and the server runs workflows sent over the network.
//! Neither should be able to make swapgraph read or write files the user did not hand it, so
//! a loader never opens a name as given: it asks [`FileRoots`] for the file, which resolves the
//! name inside the right folder and refuses one that leads out of it.

use crate::{FileFolder, NodeError};
use std::path::{Component, Path, PathBuf};

/// Names starting with this are models built into swapgraph, not files.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// Where a run's files live: models (checkpoints, adapters, ControlNets, face models), inputs
/// (images, masks, presets) and outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRoots {
    /// The folder model names resolve in (`--models-dir`).
    pub models: PathBuf,
    /// The folder input names resolve in (`--input-dir`).
    pub inputs: PathBuf,
    /// The folder outputs are written to (`--output-dir`).
    pub outputs: PathBuf,
}

impl Default for FileRoots {
    /// Models and inputs relative to the working folder, outputs in `output/`.
    fn default() -> Self {
        Self {
            models: PathBuf::from("."),
            inputs: PathBuf::from("."),
            outputs: PathBuf::from("output"),
        }
    }
}

impl FileRoots {
    /// The model that `param` names: a built-in name as is, or the file or folder inside the
    /// models folder as a path string.
    ///
    /// # Errors
    /// A message naming the param when the name leads outside the models folder.
    pub fn model(&self, param: &str, name: &str) -> Result<String, NodeError> {
        if name.starts_with(BUILTIN_PREFIX) {
            return Ok(name.to_owned());
        }
        let path = self.model_path(param, name)?;
        path.into_os_string()
            .into_string()
            .map_err(|path| NodeError::msg(format!("{param}: the path {} is not UTF-8", Path::new(&path).display())))
    }

    /// The file or folder `param`'s value `name` names in the models folder: the name as it
    /// stands there, or else in the folder ComfyUI keeps that kind of model in (`checkpoints/`
    /// for `ckpt_name`, and so on), so a ComfyUI `models/` folder serves as the models folder.
    fn model_path(&self, param: &str, name: &str) -> Result<PathBuf, NodeError> {
        let folder = || Folder::models(&self.models);
        let relative = !Path::new(name).is_absolute();
        if relative && !self.models.join(name).exists() {
            let kinds = COMFYUI_FOLDERS.iter().filter(|(named_by, _)| *named_by == param);
            for sub in kinds.flat_map(|(_, subs)| subs.iter()) {
                if self.models.join(sub).join(name).exists() {
                    return confine(folder(), param, &format!("{sub}/{name}"));
                }
            }
        }
        confine(folder(), param, name)
    }

    /// The input file that `param` names, inside the input folder.
    ///
    /// # Errors
    /// A message naming the param when the name leads outside the input folder.
    pub fn input(&self, param: &str, name: &str) -> Result<PathBuf, NodeError> {
        confine(Folder::inputs(&self.inputs), param, name)
    }

    /// The file or folder that `param`'s value `name` names in `folder`, as the node reading it
    /// will resolve it; `None` when the name is no file (empty, or a built-in model).
    ///
    /// # Errors
    /// A message naming the param when the name leads outside the folder.
    pub fn locate(&self, folder: FileFolder, param: &str, name: &str) -> Result<Option<PathBuf>, NodeError> {
        if name.is_empty() || name.starts_with(BUILTIN_PREFIX) {
            return Ok(None);
        }
        match folder {
            FileFolder::Models => self.model_path(param, name).map(Some),
            FileFolder::Inputs => confine(Folder::inputs(&self.inputs), param, name).map(Some),
        }
    }
}

/// Where ComfyUI keeps each kind of model inside its `models/` folder, by the param that names
/// it there.
const COMFYUI_FOLDERS: [(&str, &[&str]); 9] = [
    ("ckpt_name", &["checkpoints"]),
    ("lora_name", &["loras"]),
    ("control_net_name", &["controlnet"]),
    ("instantid_file", &["instantid"]),
    ("unet_name", &["unet", "diffusion_models"]),
    ("vae_name", &["vae"]),
    ("clip_name1", &["clip", "text_encoders"]),
    ("clip_name2", &["clip", "text_encoders"]),
    ("face_models", &["insightface/models", "insightface"]),
];

/// A folder names resolve in, with what messages call it.
struct Folder<'a> {
    root: &'a Path,
    name: &'static str,
    flag: &'static str,
}

impl<'a> Folder<'a> {
    fn models(root: &'a Path) -> Self {
        Self {
            root,
            name: "models",
            flag: "--models-dir",
        }
    }

    fn inputs(root: &'a Path) -> Self {
        Self {
            root,
            name: "input",
            flag: "--input-dir",
        }
    }
}

/// `name` resolved inside `folder`'s root. A relative name is taken from `root`; an absolute name must
/// already lie in it. Names with `..` are refused outright, and an existing file is followed
/// through its symlinks and must still be inside `root`. A name that does not exist is returned
/// joined, for the loader to report as not found.
fn confine(folder: Folder, param: &str, name: &str) -> Result<PathBuf, NodeError> {
    let Folder {
        root,
        name: folder,
        flag,
    } = folder;
    let outside = |shown: &Path| {
        NodeError::msg(format!(
            "{param} \"{name}\" is outside the {folder} folder {}: give a path inside it, or start \
             swapgraph with {flag} set to the folder that holds the file",
            shown.display()
        ))
    };
    if name.trim().is_empty() {
        return Err(NodeError::msg(format!(
            "{param} is empty: give a file inside the {folder} folder"
        )));
    }
    let given = Path::new(name);
    if given.components().any(|part| part == Component::ParentDir) {
        return Err(outside(root));
    }
    let canonical_root = root.canonicalize().map_err(|e| {
        NodeError::msg(format!(
            "cannot open the {folder} folder {} ({flag}): {e}",
            root.display()
        ))
    })?;
    let candidate = if given.is_absolute() {
        given.to_path_buf()
    } else {
        canonical_root.join(given)
    };
    match candidate.canonicalize() {
        Ok(resolved) if resolved.starts_with(&canonical_root) => Ok(resolved),
        Ok(_) => Err(outside(&canonical_root)),
        Err(_) if candidate.starts_with(&canonical_root) || candidate.starts_with(root) => Ok(candidate),
        Err(_) => Err(outside(&canonical_root)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("swapgraph-files-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("models/sub")).unwrap();
            std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
            std::fs::write(dir.join("models/sub/a.safetensors"), b"").unwrap();
            std::fs::write(dir.join("elsewhere/secret"), b"").unwrap();
            Self(dir)
        }

        fn roots(&self) -> FileRoots {
            FileRoots {
                models: self.0.join("models"),
                inputs: self.0.join("models"),
                outputs: self.0.join("out"),
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn resolves_names_inside_the_folder() {
        let scratch = Scratch::new("inside");
        let roots = scratch.roots();
        let inside = scratch.0.join("models/sub/a.safetensors").canonicalize().unwrap();
        assert_eq!(roots.input("image", "sub/a.safetensors").unwrap(), inside);
        assert_eq!(roots.input("image", inside.to_str().unwrap()).unwrap(), inside);
        assert_eq!(
            roots.model("ckpt_name", "builtin:tiny-sdxl").unwrap(),
            "builtin:tiny-sdxl"
        );
        let missing = roots.input("image", "sub/missing.png").unwrap();
        assert!(missing.ends_with("models/sub/missing.png"), "{}", missing.display());
    }

    #[test]
    fn a_comfyui_models_folder_serves_each_kind_from_its_own_folder() {
        let scratch = Scratch::new("comfyui");
        let roots = scratch.roots();
        let models = scratch.0.join("models");
        for (folder, file) in [
            ("checkpoints", "sdxl.safetensors"),
            ("loras", "style.safetensors"),
            ("diffusion_models", "u.gguf"),
        ] {
            std::fs::create_dir_all(models.join(folder)).unwrap();
            std::fs::write(models.join(folder).join(file), b"").unwrap();
        }
        let found = |param: &str, name: &str| PathBuf::from(roots.model(param, name).unwrap());
        assert!(found("ckpt_name", "sdxl.safetensors").ends_with("checkpoints/sdxl.safetensors"));
        assert!(found("lora_name", "style.safetensors").ends_with("loras/style.safetensors"));
        assert!(found("unet_name", "u.gguf").ends_with("diffusion_models/u.gguf"));
        assert!(
            found("lora_name", "sdxl.safetensors").ends_with("models/sdxl.safetensors"),
            "another kind's folder is not searched: the loader reports the name as not found"
        );
        std::fs::write(models.join("sdxl.safetensors"), b"").unwrap();
        assert!(
            found("ckpt_name", "sdxl.safetensors").ends_with("models/sdxl.safetensors"),
            "a name in the models folder itself comes first"
        );
        let located = roots
            .locate(FileFolder::Models, "lora_name", "style.safetensors")
            .unwrap();
        assert!(
            located.unwrap().ends_with("loras/style.safetensors"),
            "the cache reads the file the node reads"
        );
    }

    #[test]
    fn refuses_names_that_lead_out() {
        let scratch = Scratch::new("outside");
        let roots = scratch.roots();
        let secret = scratch.0.join("elsewhere/secret");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&secret, scratch.0.join("models/link")).unwrap();
        for bad in [
            "../elsewhere/secret",
            "sub/../../elsewhere/secret",
            secret.to_str().unwrap(),
            "/etc/passwd",
            "/nonexistent/file",
            "link",
            "",
        ] {
            let error = roots.model("ckpt_name", bad).unwrap_err().to_string();
            assert!(error.starts_with("ckpt_name"), "{bad:?}: {error}");
        }
        let error = roots.input("image", "../elsewhere/secret").unwrap_err().to_string();
        assert!(
            error.contains("outside the input folder") && error.contains("--input-dir"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_folder_is_named() {
        let roots = FileRoots {
            models: PathBuf::from("/nonexistent/models"),
            ..FileRoots::default()
        };
        let error = roots.model("ckpt_name", "a.safetensors").unwrap_err().to_string();
        assert!(
            error.contains("--models-dir") && error.contains("/nonexistent/models"),
            "{error}"
        );
    }
}
