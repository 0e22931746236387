//! How many floating-point operations one forward pass does, counted over the layout as
//! PyTorch's `torch.utils.flop_counter` counts them (two per multiply-add of every convolution,
//! matrix product and attention product; norms, activations and additions left out), so that a
//! step's time can be read against the card's tensor-core peak and held beside PyTorch's.

use super::layout::{context_steps, layout, Op};
use super::UNetConfig;

impl UNetConfig {
    /// FLOPs of one sampling step's forward pass over `batch` latents of `height` x `width`
    /// attending to `context_tokens` tokens of conditioning (77 a prompt window). The projections
    /// of the conditioning to the cross-attention's keys and values are left out: they run once
    /// per conditioning ([`UNetConfig::context_flops`]), where PyTorch runs them in every pass.
    pub fn step_flops(&self, batch: usize, height: usize, width: usize, context_tokens: usize) -> u64 {
        let batch = batch as u64;
        // 2 m k n for an [m, k] x [k, n] product; a convolution is one per output position.
        let product = |m: u64, k: u64, n: u64| 2 * m * k * n;
        let conv = |c_in: usize, c_out: usize, kernel: u64, (h, w): (u64, u64)| {
            product(batch * h * w, c_in as u64 * kernel * kernel, c_out as u64)
        };
        let time = self.time_embed_dim() as u64;
        let steps = layout(self);
        // The resolution each skip connection was saved at: an upsample returns to the next one's.
        let mut skips = Vec::new();
        let mut size = (height as u64, width as u64);
        let mut flops = 0;
        for step in &steps {
            let pixels = batch * size.0 * size.1;
            flops += match step.op {
                Op::Stem => {
                    skips.push(size);
                    let first = self.block_out_channels[0];
                    conv(self.in_channels, first, 3, size)
                        + product(batch, first as u64, time)
                        + product(batch, self.added_condition_dim() as u64, time)
                        + 2 * product(batch, time, time)
                }
                Op::Resnet {
                    cfg,
                    pop_skip,
                    push_skip,
                } => {
                    if pop_skip {
                        skips.pop();
                    }
                    if push_skip {
                        skips.push(size);
                    }
                    let shortcut = match cfg.in_channels == cfg.out_channels {
                        true => 0,
                        false => conv(cfg.in_channels, cfg.out_channels, 1, size),
                    };
                    conv(cfg.in_channels, cfg.out_channels, 3, size)
                        + conv(cfg.out_channels, cfg.out_channels, 3, size)
                        + product(batch, time, cfg.out_channels as u64)
                        + shortcut
                }
                Op::TransformerIn { channels } => product(pixels, channels as u64, channels as u64),
                Op::TransformerOut { channels, push_skip } => {
                    if push_skip {
                        skips.push(size);
                    }
                    product(pixels, channels as u64, channels as u64)
                }
                Op::Block { channels, heads, .. } => {
                    let (c, head_dim) = (channels as u64, (channels / heads) as u64);
                    let queries = size.0 * size.1;
                    // Self-attention's q, k, v and out, cross-attention's q and out (its keys and
                    // values are the context's, counted below) and GEGLU's two products.
                    let projections = 6 * product(pixels, c, c) + product(pixels, c, 8 * c) + product(pixels, 4 * c, c);
                    let attention = |keys: u64| 4 * batch * heads as u64 * queries * keys * head_dim;
                    projections + attention(queries) + attention(context_tokens as u64)
                }
                Op::Downsample { channels } => {
                    size = (size.0.div_ceil(2), size.1.div_ceil(2));
                    skips.push(size);
                    conv(channels, channels, 3, size)
                }
                Op::Upsample { channels } => {
                    size = skips.last().copied().unwrap_or((size.0 * 2, size.1 * 2));
                    conv(channels, channels, 3, size)
                }
                Op::Head => conv(self.block_out_channels[0], self.out_channels, 3, size),
                Op::ContextProjection { .. } => 0,
            };
        }
        flops
    }

    /// FLOPs of projecting `batch` conditionings of `context_tokens` tokens to every
    /// cross-attention layer's keys and values.
    pub fn context_flops(&self, batch: usize, context_tokens: usize) -> u64 {
        let tokens = (batch * context_tokens) as u64;
        context_steps(&layout(self))
            .iter()
            .map(|step| match step.op {
                Op::ContextProjection { channels, .. } => {
                    2 * 2 * tokens * self.cross_attention_dim as u64 * channels as u64
                }
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::UNetConfig;

    /// `torch.utils.flop_counter`'s count for diffusers' `UNet2DConditionModel` at SDXL's config,
    /// two latents of 128 x 128 and one prompt window (`bench/diffusers_baseline.py` on a GPU,
    /// BENCHMARKS.md): the count the step's tensor-core figures are measured against.
    #[test]
    fn sdxl_at_1024_does_what_pytorch_counts() {
        let sdxl = UNetConfig::sdxl();
        let forward = sdxl.step_flops(2, 128, 128, 77) + sdxl.context_flops(2, 77);
        assert_eq!(forward, 13_522_472_796_160);
    }

    #[test]
    fn flops_grow_with_the_image_and_the_batch() {
        let sdxl = UNetConfig::sdxl();
        let one = sdxl.step_flops(1, 64, 64, 77);
        assert_eq!(sdxl.step_flops(2, 64, 64, 77), 2 * one, "every product is per latent");
        assert_eq!(sdxl.context_flops(2, 77), 2 * sdxl.context_flops(1, 77));
        // Convolutions and projections grow 4x with the pixels, self-attention 16x.
        let four_times_the_pixels = sdxl.step_flops(1, 128, 128, 77);
        assert!(four_times_the_pixels > 4 * one && four_times_the_pixels < 16 * one);
    }
}
