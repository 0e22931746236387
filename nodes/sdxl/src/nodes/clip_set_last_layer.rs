//! `CLIPSetLastLayer`: which layer of the text encoders the conditioning's hidden states come
//! from ("CLIP skip"), as ComfyUI counts it.

use crate::conditioning::TextEncoders;
use std::sync::Arc;
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// The layer to stop at.
#[derive(Params)]
struct LastLayer {
    /// The layer the hidden states come from, counted from the end: -1 the last, -2 the second-to-last (what SDXL uses without this node), down to the encoders' first layer.
    #[param(default = -1, min = -24, max = -1)]
    stop_at_clip_layer: i64,
}

/// Sets the text encoders' last layer.
pub struct ClipSetLastLayer {
    descriptor: NodeDescriptor,
}

impl ClipSetLastLayer {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "CLIPSetLastLayer",
            "conditioning",
            "Takes the conditioning's hidden states from another layer of both text encoders, counted from the end \
             (-1 the last; SDXL uses -2 without this node). The encoders' weights are shared with the CLIP given.",
        )
        .input("clip", SocketType::CLIP, "The text encoders.")
        .params::<LastLayer>()
        .output(SocketType::CLIP, "The text encoders, stopping at that layer.");
        Self { descriptor }
    }
}

impl NodeType for ClipSetLastLayer {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let layer = LastLayer::from_args(args)?.stop_at_clip_layer;
        let clip = args.handle::<TextEncoders>("clip")?;
        let stopped = clip
            .stopping_at(layer.unsigned_abs() as usize)
            .map_err(|problem| NodeError::Argument {
                name: "stop_at_clip_layer".into(),
                problem,
            })?;
        Ok(vec![Value::Handle(Handle::new(SocketType::CLIP, Arc::new(stopped)))])
    }
}
