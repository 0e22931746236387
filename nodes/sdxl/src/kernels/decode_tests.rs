//! Weights kept as stored decode on the device to what the host decodes: every block type a
//! GGUF UNet may hold, to f16 and f32, from a view into a larger buffer (as BlockSwap's ring
//! hands them out).

use crate::kernels::cuda::max_relative_error;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Result, Shape, Tensor};
use swapgraph_model::{decode, Encoding};

#[test]
fn stored_blocks_decode_on_the_device_as_on_the_host() -> Result<()> {
    let gpu = Device::new_cuda(0)?;
    let values = (Tensor::randn(0f32, 1.0, (640, 1280), &Device::Cpu)? * 0.05)?;
    let kinds = [
        GgmlDType::Q8_0,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q6K,
        GgmlDType::Q5K,
        GgmlDType::Q4K,
        GgmlDType::Q3K,
        GgmlDType::Q2K,
        GgmlDType::F16,
        GgmlDType::BF16,
        GgmlDType::F32,
    ];
    let mut errors = Vec::new();
    for kind in kinds {
        let stored = QTensor::quantize(&values, kind)?.data()?.to_vec();
        let encoding = Encoding {
            kind,
            shape: Shape::from((640, 1280)),
        };
        // 256 bytes in, as a unit's tensors lie in the ring.
        let mut padded = vec![7u8; 256];
        padded.extend(&stored);
        let host = Tensor::from_vec(stored.clone(), stored.len(), &Device::Cpu)?;
        let on_gpu = Tensor::from_vec(padded, 256 + stored.len(), &gpu)?.narrow(0, 256, stored.len())?;
        let expected = decode(&host, &encoding, DType::F32)?;
        for dtype in [DType::F16, DType::F32] {
            let decoded = decode(&on_gpu, &encoding, dtype)?;
            assert_eq!((decoded.dims(), decoded.dtype()), (&[640, 1280][..], dtype));
            errors.push((
                format!("{kind:?} to {dtype:?}"),
                max_relative_error(&decoded, &expected)?,
            ));
        }
    }
    assert!(
        errors.iter().all(|(_, error)| *error < 1e-3),
        "(storage, relative error against the host): {errors:#?}"
    );
    Ok(())
}
