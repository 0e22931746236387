//! The workflow file format: the document types, reading them from YAML with positions, node ids
//! and links, and `--set` overrides.

mod comfyui;
mod comfyui_editor;
mod document;
mod entries;
mod id;
mod load;
mod overrides;
mod plain;
mod position;

pub use comfyui::{from_comfyui_api, is_comfyui_api};
pub use comfyui_editor::{from_comfyui_editor, is_comfyui_editor};
pub use document::{NodeSpec, UiPosition, Workflow, FORMAT_VERSION};
pub use entries::Entries;
pub use id::{Link, NodeId};
pub use load::{parse, read_bytes, ReadError, MAX_WORKFLOW_BYTES};
pub use overrides::{apply as apply_overrides, Override, Target};
pub use position::{Located, Position};
