//! `LoadImageMask`: one channel of an image file as a MASK.

use crate::open::ImageFile;
use candle_core::{Device, Tensor};
use std::sync::Arc;
use swapgraph_model::{candle_device, Mask};
use swapgraph_node_api::{
    Args, Choice, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value,
};

/// The image and the channel the mask is read from.
#[derive(Params)]
struct MaskSource {
    #[param(flatten)]
    file: ImageFile,
    /// Which channel holds the mask.
    #[param(default = Channel::Alpha)]
    channel: Channel,
}

/// The channel a mask is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
enum Channel {
    Alpha,
    Red,
    Green,
    Blue,
}

impl Channel {
    /// Index in an RGBA pixel.
    fn index(self) -> usize {
        match self {
            Self::Red => 0,
            Self::Green => 1,
            Self::Blue => 2,
            Self::Alpha => 3,
        }
    }

    /// The mask value of an 8-bit sample of this channel.
    fn mask_value(self, sample: u8) -> f32 {
        let v = f32::from(sample) / 255.0;
        if self == Self::Alpha {
            1.0 - v
        } else {
            v
        }
    }
}

/// Reads a mask from a PNG, JPEG or WebP file: a colour channel as is, or the alpha channel
/// inverted (transparent pixels are inside the mask), as ComfyUI's node of the same name does.
pub struct LoadImageMask {
    descriptor: NodeDescriptor,
}

impl LoadImageMask {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "LoadImageMask",
            "image",
            "Loads one channel of an image as a mask: red, green or blue as they are (white = 1), or alpha inverted \
             (transparent = 1).",
        )
        .params::<MaskSource>()
        .output(SocketType::MASK, "The mask, values 0..1.");
        Self { descriptor }
    }
}

impl NodeType for LoadImageMask {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let MaskSource { file, channel } = MaskSource::from_args(args)?;
        let (path, decoded) = file.open(ctx)?;
        if channel == Channel::Alpha && !decoded.color().has_alpha() {
            return Err(NodeError::msg(format!(
                "{} has no alpha channel to read the mask from; choose channel red, green or blue",
                path.display()
            )));
        }
        let rgba = decoded.to_rgba8();
        let (w, h) = rgba.dimensions();
        let values: Vec<f32> = rgba
            .pixels()
            .map(|p| channel.mask_value(p.0[channel.index()]))
            .collect();
        let device = candle_device(ctx.device)?;
        let values = Tensor::from_vec(values, (1, h as usize, w as usize), &Device::Cpu)
            .and_then(|t| t.to_device(&device))
            .map_err(|e| NodeError::msg(e.to_string()))?;
        Ok(vec![Value::Handle(Handle::new(
            SocketType::MASK,
            Arc::new(Mask { values }),
        ))])
    }
}
