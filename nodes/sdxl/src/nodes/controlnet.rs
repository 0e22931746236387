//! `ControlNetLoader` and `ControlNetApplyAdvanced`: a ControlNet, and attaching it with a hint
//! image to both conditionings.

use super::tensor_error;
use crate::conditioning::{ConditioningList, ControlHint};
use crate::controlnet::{self, CONTROL_NET, TINY_CONTROLNET};
use std::sync::Arc;
use swapgraph_model::{Image, ModelHandle};
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value};

/// Loads a ControlNet; its weights stay on the host until a sampler runs it.
pub struct ControlNetLoader {
    descriptor: NodeDescriptor,
}

/// The ControlNet to load.
#[derive(Params)]
struct ControlNetFile {
    /// A ControlNet folder or .safetensors file inside the models folder (--models-dir), builtin:tiny-controlnet or builtin:random-controlnet.
    #[param(default = TINY_CONTROLNET, reads = Models)]
    control_net_name: Arc<str>,
}

impl ControlNetLoader {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "ControlNetLoader",
            "loaders",
            "Loads an SDXL ControlNet (such as InstantID's IdentityNet): a diffusers folder, a .safetensors file \
             (with config.json beside it, or SDXL's configuration), builtin:tiny-controlnet or builtin:random-controlnet (random weights, toy and SDXL size).",
        )
        .params::<ControlNetFile>()
        .output(CONTROL_NET, "The ControlNet.");
        Self { descriptor }
    }
}

impl NodeType for ControlNetLoader {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let name = ControlNetFile::from_args(args)?.control_net_name;
        let model = controlnet::load(&ctx.files.model("control_net_name", &name)?)?;
        Ok(vec![Value::Handle(Handle::new(CONTROL_NET, Arc::new(model)))])
    }
}

/// Attaches a ControlNet and its hint image to the positive and negative conditioning.
pub struct ControlNetApplyAdvanced {
    descriptor: NodeDescriptor,
}

/// How strongly and over which part of the schedule a ControlNet steers.
#[derive(Params)]
struct ControlStrength {
    /// Scale of the ControlNet's residuals.
    #[param(default = 1.0, min = 0.0, max = 10.0)]
    strength: f64,
    /// Where in the schedule it starts (0 = first step).
    #[param(default = 0.0, min = 0.0, max = 1.0)]
    start_percent: f64,
    /// Where in the schedule it ends (1 = last step).
    #[param(default = 1.0, min = 0.0, max = 1.0)]
    end_percent: f64,
}

impl ControlNetApplyAdvanced {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "ControlNetApplyAdvanced",
            "conditioning",
            "Steers sampling with a ControlNet and a hint image (cropped about its centre to the aspect of the image being generated, or of a placed conditioning's area, and resized to it) over part of the schedule. Applied again to conditionings that already carry one (or InstantID's), it chains: every ControlNet runs each step and their residuals are summed.",
        )
        .input("positive", SocketType::CONDITIONING, "The positive conditioning.")
        .input("negative", SocketType::CONDITIONING, "The negative conditioning.")
        .input("control_net", CONTROL_NET, "The ControlNet.")
        .input("image", SocketType::IMAGE, "The hint image (its first image is used).")
        .params::<ControlStrength>()
        .named_output("positive", SocketType::CONDITIONING, "The positive conditioning, with the ControlNet.")
        .named_output("negative", SocketType::CONDITIONING, "The negative conditioning, with the ControlNet.");
        Self { descriptor }
    }
}

impl NodeType for ControlNetApplyAdvanced {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let image = args.handle::<Image>("image")?;
        let steer = ControlStrength::from_args(args)?;
        let hint = Arc::new(ControlHint {
            controlnet: (*args.handle::<ModelHandle>("control_net")?).clone(),
            hint: hint_tensor(&image)?,
            strength: steer.strength,
            start_percent: steer.start_percent,
            end_percent: steer.end_percent,
            context: None,
            region: None,
        });
        let attach = |name: &str| -> Result<Value, NodeError> {
            let attached = args
                .handle::<ConditioningList>(name)?
                .map(|conditioning| Ok::<_, NodeError>(conditioning.with_control(Arc::clone(&hint))))?;
            Ok(Value::Handle(Handle::new(SocketType::CONDITIONING, Arc::new(attached))))
        };
        Ok(vec![attach("positive")?, attach("negative")?])
    }
}

/// The first image of a batch as a ControlNet hint `[1, 3, h, w]`.
///
/// # Errors
/// A tensor error on an empty batch.
pub fn hint_tensor(image: &Image) -> Result<candle_core::Tensor, NodeError> {
    image
        .pixels
        .narrow(0, 0, 1)
        .and_then(|first| first.permute((0, 3, 1, 2)))
        .and_then(|t| t.contiguous())
        .map_err(tensor_error)
}
