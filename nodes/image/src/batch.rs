//! `ImageBatch`: two batches of images as one, the second resampled to the first's size as
//! ComfyUI does (cropped about its centre to the first's aspect ratio, then bilinear).

use crate::resample::{crop_to_aspect, resize, ScaleMethod};
use candle_core::Tensor;
use std::sync::Arc;
use swapgraph_model::Image;
use swapgraph_node_api::{Args, Handle, NodeDescriptor, NodeError, NodeType, RunContext, SocketType, Value};

/// Joins two image batches.
pub struct ImageBatch {
    descriptor: NodeDescriptor,
}

impl ImageBatch {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "ImageBatch",
            "image",
            "Joins two batches of images into one; the second is cropped about its centre to the first's aspect \
             ratio and resampled (bilinear) to its size when they differ.",
        )
        .input("image1", SocketType::IMAGE, "The first batch.")
        .input("image2", SocketType::IMAGE, "The second batch, after the first.")
        .output(SocketType::IMAGE, "Both batches.");
        Self { descriptor }
    }
}

/// `second`, `[batch, height, width, channels]`, at `first`'s height and width.
fn fitted(first: &Tensor, second: &Tensor) -> candle_core::Result<Tensor> {
    let (_, height, width, _) = first.dims4()?;
    let (_, other_height, other_width, _) = second.dims4()?;
    if (height, width) == (other_height, other_width) {
        return Ok(second.clone());
    }
    let channels_first = second.permute((0, 3, 1, 2))?;
    let cropped = crop_to_aspect(&channels_first, (height, width))?;
    resize(&cropped, (height, width), ScaleMethod::Bilinear)?.permute((0, 2, 3, 1))
}

impl NodeType for ImageBatch {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let failed = |e: candle_core::Error| NodeError::msg(e.to_string());
        let first = &args.handle::<Image>("image1")?.pixels;
        let second = &args.handle::<Image>("image2")?.pixels;
        let (channels, other) = (first.dim(3).map_err(failed)?, second.dim(3).map_err(failed)?);
        if channels != other {
            return Err(NodeError::msg(format!(
                "image1 has {channels} channels and image2 {other}: only images of the same channels join"
            )));
        }
        let pixels = Tensor::cat(&[first, &fitted(first, second).map_err(failed)?], 0)
            .and_then(|t| t.contiguous())
            .map_err(failed)?;
        Ok(vec![Value::Handle(Handle::new(
            SocketType::IMAGE,
            Arc::new(Image { pixels }),
        ))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    #[test]
    fn a_second_batch_of_another_size_is_cropped_and_resampled_to_the_first() {
        let cpu = Device::Cpu;
        let first = Tensor::zeros((2, 4, 6, 3), candle_core::DType::F32, &cpu).unwrap();
        // 4 rows of 12: cropped to 4 by 6 about the centre (columns 3 to 8), same size after.
        let values: Vec<f32> = (0..4 * 12 * 3).map(|i| i as f32).collect();
        let second = Tensor::from_vec(values, (1, 4, 12, 3), &cpu).unwrap();
        let cropped = fitted(&first, &second).unwrap();
        assert_eq!(cropped.dims(), &[1, 4, 6, 3]);
        let expected = second.narrow(2, 3, 6).unwrap();
        let difference = (cropped - expected).unwrap().abs().unwrap().max_all().unwrap();
        assert!(difference.to_scalar::<f32>().unwrap() < 1e-4);
        let half = Tensor::from_vec((0..18).map(|i| i as f32).collect(), (1, 2, 3, 3), &cpu).unwrap();
        let upsampled = fitted(&first, &half).unwrap();
        assert_eq!(upsampled.dims(), &[1, 4, 6, 3], "3x2 has 6x4's aspect: resampled only");
        let ends = upsampled.i((0, 0, 0)).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(ends, [0.0, 1.0, 2.0], "bilinear keeps the corner sample");
    }
}
