//! `VAEDecode` and `VAEDecodeTiled`: latents to images.

use super::out_of_memory::explain_vae_decode;
use super::tensor_error;
use crate::device::{candle_device, vae_dtype};
use crate::measured::Measured;
use crate::vae::{decode_tiled, CoderCost, DecodePlan, Vae, VaeModel, MIN_TILE, TILE_OVERLAP};
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;
use std::time::{Duration, Instant};
use swapgraph_model::{device_memory, is_out_of_memory, memory_manager, Image, Latent};
use swapgraph_node_api::{
    Args, DeviceNeed, Handle, NodeDescriptor, NodeError, NodeType, Params, Rehearsal, RunContext, SocketType, Value,
};

/// Decodes latents with the VAE (in bf16 or f32: SDXL's VAE overflows in f16), whole or in tiles.
pub struct VaeDecode {
    descriptor: NodeDescriptor,
    tiled: bool,
}

/// `VAEDecodeTiled`'s tiles.
#[derive(Params)]
struct Tiles {
    /// Tile width and height in pixels (a multiple of 8).
    #[param(default = 512, min = 64, max = 4096)]
    tile_size: usize,
    /// Overlap between tiles in pixels, blended smoothly.
    #[param(default = 64, max = 4096)]
    overlap: usize,
}

impl VaeDecode {
    /// `VAEDecode`.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "VAEDecode",
            "latent",
            "Turns latents into images: in one piece when that fits in the device memory the run has left, \
             else in the largest overlapping tiles that do, blended so that seams do not show.",
        )
        .uses_device()
        .input("samples", SocketType::LATENT, "The latents.")
        .input("vae", SocketType::VAE, "The VAE.")
        .output(SocketType::IMAGE, "The images.");
        Self {
            descriptor,
            tiled: false,
        }
    }

    /// `VAEDecodeTiled`.
    pub fn tiled() -> Self {
        let descriptor = NodeDescriptor::new(
            "VAEDecodeTiled",
            "latent",
            "Turns latents into images tile by tile, in tiles of a size you choose.",
        )
        .uses_device()
        .input("samples", SocketType::LATENT, "The latents.")
        .input("vae", SocketType::VAE, "The VAE.")
        .params::<Tiles>()
        .output(SocketType::IMAGE, "The images.");
        Self {
            descriptor,
            tiled: true,
        }
    }

    /// What decoding `batch` latents of `h` by `w` needs of `device`: the VAE's weights and its
    /// working memory, measured with the VAE there, in one piece at the most and in the smallest
    /// tiles (or the given ones) at the least; `None` where the device reports no memory.
    fn decode_need(
        &self,
        args: &Args,
        ctx: &RunContext,
        device: &Device,
        (batch, h, w): (usize, usize, usize),
    ) -> Result<Option<DeviceNeed>, NodeError> {
        let tile = match self.tiled {
            true => Self::given_tiles(args)?.0,
            false => MIN_TILE,
        };
        let vae_model = args.handle::<VaeModel>("vae")?;
        let size = (w * 8, h * 8);
        let vae = vae_model
            .get(device, ctx.vram_budget)
            .map_err(|e| explain_vae_decode(e.to_string(), size, None, device))?;
        let Some(cost) = decode_cost(&vae, device, ctx, size)? else {
            return Ok(None);
        };
        let weights = vae_model.bytes(device);
        let tiled = weights + cost.bytes((batch, tile.min(h), tile.min(w)));
        let whole = weights + cost.bytes((batch, h, w));
        Ok(Some(DeviceNeed {
            least: tiled.min(whole),
            unconstrained: if self.tiled { tiled } else { whole },
            detail: format!(
                "the VAE ({} MiB) decoding {}x{}, in tiles of {} pixels at the least",
                weights >> 20,
                w * 8,
                h * 8,
                tile * 8
            ),
        }))
    }

    /// The tiles `VAEDecodeTiled` was given, in latent pixels.
    fn given_tiles(args: &Args) -> Result<(usize, usize), NodeError> {
        let Tiles { tile_size, overlap } = Tiles::from_args(args)?;
        if overlap >= tile_size {
            return Err(NodeError::msg(format!(
                "overlap {overlap} must be smaller than tile_size {tile_size}"
            )));
        }
        Ok((tile_size / 8, overlap / 8))
    }
}

/// The decoder's working memory on `device`, measured (for an image of `size` pixels, which
/// errors name); `None` on the CPU.
fn decode_cost(
    vae: &Vae,
    device: &Device,
    ctx: &RunContext,
    size: (usize, usize),
) -> Result<Option<CoderCost>, NodeError> {
    let coder = format!("decoder of {:?} in {:?}", vae.config(), vae_dtype(device));
    coder_cost(device, ctx, coder, || {
        CoderCost::measure_decoder(vae, device, vae_dtype(device))
    })
    .map_err(|e| explain_vae_decode(e.to_string(), size, Some(MIN_TILE * 8), device))
}

/// A coder's working memory on `device` as `measure` finds it, measured once per `coder` (a VAE's
/// sizes and which half) and device in a process, so the run reuses what the check before it
/// measured; `None` on the CPU. The probes are small; when even they do not fit beside the idle
/// models, those leave the device first.
pub(super) fn coder_cost(
    device: &Device,
    ctx: &RunContext,
    coder: String,
    measure: impl Fn() -> candle_core::Result<Option<CoderCost>>,
) -> candle_core::Result<Option<CoderCost>> {
    static COSTS: Measured<CoderCost> = Measured::new("vae-coder-cost");
    let Some(manager) = memory_manager(device, ctx.vram_budget) else {
        return Ok(None);
    };
    COSTS.get_or_measure(device, &coder, || match measure() {
        Err(e) if is_out_of_memory(&e.to_string()) => {
            manager.make_room(u64::MAX, &[]);
            measure()
        }
        other => other,
    })
}

/// How `VAEDecode` splits a `latent` (batch, height, width) on `device`: measured and planned against the
/// room the run's budget leaves, after other models left the device to make it; whole on the CPU.
fn fitted_tiles(
    vae: &Vae,
    device: &Device,
    ctx: &RunContext,
    latent: (usize, usize, usize),
) -> Result<Option<(usize, usize)>, NodeError> {
    let Some(manager) = memory_manager(device, ctx.vram_budget) else {
        return Ok(None);
    };
    let (_, h, w) = latent;
    let Some(cost) = decode_cost(vae, device, ctx, (w * 8, h * 8))? else {
        return Ok(None);
    };
    let room = manager.make_room(cost.bytes(latent), &[]);
    let gib = |bytes: u64| format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30));
    match cost.plan(latent, room) {
        Ok(DecodePlan::Whole) => Ok(None),
        Ok(DecodePlan::Tiles(tile)) => {
            tracing::info!(
                "{}: decoding {}x{} in tiles of {} pixels: the whole image needs {} and the run's budget leaves {}",
                ctx.node_id,
                w * 8,
                h * 8,
                tile * 8,
                gib(cost.bytes(latent)),
                gib(room)
            );
            Ok(Some((tile, TILE_OVERLAP)))
        }
        Err(least) => Err(NodeError::msg(format!(
            "cannot decode {}x{}: even in tiles of {} pixels the VAE needs {} beside its weights, and the run's \
             device budget leaves {}; raise --vram-budget, or free device memory held by other processes",
            w * 8,
            h * 8,
            MIN_TILE * 8,
            gib(least),
            gib(room)
        ))),
    }
}

/// Where a decode's time went, for the log: the VAE's weights brought to the device, then the
/// decode of an image of `size` pixels, whole or in tiles of `tile_size` pixels (the device
/// synchronised after each, so queued work counts where it ran).
fn describe_times(
    weights_ready: Duration,
    decoding: Duration,
    size: (usize, usize),
    tile_size: Option<usize>,
) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let how = match tile_size {
        Some(tile) => format!("in tiles of {tile} pixels"),
        None => "whole".to_string(),
    };
    format!(
        "VAE weights ready in {:.0} ms; {}x{} decoded {how} in {:.1} ms",
        ms(weights_ready),
        size.0,
        size.1,
        ms(decoding)
    )
}

impl NodeType for VaeDecode {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let latent = args.handle::<Latent>("samples")?;
        let device = candle_device(ctx.device)?;
        let (batch, _, h, w) = latent.samples.dims4().map_err(tensor_error)?;
        let size = (w * 8, h * 8);
        let started = Instant::now();
        let vae = args
            .handle::<VaeModel>("vae")?
            .get(&device, ctx.vram_budget)
            .map_err(|e| explain_vae_decode(e.to_string(), size, None, &device))?;
        device.synchronize().map_err(tensor_error)?;
        let weights_ready = started.elapsed();
        let tiles = match self.tiled {
            true => Some(Self::given_tiles(args)?),
            false => fitted_tiles(&vae, &device, ctx, (batch, h, w))?,
        };
        let decode = || -> candle_core::Result<Image> {
            let latents = latent.samples.to_device(&device)?.to_dtype(vae_dtype(&device))?;
            let images = match tiles {
                Some((tile, overlap)) => decode_tiled(&vae, &latents, tile, overlap)?,
                None => vae.decode(&latents)?,
            }
            .to_dtype(DType::F32)?;
            let pixels = ((images + 1.0)? / 2.0)?
                .clamp(0.0, 1.0)?
                .permute((0, 2, 3, 1))?
                .contiguous()?;
            device.synchronize()?;
            Ok(Image { pixels })
        };
        let tile_size = tiles.map(|(tile, _)| tile * 8);
        let decoding = Instant::now();
        let image = decode().map_err(|e| explain_vae_decode(e.to_string(), size, tile_size, &device))?;
        tracing::info!(
            "{}: {}",
            ctx.node_id,
            describe_times(weights_ready, decoding.elapsed(), size, tile_size)
        );
        Ok(vec![Value::Handle(Handle::new(SocketType::IMAGE, Arc::new(image)))])
    }

    /// Stands in with a black image of the decoded size and says what the decode needs.
    fn rehearse(&self, args: &Args, ctx: &RunContext) -> Result<Rehearsal, NodeError> {
        let latent = args.handle::<Latent>("samples")?;
        let device = candle_device(ctx.device)?;
        let (batch, _, h, w) = latent.samples.dims4().map_err(tensor_error)?;
        let black = Tensor::zeros((batch, h * 8, w * 8, 3), DType::F32, &Device::Cpu).map_err(tensor_error)?;
        let outputs = vec![Value::Handle(Handle::new(
            SocketType::IMAGE,
            Arc::new(Image { pixels: black }),
        ))];
        let need = match device_memory(&device) {
            Some(_) => self.decode_need(args, ctx, &device, (batch, h, w))?,
            None => None,
        };
        Ok(Rehearsal::StoodIn { outputs, need })
    }
}

#[cfg(test)]
mod tests {
    use super::describe_times;
    use std::time::Duration;

    #[test]
    fn decode_times_say_how_the_image_was_decoded() {
        let (weights, decode) = (Duration::from_millis(85), Duration::from_micros(179_240));
        assert_eq!(
            describe_times(weights, decode, (1024, 768), None),
            "VAE weights ready in 85 ms; 1024x768 decoded whole in 179.2 ms"
        );
        assert_eq!(
            describe_times(weights, decode, (1024, 768), Some(512)),
            "VAE weights ready in 85 ms; 1024x768 decoded in tiles of 512 pixels in 179.2 ms"
        );
    }
}
