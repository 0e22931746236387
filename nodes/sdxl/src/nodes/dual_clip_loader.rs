//! `DualCLIPLoader`: SDXL's two text encoders from files of their own.

use crate::checkpoint::{clip_file, TINY_SDXL};
use std::sync::Arc;
use swapgraph_node_api::{
    Args, Choice, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value,
};

/// The models the pair is for, as ComfyUI names them; swapgraph runs SDXL's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
pub enum ClipType {
    /// SDXL: CLIP-L and OpenCLIP bigG.
    Sdxl,
}

/// Where ComfyUI runs the text encoders; here they run on the run's device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
pub enum ClipDevice {
    /// The run's device.
    Default,
    /// The CPU: refused (run the whole workflow with --device cpu instead).
    Cpu,
}

/// The two files.
#[derive(Params)]
struct ClipFiles {
    /// One text encoder inside the models folder (--models-dir; clip/ or text_encoders/ of a ComfyUI models folder): CLIP-L or OpenCLIP bigG as a .safetensors file (transformers' or OpenCLIP's layout); or a built-in model, named in both.
    #[param(default = TINY_SDXL, reads = Models)]
    clip_name1: Arc<str>,
    /// The other text encoder, as clip_name1.
    #[param(default = TINY_SDXL, reads = Models)]
    clip_name2: Arc<str>,
    /// The models the pair is for: sdxl.
    #[param(default = ClipType::Sdxl)]
    r#type: ClipType,
    /// Where the encoders run: default (the run's device); cpu is refused (the encoders run where the run does: --device cpu runs all on the CPU).
    #[param(default = ClipDevice::Default)]
    device: ClipDevice,
}

/// Loads SDXL's text encoders from two files.
pub struct DualClipLoader {
    descriptor: NodeDescriptor,
}

impl DualClipLoader {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "DualCLIPLoader",
            "loaders",
            "Loads SDXL's text encoders, CLIP-L and OpenCLIP bigG, from files of their own, in either order; each \
             comes to the device only while it encodes.",
        )
        .params::<ClipFiles>()
        .output(SocketType::CLIP, "Both text encoders.");
        Self { descriptor }
    }
}

impl NodeType for DualClipLoader {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let files = ClipFiles::from_args(args)?;
        // SDXL's pair is the one kind there is; others are refused as unknown choices.
        let ClipType::Sdxl = files.r#type;
        if files.device == ClipDevice::Cpu {
            return Err(NodeError::Argument {
                name: "device".into(),
                problem: "the text encoders run on the run's device (they leave it after encoding); \
                          choose default, or run the whole workflow with --device cpu"
                    .into(),
            });
        }
        let first = ctx.files.model("clip_name1", &files.clip_name1)?;
        let second = ctx.files.model("clip_name2", &files.clip_name2)?;
        let clip = clip_file::load_pair(&first, &second)?;
        Ok(vec![Value::Handle(Handle::new(SocketType::CLIP, clip))])
    }
}
