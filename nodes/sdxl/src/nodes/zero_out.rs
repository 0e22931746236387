//! `ConditioningZeroOut`, with ComfyUI's semantics: a conditioning whose text and pooled
//! embedding are zeros (what SDXL workflows use as the negative).

use super::tensor_error;
use crate::conditioning::ConditioningList;
use std::sync::Arc;
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, RunContext, SocketType, Value};

/// Zeros a conditioning's text and pooled embedding, keeping what is attached to it.
pub struct ConditioningZeroOut {
    descriptor: NodeDescriptor,
}

impl ConditioningZeroOut {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "ConditioningZeroOut",
            "advanced/conditioning",
            "Zeros a conditioning's text and pooled embedding (size ids, ControlNets and image prompts stay), e.g. \
             for a negative prompt of nothing at all.",
        )
        .input("conditioning", SocketType::CONDITIONING, "The conditioning.")
        .output(SocketType::CONDITIONING, "The conditioning, zeroed.");
        Self { descriptor }
    }
}

impl NodeType for ConditioningZeroOut {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let zeroed = args
            .handle::<ConditioningList>("conditioning")?
            .map(|mut conditioning| {
                conditioning.context = conditioning.context.zeros_like()?;
                conditioning.pooled = conditioning.pooled.zeros_like()?;
                Ok(conditioning)
            })
            .map_err(tensor_error)?;
        Ok(vec![Value::Handle(Handle::new(
            SocketType::CONDITIONING,
            Arc::new(zeroed),
        ))])
    }
}
