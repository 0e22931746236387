//! The workflow file format, version 1, as plain serde data.
//!
//! ```yaml
//! version: 1
//! name: SDXL text to image
//! nodes:
//!   ckpt:
//!     type: CheckpointLoaderSimple
//!     params: { ckpt_name: builtin:tiny-sdxl }
//!   pos:
//!     type: CLIPTextEncode
//!     inputs: { clip: ckpt.clip }
//!     params: { text: "a portrait photo" }
//! ```

use super::{Entries, Located};
use serde::{Deserialize, Serialize};

/// The only workflow format version this build reads.
pub const FORMAT_VERSION: i64 = 1;

/// A workflow document as written, before validation. Every value keeps its position so that
/// validation can point at it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// The format version; must be `1`.
    ///
    /// ```yaml
    /// version: 1
    /// ```
    pub version: Option<Located<serde_json::Value>>,
    /// A human-readable name.
    ///
    /// ```yaml
    /// name: SDXL text to image
    /// ```
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Longer notes about the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The nodes, keyed by node id, in file order.
    ///
    /// ```yaml
    /// nodes:
    ///   latent:
    ///     type: EmptyLatentImage
    ///     params: { width: 1024, height: 1024 }
    /// ```
    #[serde(default)]
    pub nodes: Entries<NodeSpec>,
    /// What the editor draws besides the nodes: groups, titled boxes behind them (ComfyUI's
    /// groups, which `import` keeps).
    ///
    /// ```yaml
    /// ui:
    ///   groups:
    ///     - { title: Face, x: 0, y: -40, width: 700, height: 420, color: "#3f789e" }
    /// ```
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<WorkflowUi>,
}

/// The editor's drawing of a workflow beyond its nodes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowUi {
    /// The groups, in drawing order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<UiGroup>,
}

/// A group: a titled box the editor draws behind the nodes inside it, and moves with them.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UiGroup {
    /// The title shown at its top.
    pub title: String,
    /// Left edge in canvas units.
    pub x: f64,
    /// Top edge in canvas units.
    pub y: f64,
    /// Width in canvas units.
    pub width: f64,
    /// Height in canvas units.
    pub height: f64,
    /// Its colour, as CSS takes it (`#3f789e`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// One node of a workflow.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The node type, as `swapgraph nodes` lists them.
    ///
    /// ```yaml
    /// type: KSampler
    /// ```
    #[serde(rename = "type")]
    pub type_name: Located<String>,
    /// A display title for the editor.
    ///
    /// ```yaml
    /// title: Positive prompt
    /// ```
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Links into this node's inputs (or parameters), each `node_id.output_name`.
    ///
    /// ```yaml
    /// inputs: { model: swap.model, positive: pos.conditioning }
    /// ```
    #[serde(default, skip_serializing_if = "Entries::is_empty")]
    pub inputs: Entries<String>,
    /// Literal parameter values.
    ///
    /// ```yaml
    /// params: { seed: 42, steps: 30, sampler_name: euler }
    /// ```
    #[serde(default, skip_serializing_if = "Entries::is_empty")]
    pub params: Entries<serde_json::Value>,
    /// The node's position in the editor, and whether it is drawn collapsed, kept on round trip.
    ///
    /// ```yaml
    /// ui: { x: 120, y: 40, collapsed: true }
    /// ```
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<UiPosition>,
    /// `false` bypasses the node: each output passes on the node's first input of the same type.
    ///
    /// ```yaml
    /// enabled: false
    /// ```
    #[serde(default = "enabled_by_default", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

/// Where and how the editor draws a node.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UiPosition {
    /// Horizontal position in canvas units.
    pub x: f64,
    /// Vertical position in canvas units.
    pub y: f64,
    /// Drawn as its header alone.
    #[serde(default, skip_serializing_if = "is_false")]
    pub collapsed: bool,
}

fn enabled_by_default() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}
