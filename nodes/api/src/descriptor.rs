//! Node descriptors: the single, static description of a node type.

use crate::{ParamSpec, SocketType};
use serde::Serialize;

/// Everything the engine, the CLI and the editor know about a node type without running it:
/// its name, version, place in the palette, inputs, parameters and outputs.
#[derive(Clone, Debug, Serialize)]
pub struct NodeDescriptor {
    /// The type name used in workflow files, e.g. `KSampler`.
    pub type_name: &'static str,
    /// Semantic version of the node's behaviour; part of the cache key, so a changed node never
    /// reuses results of its older self.
    pub version: &'static str,
    /// Palette category, slash-separated, e.g. `sampling` or `utils/text`.
    pub category: &'static str,
    /// What the node does, for the palette and `swapgraph nodes`.
    pub description: &'static str,
    /// Sockets that must (or may) be linked to another node's output.
    pub inputs: Vec<InputSpec>,
    /// Literal parameters, each of which may instead be fed by a link.
    pub params: Vec<ParamSpec>,
    /// What the node produces, in order.
    pub outputs: Vec<OutputSpec>,
    /// Whether the node is a sink (saves or shows something). Only nodes that feed an output
    /// node run.
    pub is_output: bool,
    /// Whether the result may be reused when type, parameters and upstream are unchanged.
    /// Output nodes and nodes with side effects opt out.
    pub cacheable: bool,
    /// Whether the node computes on the run's device (GPU): the engine runs such nodes one at a
    /// time, so that each has the device memory the run's budget leaves.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub uses_device: bool,
}

/// An input socket of a node type.
#[derive(Clone, Debug, Serialize)]
pub struct InputSpec {
    /// The name used under `inputs:`.
    pub name: &'static str,
    /// The type a linked output must have.
    pub socket: SocketType,
    /// Whether the node runs without it.
    pub optional: bool,
    /// What the input is for.
    pub description: &'static str,
}

/// An output socket of a node type.
#[derive(Clone, Debug, Serialize)]
pub struct OutputSpec {
    /// The name links use: `node_id.name`.
    pub name: &'static str,
    /// The type of the value produced.
    pub socket: SocketType,
    /// What the output holds.
    pub description: &'static str,
}

impl NodeDescriptor {
    /// Starts a descriptor for a cacheable, non-output node at version 1.0.0.
    pub fn new(type_name: &'static str, category: &'static str, description: &'static str) -> Self {
        Self {
            type_name,
            version: "1.0.0",
            category,
            description,
            inputs: Vec::new(),
            params: Vec::new(),
            outputs: Vec::new(),
            is_output: false,
            cacheable: true,
            uses_device: false,
        }
    }

    /// Sets the node's semantic version.
    pub fn version(mut self, version: &'static str) -> Self {
        self.version = version;
        self
    }

    /// Adds a required input socket.
    pub fn input(mut self, name: &'static str, socket: SocketType, description: &'static str) -> Self {
        self.inputs.push(InputSpec {
            name,
            socket,
            optional: false,
            description,
        });
        self
    }

    /// Adds an optional input socket.
    pub fn optional_input(mut self, name: &'static str, socket: SocketType, description: &'static str) -> Self {
        self.inputs.push(InputSpec {
            name,
            socket,
            optional: true,
            description,
        });
        self
    }

    /// Adds a parameter.
    pub fn param(mut self, param: ParamSpec) -> Self {
        self.params.push(param);
        self
    }

    /// Adds every param `P` declares, in its order (see [`crate::Params`]).
    pub fn params<P: crate::Params>(mut self) -> Self {
        self.params.extend(P::specs());
        self
    }

    /// Adds an output named after its socket type (`MODEL` -> `model`), as ComfyUI names them.
    pub fn output(self, socket: SocketType, description: &'static str) -> Self {
        self.named_output(socket.output_name(), socket, description)
    }

    /// Adds an output with an explicit name, for nodes with two outputs of one type.
    pub fn named_output(mut self, name: &'static str, socket: SocketType, description: &'static str) -> Self {
        self.outputs.push(OutputSpec {
            name,
            socket,
            description,
        });
        self
    }

    /// Marks the node as an output node (a sink), which also opts it out of the cache.
    pub fn output_node(mut self) -> Self {
        self.is_output = true;
        self.cacheable = false;
        self
    }

    /// Marks the node as computing on the run's device.
    pub fn uses_device(mut self) -> Self {
        self.uses_device = true;
        self
    }

    /// Opts the node out of the result cache.
    pub fn not_cacheable(mut self) -> Self {
        self.cacheable = false;
        self
    }

    /// The input socket named `name`.
    pub fn find_input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|input| input.name == name)
    }

    /// The parameter named `name`.
    pub fn find_param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|param| param.name == name)
    }

    /// The position and declaration of the output named `name`.
    pub fn find_output(&self, name: &str) -> Option<(usize, &OutputSpec)> {
        self.outputs.iter().enumerate().find(|(_, output)| output.name == name)
    }
}
