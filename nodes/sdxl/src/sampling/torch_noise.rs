//! The noise ComfyUI draws for a seed: PyTorch's CPU generator (a Mersenne Twister seeded with
//! the seed's low 32 bits) and `torch.randn`'s way of turning its numbers into normal samples,
//! so that a seed shared by a ComfyUI user gives the same starting noise here.

use super::brownian_tree::BrownianTree;
use super::samplers::NoiseSource;
use candle_core::{Device, Result, Tensor};

const STATE: usize = 624;
const SHIFT: usize = 397;

/// The 32-bit Mersenne Twister (MT19937) as PyTorch's CPU generator runs it.
struct Mt19937 {
    state: [u32; STATE],
    next: usize,
}

impl Mt19937 {
    /// Seeded as `torch.manual_seed(seed)` seeds the CPU generator: with the seed's low 32 bits.
    fn new(seed: u64) -> Self {
        let mut state = [0u32; STATE];
        state[0] = seed as u32;
        for j in 1..STATE {
            state[j] = 1_812_433_253u32
                .wrapping_mul(state[j - 1] ^ (state[j - 1] >> 30))
                .wrapping_add(j as u32);
        }
        Self { state, next: STATE }
    }

    fn next_u32(&mut self) -> u32 {
        if self.next >= STATE {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn twist(&mut self) {
        for i in 0..STATE {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % STATE] & 0x7fff_ffff);
            let mut next = self.state[(i + SHIFT) % STATE] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.next = 0;
    }

    /// A uniform float in [0, 1) from 24 bits, as `uniform_real_distribution<float>` makes it.
    fn uniform_f32(&mut self) -> f32 {
        (f64::from(self.next_u32() & 0x00ff_ffff) / f64::from(1u32 << 24)) as f32
    }

    /// A uniform double in [0, 1) from 53 bits of two draws, the first the high half.
    fn uniform_f64(&mut self) -> f64 {
        let high = u64::from(self.next_u32());
        let low = u64::from(self.next_u32());
        (((high << 32) | low) & ((1u64 << 53) - 1)) as f64 / (1u64 << 53) as f64
    }
}

/// Standard-normal f32 samples in `torch.randn`'s order on the CPU: for 16 or more values, all
/// uniforms first, then Box-Muller on each block of 16 (the first 8 with the last 8), the last
/// block redrawn when the count is not a multiple of 16; for fewer, one double-precision
/// Box-Muller pair per two values.
fn randn(engine: &mut Mt19937, count: usize) -> Vec<f32> {
    if count < 16 {
        return randn_short(engine, count);
    }
    let mut data: Vec<f32> = (0..count).map(|_| engine.uniform_f32()).collect();
    for block in data.chunks_exact_mut(16) {
        box_muller_16(block);
    }
    if count % 16 != 0 {
        let tail = &mut data[count - 16..];
        for value in tail.iter_mut() {
            *value = engine.uniform_f32();
        }
        box_muller_16(tail);
    }
    data
}

fn box_muller_16(block: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * f64::from(u2);
        block[j] = (f64::from(radius) * theta.cos()) as f32;
        block[j + 8] = (f64::from(radius) * theta.sin()) as f32;
    }
}

fn randn_short(engine: &mut Mt19937, count: usize) -> Vec<f32> {
    let mut values = Vec::with_capacity(count);
    while values.len() < count {
        let u1 = engine.uniform_f64();
        let u2 = engine.uniform_f64();
        let radius = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        values.push((radius * theta.cos()) as f32);
        if values.len() < count {
            values.push((radius * theta.sin()) as f32);
        }
    }
    values
}

/// `torch.randn(count)` from a generator just seeded with `seed`.
pub(super) fn randn_values(seed: u64, count: usize) -> Vec<f32> {
    randn(&mut Mt19937::new(seed), count)
}

/// A stream of standard-normal tensors as ComfyUI draws them for a seed: each from PyTorch's
/// CPU generator seeded with it, continuing the stream.
pub struct TorchNoise {
    engine: Box<Mt19937>,
}

impl TorchNoise {
    /// The stream `torch.manual_seed(seed)` starts.
    pub fn new(seed: u64) -> Self {
        Self {
            engine: Box::new(Mt19937::new(seed)),
        }
    }

    /// The next `shape`-shaped tensor of noise on `device` (`torch.randn(shape)`), in f32.
    ///
    /// # Errors
    /// A device error.
    pub fn tensor(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let values = randn(&mut self.engine, shape.iter().product());
        Tensor::from_vec(values, shape, &Device::Cpu)?.to_device(device)
    }
}

impl NoiseSource for TorchNoise {
    fn noise_like(&mut self, like: &Tensor) -> Result<Tensor> {
        self.tensor(like.dims(), like.device())
    }
}

/// The samplers' own noise as ComfyUI draws it on the CPU for a seed: ancestral steps from a
/// generator seeded with the seed plus one (its `default_noise_sampler`), SDE steps from a
/// Brownian tree over the schedule's sigmas seeded with the seed (its
/// `BrownianTreeNoiseSampler`).
pub struct ComfyUiStepNoise {
    seed: u64,
    ancestral: TorchNoise,
    /// The tree, with the span and shape it was made for.
    tree: Option<(TreeSpan, BrownianTree)>,
}

/// What a Brownian tree is made for: the schedule's smallest positive and largest sigma (as
/// float32), and the noise's shape.
type TreeSpan = (f32, f32, Vec<usize>);

impl ComfyUiStepNoise {
    /// The noise for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            ancestral: TorchNoise::new(seed.wrapping_add(1)),
            tree: None,
        }
    }
}

impl NoiseSource for ComfyUiStepNoise {
    fn noise_like(&mut self, like: &Tensor) -> Result<Tensor> {
        self.ancestral.noise_like(like)
    }

    fn brownian(&mut self, like: &Tensor, sigmas: &[f64], sigma: f64, next: f64) -> Result<Tensor> {
        // ComfyUI's tree spans the schedule's smallest positive sigma to its largest, as float32.
        let low = sigmas
            .iter()
            .copied()
            .filter(|&s| s > 0.0)
            .fold(f64::INFINITY, f64::min) as f32;
        let high = sigmas.iter().copied().fold(0.0, f64::max) as f32;
        let key = (low, high, like.dims().to_vec());
        if self.tree.as_ref().is_none_or(|(made_for, _)| *made_for != key) {
            let tree = BrownianTree::new(f64::from(low), f64::from(high), like.elem_count(), self.seed);
            self.tree = Some((key, tree));
        }
        let Some((_, tree)) = self.tree.as_mut() else {
            return self.noise_like(like);
        };
        let values = tree.noise(sigma as f32, next as f32);
        Tensor::from_vec(values, like.dims(), &Device::Cpu)?.to_device(like.device())
    }
}

/// Which noise a seed draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, swapgraph_node_api::Choice)]
pub enum SeedNoise {
    /// PyTorch's CPU generator, as ComfyUI draws it: the starting noise, the ancestral samplers'
    /// noise from a second generator seeded with the seed plus one, and the SDE samplers' from a
    /// Brownian tree; a seed gives the noise it gives there.
    #[choice(name = "comfyui")]
    ComfyUi,
    /// ChaCha8 drawn on the host, one stream for the starting noise and the samplers' noise.
    #[choice(name = "chacha8")]
    ChaCha8,
}

impl SeedNoise {
    /// The starting noise of `shape` on `device` for `seed` (for latents numbered `batch_index`
    /// in the batch they were taken from, each gets its number's), and the source the sampler
    /// draws its own noise from.
    ///
    /// # Errors
    /// A device error, or batch numbers that are not one per latent.
    pub fn draw(
        self,
        seed: u64,
        shape: &[usize],
        batch_index: Option<&[usize]>,
        device: &Device,
    ) -> Result<(Tensor, Box<dyn NoiseSource>)> {
        match self {
            SeedNoise::ComfyUi => {
                let mut stream = TorchNoise::new(seed);
                let start = starting_noise(&mut |shape| stream.tensor(shape, device), shape, batch_index)?;
                Ok((start, Box::new(ComfyUiStepNoise::new(seed))))
            }
            SeedNoise::ChaCha8 => {
                let mut stream = super::SeededNoise::new(seed);
                let start = starting_noise(&mut |shape| stream.tensor(shape, device), shape, batch_index)?;
                Ok((start, Box::new(stream)))
            }
        }
    }
}

/// ComfyUI's `prepare_noise`: without batch numbers the whole batch in one draw; with them, each
/// latent's noise drawn on its own in number order up to the largest, and each latent given its
/// number's (so a latent taken from a batch starts from the noise it had there).
fn starting_noise(
    draw: &mut dyn FnMut(&[usize]) -> Result<Tensor>,
    shape: &[usize],
    batch_index: Option<&[usize]>,
) -> Result<Tensor> {
    let Some(indices) = batch_index else {
        return draw(shape);
    };
    if indices.len() != shape.first().copied().unwrap_or(0) {
        candle_core::bail!(
            "the latents carry {} batch numbers for a batch of {}",
            indices.len(),
            shape.first().copied().unwrap_or(0)
        );
    }
    let one: Vec<usize> = std::iter::once(1).chain(shape[1..].iter().copied()).collect();
    let last = indices.iter().copied().max().unwrap_or(0);
    let drawn = (0..=last).map(|_| draw(&one)).collect::<Result<Vec<_>>>()?;
    let picked: Vec<&Tensor> = indices.iter().map(|&number| &drawn[number]).collect();
    Tensor::cat(&picked, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_latents_take_their_numbers_noise_and_numbers_must_match_the_batch() {
        let shape = [3, 4, 2, 2];
        let (whole, _) = SeedNoise::ComfyUi.draw(7, &shape, None, &Device::Cpu).unwrap();
        let (picked, _) = SeedNoise::ComfyUi
            .draw(7, &[2, 4, 2, 2], Some(&[2, 0]), &Device::Cpu)
            .unwrap();
        let row = |t: &Tensor, i: usize| t.get(i).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(row(&picked, 0), row(&whole, 2));
        assert_eq!(row(&picked, 1), row(&whole, 0));
        let error = SeedNoise::ComfyUi
            .draw(7, &shape, Some(&[0, 1]), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("2 batch numbers for a batch of 3"), "{error}");
    }

    #[test]
    fn the_generator_is_the_reference_mersenne_twister() {
        // The 10000th output of MT19937 seeded with 5489 (C++'s std::mt19937 check value).
        let mut engine = Mt19937::new(5489);
        let last = (0..10_000).map(|_| engine.next_u32()).last();
        assert_eq!(last, Some(4_123_659_995));
    }
}
