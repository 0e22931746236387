//! `UNETLoader`: an SDXL UNet on its own, its weights kept as stored or in 8-bit floats, which
//! halve what the weights take on the device and what BlockSwap moves per step.

use crate::checkpoint::{unet_file, TINY_SDXL};
use candle_core::DType;
use std::sync::Arc;
use swapgraph_model::ModelHandle;
use swapgraph_node_api::{
    Args, Choice, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value,
};

/// The dtype a UNet's weights are kept in, as ComfyUI names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
pub enum WeightDType {
    /// As the file stores them: 8-bit files stay in 8 bits, others run in the device's dtype.
    Default,
    /// 8-bit floats with 4 exponent bits, widened layer by layer as the UNet runs.
    #[choice(name = "fp8_e4m3fn")]
    Fp8E4m3fn,
    /// As fp8_e4m3fn, and linear layers multiply the 8-bit weights as kept, their inputs
    /// rounded to 8 bits, on cards with 8-bit tensor cores (Ada, Hopper and later).
    #[choice(name = "fp8_e4m3fn_fast")]
    Fp8E4m3fnFast,
    /// 8-bit floats with 5 exponent bits: refused (kept weights are fp8_e4m3fn; files stored
    /// in e5m2 are read exactly).
    #[choice(name = "fp8_e5m2")]
    Fp8E5m2,
}

/// The UNet to load and how to keep its weights.
#[derive(Params)]
struct UNetFile {
    /// An SDXL UNet inside the models folder (--models-dir; unet/ or diffusion_models/ of a ComfyUI models folder): a .safetensors file in the original layout (fp16, bf16, fp32 or fp8, with or without per-layer scales), a .gguf file (as UnetLoaderGGUF reads it) or a diffusers unet/ folder; or builtin:tiny-sdxl / builtin:random-sdxl.
    #[param(default = TINY_SDXL, reads = Models)]
    unet_name: Arc<str>,
    /// How its weights are kept: default (as stored), fp8_e4m3fn (8-bit floats: half the device memory and BlockSwap transfers of f16, converted once when loaded), fp8_e4m3fn_fast (the same, and linear layers multiply in 8 bits, their inputs rounded to 8 bits: faster on Ada and Hopper cards, which have 8-bit tensor cores, and not exactly fp8_e4m3fn's image; elsewhere as fp8_e4m3fn), fp8_e5m2 (refused: use fp8_e4m3fn).
    #[param(default = WeightDType::Default)]
    weight_dtype: WeightDType,
}

/// Loads an SDXL UNet from a file of its own.
pub struct UNetLoader {
    descriptor: NodeDescriptor,
}

impl UNetLoader {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "UNETLoader",
            "loaders",
            "Loads an SDXL UNet from a file of its own (original layout, fp16/bf16/fp32/fp8) or a diffusers unet/ \
             folder. fp8 keeps its weights in 8 bits: half the device memory, and half what BlockSwap streams per \
             step; they are widened layer by layer as the UNet runs, or with fp8_e4m3fn_fast multiplied in 8 bits by the \
             linear layers on cards with 8-bit tensor cores.",
        )
        .params::<UNetFile>()
        .output(SocketType::MODEL, "The UNet.");
        Self { descriptor }
    }
}

/// The dtype `choice` keeps `model`'s weights in.
///
/// # Errors
/// `fp8_e5m2`, which has no kept form here.
fn kept_dtype(choice: WeightDType, model: &ModelHandle) -> Result<Option<DType>, NodeError> {
    match choice {
        WeightDType::Default => Ok(model.kept_dtype),
        WeightDType::Fp8E4m3fn | WeightDType::Fp8E4m3fnFast => Ok(Some(DType::F8E4M3)),
        WeightDType::Fp8E5m2 => Err(NodeError::Argument {
            name: "weight_dtype".into(),
            problem: "fp8_e5m2 weights cannot be kept here: choose fp8_e4m3fn (the same memory and transfers), or \
                      default (a file stored in e5m2 is read exactly and runs in the device's dtype)"
                .into(),
        }),
    }
}

impl NodeType for UNetLoader {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let UNetFile {
            unet_name,
            weight_dtype,
        } = UNetFile::from_args(args)?;
        let model = unet_file::load(&ctx.files.model("unet_name", &unet_name)?)?;
        let kept = kept_dtype(weight_dtype, &model)?;
        let model = model
            .with_kept_dtype(kept)
            .with_eight_bit_products(weight_dtype == WeightDType::Fp8E4m3fnFast);
        Ok(vec![Value::Handle(Handle::new(SocketType::MODEL, Arc::new(model)))])
    }
}
