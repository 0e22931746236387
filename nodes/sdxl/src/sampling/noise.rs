//! Seeded Gaussian noise that is the same for a seed on every run and every device: drawn on
//! the host from ChaCha8, then moved to the device.

use super::samplers::NoiseSource;
use candle_core::{Device, Result, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A stream of standard-normal tensors from one seed.
pub struct SeededNoise {
    rng: ChaCha8Rng,
}

impl SeededNoise {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next `shape`-shaped tensor of noise on `device`, in f32.
    ///
    /// # Errors
    /// A device error.
    pub fn tensor(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count).map(|_| StandardNormal.sample(&mut self.rng)).collect();
        Tensor::from_vec(values, shape, &Device::Cpu)?.to_device(device)
    }
}

impl NoiseSource for SeededNoise {
    fn noise_like(&mut self, like: &Tensor) -> Result<Tensor> {
        self.tensor(like.dims(), like.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_noise_every_time() {
        let a = SeededNoise::new(42)
            .tensor(&[2, 3], &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let b = SeededNoise::new(42)
            .tensor(&[2, 3], &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let c = SeededNoise::new(43)
            .tensor(&[2, 3], &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
