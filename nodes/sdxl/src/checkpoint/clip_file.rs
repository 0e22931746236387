//! SDXL's text encoders from files of their own, as ComfyUI's `models/clip/` (or
//! `text_encoders/`) folder holds them: CLIP-L and OpenCLIP bigG, each a single file in
//! transformers' layout (with or without the `text_model.` prefix), or bigG in OpenCLIP's.

use super::diffusers::{open, with_text_model_prefix};
use super::shapes::{clip_sizes, ClipLayout};
use super::single_file::clip_g_key;
use super::ModelFile;
use crate::clip::{ClipConfig, ClipTokenizer};
use crate::conditioning::TextEncoders;
use std::path::Path;
use std::sync::Arc;
use swapgraph_model::{SourceKey, TensorSource};
use swapgraph_node_api::NodeError;

/// Where OpenCLIP's tensors sit in an original SDXL checkpoint, as `clip_g_key` gives them.
const OPEN_CLIP_PREFIX: &str = "conditioner.embedders.1.model.";

/// Both text encoders from the files `first` and `second`, in either order (CLIP-L is the one
/// without a projection), or a built-in checkpoint's when both name it.
///
/// # Errors
/// A message naming the file: not found, not a CLIP text encoder, two of the same kind, or a
/// shape this code cannot build.
pub fn load_pair(first: &str, second: &str) -> Result<Arc<TextEncoders>, NodeError> {
    let give = "a CLIP-L or OpenCLIP bigG .safetensors file";
    let (a, b) = (
        ModelFile::find(first, "text encoder", give)?,
        ModelFile::find(second, "text encoder", give)?,
    );
    match (a, b) {
        (ModelFile::Builtin(checkpoint), ModelFile::Builtin(_)) if first == second => Ok(checkpoint.clip),
        (ModelFile::File(a), ModelFile::File(b)) => pair(load_encoder(a, None)?, load_encoder(b, None)?, first, second),
        _ => Err(NodeError::msg(format!(
            "\"{first}\" and \"{second}\": give two text encoder files, or the same built-in model twice"
        ))),
    }
}

/// SDXL's pair from two encoders read from `first` and `second`: CLIP-L and bigG, in either
/// order.
///
/// # Errors
/// Two encoders of the same kind.
pub fn pair(
    a: (Arc<TensorSource>, ClipConfig),
    b: (Arc<TensorSource>, ClipConfig),
    first: &str,
    second: &str,
) -> Result<Arc<TextEncoders>, NodeError> {
    let (l, g) = match (a.1.projection_dim, b.1.projection_dim) {
        (None, Some(_)) => (a, b),
        (Some(_), None) => (b, a),
        (None, None) => {
            return Err(NodeError::msg(format!(
                "\"{first}\" and \"{second}\" are both CLIP-L: SDXL needs CLIP-L and OpenCLIP bigG"
            )))
        }
        (Some(_), Some(_)) => {
            return Err(NodeError::msg(format!(
                "\"{first}\" and \"{second}\" are both OpenCLIP bigG: SDXL needs CLIP-L and OpenCLIP bigG"
            )))
        }
    };
    let tokenizer = ClipTokenizer::standard().map_err(|e| NodeError::msg(e.to_string()))?;
    let name = format!("{first} + {second}");
    let encoders = TextEncoders::new(&name, tokenizer, l, g).map_err(|e| NodeError::msg(format!("{name}: {e}")))?;
    Ok(Arc::new(encoders))
}

/// One text encoder from a file of its own, of sizes `cfg` (`None`: read from its tensors'
/// shapes, with heads of 64 channels), keyed as the encoder asks.
///
/// # Errors
/// A message naming the file: not a CLIP text encoder, or a shape this code cannot build.
pub fn load_encoder(path: &Path, cfg: Option<ClipConfig>) -> Result<(Arc<TensorSource>, ClipConfig), NodeError> {
    let source = open(path)?;
    let keys = source.keys();
    let has = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix));
    let layout = if has("text_model.encoder.layers.") {
        ClipLayout::Transformers("text_model.")
    } else if has("encoder.layers.") {
        ClipLayout::Transformers("")
    } else if has("transformer.resblocks.") {
        ClipLayout::OpenClip("")
    } else {
        return Err(NodeError::msg(format!(
            "{} is not a CLIP text encoder (it has no text_model.encoder.layers nor transformer.resblocks tensors)",
            path.display()
        )));
    };
    let cfg = match cfg {
        Some(cfg) => cfg,
        None => clip_sizes(&source, layout).map_err(|e| NodeError::msg(format!("{}: {e}", path.display())))?,
    };
    let source = match layout {
        ClipLayout::Transformers(_) => with_text_model_prefix(source),
        ClipLayout::OpenClip(prefix) => source.with_key_map(Arc::new(move |key: &str| {
            let SourceKey { key, part } = clip_g_key(key)?;
            let bare = key.strip_prefix(OPEN_CLIP_PREFIX).unwrap_or(&key);
            Some(SourceKey {
                key: format!("{prefix}{bare}"),
                part,
            })
        })),
    };
    Ok((Arc::new(source), cfg))
}
