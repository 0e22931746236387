//! A whole ControlNet on the GPU in f16 against the CPU in f32, at widths every kernel takes:
//! the hint's embedding and the zero convolutions run cuDNN's convolutions with the images
//! channels-last between them, and every residual must match the CPU's.

use super::{ControlNet, ControlNetConfig, EmbeddedHint, Hint};
use crate::gpu_fixtures::{kernel_sized_unet, randn, stores, SeededInputs};
use crate::kernels::cuda::error_of_largest_value;
use candle_core::{DType, Device, Result};
use swapgraph_model::ResidentStore;

const MODEL: &str = "ControlNet on the GPU";

#[test]
fn the_controlnet_on_the_gpu_matches_the_cpu_f32_reference() -> Result<()> {
    let cfg = ControlNetConfig {
        unet: kernel_sized_unet(),
        conditioning_channels: 3,
        embedding_channels: vec![16, 16, 32, 32],
    };
    let controlnet = ControlNet::new(cfg.clone())?;
    let gpu = Device::new_cuda(0)?;
    let (cpu_store, gpu_store) = stores(MODEL, &controlnet.units, &gpu)?;
    let latent = 32;
    let inputs = SeededInputs::new(MODEL, &cfg.unet, latent, 16)?;
    let hint = (randn(MODEL, "hint", &[2, 3, 8 * latent, 8 * latent])?.abs()? * 0.5)?;

    let run = |store: &ResidentStore, device: &Device, dtype: DType| {
        let image = || hint.to_dtype(dtype)?.to_device(device);
        let hint = Hint {
            image: &image,
            embedded: &EmbeddedHint::default(),
        };
        controlnet.forward(store, &inputs.on(device, dtype)?.input(), &hint, 0.8)
    };
    let expected = run(&cpu_store, &Device::Cpu, DType::F32)?;
    let out = run(&gpu_store, &gpu, DType::F16)?;
    assert_eq!(out.down.len(), expected.down.len());
    for (i, (out, expected)) in out.down.iter().zip(&expected.down).enumerate() {
        assert_eq!(out.dims(), expected.dims());
        let error = error_of_largest_value(out, expected)?;
        assert!(error < 2e-2, "down residual {i}: error {error}");
    }
    let error = error_of_largest_value(&out.mid, &expected.mid)?;
    assert!(error < 2e-2, "middle residual: error {error}");
    Ok(())
}
