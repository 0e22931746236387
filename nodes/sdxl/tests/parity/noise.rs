//! ComfyUI's noise for a seed, against PyTorch's own `torch.manual_seed` + `torch.randn` on the
//! CPU: latents of 16 values or more, a count no multiple of 16, fewer than 16, and a seed past
//! 32 bits; two draws from one generator.

use crate::fixture;
use candle_core::{DType, Device};
use swapgraph_sdxl::sampling::TorchNoise;

#[test]
fn a_seed_gives_pytorchs_cpu_noise() {
    let cases = candle_core::safetensors::load(fixture("noise_cases.safetensors"), &Device::Cpu).unwrap();
    let mut checked = 0;
    for index in 0.. {
        let Some(seed) = cases.get(&format!("case{index}.seed")) else {
            break;
        };
        let halves = seed.to_vec1::<i64>().unwrap();
        let seed = ((halves[0] as u64) << 32) | halves[1] as u64;
        let mut noise = TorchNoise::new(seed);
        for draw in ["first", "second"] {
            let expected = &cases[&format!("case{index}.{draw}")];
            let ours = noise.tensor(expected.dims(), &Device::Cpu).unwrap();
            let difference = (ours - expected.to_dtype(DType::F32).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                difference < 1e-5,
                "seed {seed}, {draw} draw of {:?}: {difference}",
                expected.dims()
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
}
