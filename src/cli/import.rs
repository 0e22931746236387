//! `swapgraph import`: a ComfyUI workflow (API or editor format) written out as a swapgraph
//! workflow, with every problem the result has reported at once.

use super::args::ImportArgs;
use super::Exit;
use crate::workflow::{from_comfyui_api, from_comfyui_editor, is_comfyui_api, is_comfyui_editor, read_bytes};
use swapgraph_node_api::Registry;

/// Converts `args.file` and writes the workflow to `args.output` (or stdout), then checks it as
/// `validate` would.
pub fn import(args: ImportArgs, registry: &Registry) -> Exit {
    let source = args.file.display().to_string();
    let bytes = match read_bytes(&args.file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::InvalidWorkflow;
        }
    };
    let read = if is_comfyui_api(&bytes) {
        from_comfyui_api
    } else if is_comfyui_editor(&bytes) {
        from_comfyui_editor
    } else {
        eprintln!(
            "error: {source} is not a ComfyUI workflow: neither its API format (a JSON object of nodes, each with \
             a \"class_type\") nor its editor format (\"nodes\" and \"links\")"
        );
        return Exit::InvalidWorkflow;
    };
    let name = args
        .file
        .file_stem()
        .map_or(source.clone(), |s| s.to_string_lossy().into_owned());
    let yaml = match read(&name, &bytes, registry) {
        Ok((yaml, _)) => yaml,
        Err(problem) => {
            eprintln!("{source}: error: {problem}");
            return Exit::InvalidWorkflow;
        }
    };
    match &args.output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &yaml) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return Exit::Usage;
            }
        }
        None => print!("{yaml}"),
    }
    // The links that could not be read are in the report of the JSON itself.
    match crate::prepare(&source, &bytes, &[], registry) {
        Ok(_) => Exit::Success,
        Err(report) => {
            let written = args
                .output
                .as_ref()
                .map_or("the workflow".to_string(), |p| p.display().to_string());
            eprintln!("{report}; fix {written} before running it");
            Exit::InvalidWorkflow
        }
    }
}
