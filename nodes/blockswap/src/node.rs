//! The `BlockSwap` node: a MODEL in, the same MODEL out, with its weights set to stream.

use crate::placement::BlockSwapPlacement;
use crate::plan::{plan, PlanError};
use crate::preset;
use crate::report::plan_report;
use crate::settings::{Granularity, SwapSettings};
use std::sync::Arc;
use swapgraph_model::{candle_device, weight_dtype, ModelHandle};
use swapgraph_node_api::{
    Args, Choice, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value,
};

/// Streams a model's weights between host and device memory while it runs.
pub struct BlockSwap {
    descriptor: NodeDescriptor,
}

/// What streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
enum Target {
    /// The UNet.
    Unet,
    /// The ControlNets the conditioning carries.
    Controlnet,
    /// Both.
    Both,
}

/// BlockSwap's params: the original node's controls, then how weights move, a budget, the
/// target and a preset.
#[derive(Params)]
struct BlockSwapParams {
    /// Blocks to swap in each enabled section, largest first (SDXL has 3 down, 1 middle, 3 up blocks).
    #[param(default = 2, max = 8)]
    blocks_to_swap: usize,
    /// Swap down blocks.
    #[param(default = true)]
    swap_down: bool,
    /// Swap the middle block.
    #[param(default = true)]
    swap_mid: bool,
    /// Swap up blocks.
    #[param(default = true)]
    swap_up: bool,
    /// Copy on a side stream from page-locked memory while the previous unit computes.
    #[param(default = true)]
    non_blocking: bool,
    /// Report the memory summary and per-unit transfer times.
    #[param(default = false)]
    debug: bool,
    /// unit: each resnet and transformer block streams on its own through a small device ring; block: whole
    /// blocks, as the original BlockSwap, with room for the largest swapped block.
    #[param(default = Granularity::Unit)]
    granularity: Granularity,
    /// Device ring for streamed units, in largest units beyond the one computing; smaller units pack into it
    /// and run further ahead (unit granularity). A bigger ring copies more while the high-resolution blocks
    /// compute: 4-6 brings a full SDXL swap near the bus's limit. With vram_budget_mb this is the least the
    /// ring gets: it takes whatever the budget leaves after the resident weights.
    #[param(default = 1, max = 16)]
    prefetch: usize,
    /// Device memory for weights in MiB; when given it decides what is swapped, overriding the block counts:
    /// high-resolution units first (the stem and head with them), then units spread evenly through the deep
    /// blocks so their transfers hide behind the resident ones. Left out, the block counts decide, within
    /// what the run's budget leaves at the sampler.
    #[param(min = 1, max = 1 << 30)]
    vram_budget_mb: Option<u64>,
    /// What streams: the UNet, the ControlNets the conditioning carries (InstantID's IdentityNet;
    /// each of a chain with the same settings), or both.
    #[param(default = Target::Unet)]
    target: Target,
    /// A preset JSON file inside the input folder (--input-dir) with the keys enable_blockswap,
    /// blockswap_blocks, blockswap_down, blockswap_mid, blockswap_up, blockswap_nonblocking,
    /// blockswap_debug; its values override the params. Left out, none.
    #[param(reads = Inputs)]
    preset: Option<Arc<str>>,
}

impl BlockSwap {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "BlockSwap",
            "model",
            "Keeps part of the UNet's weights in host memory and streams them to the device as the model runs, \
             so SDXL fits small GPUs. The text's cross-attention keys and values are projected once per sampling \
             run, so those weights stay in host memory and out of every step. Bypass or remove the node to keep \
             every weight on the device.",
        )
        .input("model", SocketType::MODEL, "The model to stream.")
        .params::<BlockSwapParams>()
        .output(SocketType::MODEL, "The model, streaming.");
        Self { descriptor }
    }
}

impl NodeType for BlockSwap {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let model = args.handle::<ModelHandle>("model")?;
        let params = BlockSwapParams::from_args(args)?;
        let settings = SwapSettings {
            blocks_to_swap: params.blocks_to_swap,
            swap_down: params.swap_down,
            swap_mid: params.swap_mid,
            swap_up: params.swap_up,
            non_blocking: params.non_blocking,
            granularity: params.granularity,
            prefetch: params.prefetch,
            vram_budget_mb: params.vram_budget_mb,
            debug: params.debug,
        };
        let (enabled, settings) = match &params.preset {
            None => (true, settings),
            Some(path) => {
                let preset = preset::read(&ctx.files.input("preset", path)?, settings)
                    .map_err(|e| NodeError::msg(e.to_string()))?;
                (preset.enabled, preset.settings)
            }
        };
        let passthrough = vec![Value::Handle(Handle::new(SocketType::MODEL, Arc::clone(&model)))];
        if !enabled {
            tracing::info!(
                "{}: BlockSwap disabled by its preset; the model stays resident",
                ctx.node_id
            );
            return Ok(passthrough);
        }
        let mut streaming = (*model).clone();
        if params.target != Target::Controlnet {
            plan_for_node(&model, &settings, ctx)?;
            streaming = streaming.with_placement(Arc::new(BlockSwapPlacement::new(settings)));
        }
        if params.target != Target::Unet {
            tracing::info!(
                "{}: BlockSwap streams the ControlNets the conditioning carries; their plans are made when sampling starts",
                ctx.node_id
            );
            streaming = streaming.with_companion_placement(Arc::new(BlockSwapPlacement::new(settings)));
        }
        Ok(vec![Value::Handle(Handle::new(SocketType::MODEL, Arc::new(streaming)))])
    }
}

/// Plans `model`'s units now, so a bad setting fails at the node, and logs (and with `debug`
/// publishes) what will stream.
fn plan_for_node(model: &ModelHandle, settings: &SwapSettings, ctx: &RunContext) -> Result<(), NodeError> {
    let units = model.network.units();
    if units.is_empty() {
        let error = PlanError::NoUnits {
            model: model.name.clone(),
            kind: model.network.kind().to_string(),
        };
        return Err(NodeError::msg(error.to_string()));
    }
    let device = candle_device(ctx.device)?;
    // Planned in the bytes the weights are kept in (8-bit weights stream half of f16's, Q4_K
    // blocks about a quarter).
    let compute = weight_dtype(&device);
    let kept = model.dtypes(compute).kept;
    let swap_plan = plan(&model.kept_units(compute), kept, settings).map_err(|e| NodeError::msg(e.to_string()))?;
    tracing::info!(
        "{}: BlockSwap streams {} of {} units ({}), {} of weights stay on the device",
        ctx.node_id,
        swap_plan.swapped_units(),
        swap_plan.pass_units,
        swap_plan.swapped_blocks.join(", "),
        crate::report::mib(swap_plan.device_bytes() as f64)
    );
    if settings.debug {
        ctx.reporter.memory(plan_report(&swap_plan, settings, kept));
    }
    Ok(())
}
