//! The whole UNet on the GPU in f16 against the CPU in f32, at widths every kernel takes (heads
//! of 64, groups of two and four channels): the images stay channels-last from the stem's first
//! convolution to the head, through GroupNorm, the skips' joins, the ControlNet residuals'
//! sums, up-sampling and the transformers' ends, and must give the CPU's result.

use super::{ControlResiduals, UNet, UNetInput};
use crate::gpu_fixtures::{kernel_sized_unet, randn, stores, SeededInputs};
use crate::kernels::cuda::error_of_largest_value;
use candle_core::{DType, Device, Result, Tensor};
use swapgraph_model::ResidentStore;

const MODEL: &str = "UNet on the GPU";

#[test]
fn the_unet_on_the_gpu_matches_the_cpu_f32_reference() -> Result<()> {
    let cfg = kernel_sized_unet();
    let unet = UNet::new(cfg.clone())?;
    let gpu = Device::new_cuda(0)?;
    let (cpu_store, gpu_store) = stores(MODEL, unet.units(), &gpu)?;
    let inputs = SeededInputs::new(MODEL, &cfg, 32, 8)?;
    // ControlNet residuals of a tenth of a unit, one per skip connection and the middle.
    let widths = [64, 64, 64, 64, 64, 64, 64, 128, 128];
    let sizes = [32, 32, 32, 16, 16, 16, 8, 8, 8];
    let down = widths
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (&c, s))| randn(MODEL, &format!("down {i}"), &[2, c, s, s])? * 0.1)
        .collect::<Result<Vec<_>>>()?;
    let mid = (randn(MODEL, "mid", &[2, 128, 8, 8])? * 0.1)?;

    let run = |store: &ResidentStore, device: &Device, dtype: DType, with_control: bool| -> Result<Tensor> {
        let to = |t: &Tensor| t.to_dtype(dtype)?.to_device(device);
        let control = ControlResiduals {
            down: down.iter().map(to).collect::<Result<_>>()?,
            mid: to(&mid)?,
        };
        let inputs = inputs.on(device, dtype)?;
        let input = UNetInput {
            control: with_control.then_some(&control),
            ..inputs.input()
        };
        unet.forward(store, &input)
    };
    for with_control in [false, true] {
        let expected = run(&cpu_store, &Device::Cpu, DType::F32, with_control)?;
        let out = run(&gpu_store, &gpu, DType::F16, with_control)?;
        assert_eq!(out.dims(), expected.dims());
        let error = error_of_largest_value(&out, &expected)?;
        assert!(error < 2e-2, "ControlNet residuals {with_control}: error {error}");
    }
    Ok(())
}
