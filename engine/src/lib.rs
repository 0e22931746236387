//! The engine of swapgraph: a workflow is a YAML graph of nodes ([`workflow`]); it is checked
//! against the node types of a [`Registry`] ([`validate`]), planned into ordered steps ([`plan`])
//! and run with caching, events and cancellation ([`exec`]).
//!
//! The engine depends on the node API alone: it never names a node type, a socket type a pack
//! defines, or a pack. The binary registers the packs it ships.

// Validation errors carry the names and positions their messages need; they are built once per
// problem, never on a hot path, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod exec;
pub mod plan;
pub mod validate;
pub mod workflow;

use plan::Plan;
use swapgraph_node_api::Registry;
use validate::{ValidationError, ValidationReport};
use workflow::Override;

/// Reads a ComfyUI workflow as a workflow's YAML, with what it had to leave out.
type Import = fn(&str, &[u8], &Registry) -> Result<(String, Vec<String>), String>;

/// Parses, applies overrides to, validates and plans workflow text (a swapgraph workflow, or a
/// ComfyUI workflow, in its API or its editor format, read as one): everything before running.
///
/// # Errors
/// A [`ValidationReport`] with every problem found, named after `source`.
pub fn prepare(
    source: &str,
    bytes: &[u8],
    overrides: &[Override],
    registry: &Registry,
) -> Result<Plan, ValidationReport> {
    let imported;
    let imported_source;
    let mut errors = Vec::new();
    let mut source = source;
    let read: Option<Import> = if workflow::is_comfyui_api(bytes) {
        Some(workflow::from_comfyui_api)
    } else if workflow::is_comfyui_editor(bytes) {
        Some(workflow::from_comfyui_editor)
    } else {
        None
    };
    let bytes = if let Some(read) = read {
        let name = std::path::Path::new(source)
            .file_stem()
            .map_or(source.into(), |stem| stem.to_string_lossy());
        let (yaml, problems) = read(&name, bytes, registry)
            .map_err(|message| ValidationReport::new(source, vec![ValidationError::ComfyUi { message }]))?;
        errors.extend(problems.into_iter().map(|message| ValidationError::ComfyUi { message }));
        imported = yaml;
        // Positions are in the workflow the import makes, which `swapgraph import` writes out.
        imported_source = format!("{source} (imported)");
        source = &imported_source;
        imported.as_bytes()
    } else {
        bytes
    };
    let mut document = workflow::parse(bytes).map_err(|error| ValidationReport::new(source, vec![error]))?;
    errors.extend(workflow::apply_overrides(&mut document, overrides));
    match validate::validate(&document, registry) {
        Ok(graph) if errors.is_empty() => Ok(Plan::new(graph, document)),
        Ok(_) => Err(ValidationReport::new(source, errors)),
        Err(found) => {
            errors.extend(found);
            Err(ValidationReport::new(source, errors))
        }
    }
}
