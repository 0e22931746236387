//! `POST /api/import`: a workflow in any form a user may drop on the editor, as swapgraph
//! workflow YAML: ComfyUI's JSON (API or editor format), a PNG carrying a workflow (swapgraph's
//! own, or ComfyUI's `workflow` or `prompt`), or YAML as it is.

use crate::workflow::{from_comfyui_api, from_comfyui_editor, is_comfyui_api, is_comfyui_editor};
use swapgraph_node_api::Registry;

/// PNG's signature.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";

/// `bytes` (a file called `name`) as workflow YAML.
///
/// # Errors
/// What the bytes are not, or what the conversion found wrong, naming `name`.
pub fn workflow_yaml(name: &str, bytes: &[u8], registry: &Registry) -> Result<String, String> {
    if bytes.starts_with(PNG) {
        return from_png(name, bytes, registry);
    }
    if is_comfyui_api(bytes) {
        return from_comfyui_api(name, bytes, registry).map(|(yaml, _)| yaml);
    }
    if is_comfyui_editor(bytes) {
        return from_comfyui_editor(name, bytes, registry).map(|(yaml, _)| yaml);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{name} is neither a PNG nor a text file"))?;
    crate::workflow::parse(bytes).map_err(|e| {
        format!("{name} is not a workflow: not ComfyUI's JSON (API or editor format), and as YAML: {e}")
    })?;
    Ok(text.to_string())
}

/// The workflow a PNG carries: swapgraph's YAML, else ComfyUI's editor graph, else its API prompt.
fn from_png(name: &str, bytes: &[u8], registry: &Registry) -> Result<String, String> {
    let texts = swapgraph_image::png_texts(bytes).map_err(|e| format!("{name}: {e}"))?;
    let text = |keyword: &str| texts.iter().find(|(k, _)| k == keyword).map(|(_, t)| t.as_bytes());
    match text("workflow") {
        Some(workflow) if is_comfyui_editor(workflow) => from_comfyui_editor(name, workflow, registry).map(|(y, _)| y),
        Some(workflow) if crate::workflow::parse(workflow).is_ok() => {
            Ok(String::from_utf8_lossy(workflow).into_owned())
        }
        _ => match text("prompt") {
            Some(prompt) if is_comfyui_api(prompt) => from_comfyui_api(name, prompt, registry).map(|(y, _)| y),
            _ => Err(format!(
                "{name} carries no workflow: none of swapgraph's, nor ComfyUI's \"workflow\" or \"prompt\""
            )),
        },
    }
}
