//! `SolidMask`, `InvertMask` and `MaskComposite`: masks made and combined as ComfyUI's nodes of
//! the same names do. Masks are `[batch, height, width]`, values nominally 0..1.

use candle_core::{Device, Tensor};
use std::sync::Arc;
use swapgraph_model::{candle_device, Mask};
use swapgraph_node_api::{
    Args, Choice, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value,
};

fn failed(e: candle_core::Error) -> NodeError {
    NodeError::msg(e.to_string())
}

fn mask_value(values: Tensor) -> Vec<Value> {
    vec![Value::Handle(Handle::new(SocketType::MASK, Arc::new(Mask { values })))]
}

/// A mask of one value.
#[derive(Params)]
struct Solid {
    /// The value everywhere.
    #[param(default = 1.0, min = 0.0, max = 1.0)]
    value: f64,
    /// Width in pixels.
    #[param(default = 512, min = 1, max = 16384)]
    width: i64,
    /// Height in pixels.
    #[param(default = 512, min = 1, max = 16384)]
    height: i64,
}

/// Makes a mask of one value.
pub struct SolidMask {
    descriptor: NodeDescriptor,
}

impl SolidMask {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new("SolidMask", "mask", "A mask of one value, width by height.")
            .params::<Solid>()
            .output(SocketType::MASK, "The mask.");
        Self { descriptor }
    }
}

impl NodeType for SolidMask {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, ctx: &RunContext) -> Result<Vec<Value>, NodeError> {
        let Solid { value, width, height } = Solid::from_args(args)?;
        let device = candle_device(ctx.device)?;
        let values = Tensor::full(value as f32, (1, height as usize, width as usize), &device).map_err(failed)?;
        Ok(mask_value(values))
    }
}

/// Inverts a mask.
pub struct InvertMask {
    descriptor: NodeDescriptor,
}

impl InvertMask {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new("InvertMask", "mask", "One minus the mask: what was in is out.")
            .input("mask", SocketType::MASK, "The mask.")
            .output(SocketType::MASK, "1 - mask.");
        Self { descriptor }
    }
}

impl NodeType for InvertMask {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let mask = &args.handle::<Mask>("mask")?.values;
        Ok(mask_value((1.0 - mask).map_err(failed)?))
    }
}

/// How `MaskComposite` combines the source with what it covers of the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
enum Operation {
    /// destination x source.
    Multiply,
    /// destination + source.
    Add,
    /// destination - source.
    Subtract,
    /// Both, each rounded to 0 or 1.
    And,
    /// Either, each rounded to 0 or 1.
    Or,
    /// Exactly one, each rounded to 0 or 1.
    Xor,
}

impl Operation {
    fn apply(self, destination: f32, source: f32) -> f32 {
        // ComfyUI rounds half to even before taking a value as a bit.
        let bit = |v: f32| v.round_ties_even() != 0.0;
        let (d, s) = (bit(destination), bit(source));
        match self {
            Self::Multiply => destination * source,
            Self::Add => destination + source,
            Self::Subtract => destination - source,
            Self::And => f32::from(u8::from(d && s)),
            Self::Or => f32::from(u8::from(d || s)),
            Self::Xor => f32::from(u8::from(d != s)),
        }
    }
}

/// Where the source goes and how it combines.
#[derive(Params)]
struct Placement {
    /// The source's left edge in the destination, in pixels.
    #[param(default = 0, min = 0, max = 16384)]
    x: i64,
    /// The source's top edge in the destination, in pixels.
    #[param(default = 0, min = 0, max = 16384)]
    y: i64,
    /// How the source combines with what it covers.
    #[param(default = Operation::Multiply)]
    operation: Operation,
}

/// Combines a mask into part of another.
pub struct MaskComposite {
    descriptor: NodeDescriptor,
}

impl MaskComposite {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "MaskComposite",
            "mask",
            "Combines the source mask with the part of the destination it covers, its top-left corner at x, y \
             (multiply, add, subtract, or and/or/xor of the values rounded to 0 or 1); the rest of the destination \
             is kept, and the result is clamped to 0..1.",
        )
        .input("destination", SocketType::MASK, "The mask combined into.")
        .input(
            "source",
            SocketType::MASK,
            "The mask placed on it (one mask, or one per destination mask).",
        )
        .params::<Placement>()
        .output(SocketType::MASK, "The combined mask.");
        Self { descriptor }
    }
}

/// `destination` with `source` combined in at `(x, y)`, clamped to 0..1.
fn composite(
    destination: &Tensor,
    source: &Tensor,
    (x, y): (usize, usize),
    operation: Operation,
) -> Result<Tensor, NodeError> {
    let (batch, height, width) = destination
        .dims3()
        .map_err(|e| NodeError::msg(format!("destination: {e}")))?;
    let (sources, source_height, source_width) = source.dims3().map_err(|e| NodeError::msg(format!("source: {e}")))?;
    if sources != 1 && sources != batch {
        return Err(NodeError::msg(format!(
            "the source has {sources} masks and the destination {batch}: give one source mask, or one per destination mask"
        )));
    }
    let mut output: Vec<f32> = destination.flatten_all().and_then(|t| t.to_vec1()).map_err(failed)?;
    let source_values: Vec<f32> = source.flatten_all().and_then(|t| t.to_vec1()).map_err(failed)?;
    let (right, bottom) = ((x + source_width).min(width), (y + source_height).min(height));
    for b in 0..batch {
        let s = if sources == 1 { 0 } else { b };
        for row in y..bottom {
            for column in x..right {
                let at = (b * height + row) * width + column;
                let from = (s * source_height + row - y) * source_width + column - x;
                output[at] = operation.apply(output[at], source_values[from]);
            }
        }
    }
    let output: Vec<f32> = output.into_iter().map(|v| v.clamp(0.0, 1.0)).collect();
    Tensor::from_vec(output, (batch, height, width), &Device::Cpu)
        .and_then(|t| t.to_device(destination.device()))
        .map_err(failed)
}

impl NodeType for MaskComposite {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let Placement { x, y, operation } = Placement::from_args(args)?;
        let destination = &args.handle::<Mask>("destination")?.values;
        let source = &args.handle::<Mask>("source")?.values;
        Ok(mask_value(composite(
            destination,
            source,
            (x as usize, y as usize),
            operation,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(values: &[f32], shape: (usize, usize, usize)) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// ComfyUI's definition: the source's visible part combined into the destination at x, y,
    /// the rest kept, everything clamped to 0..1; bits are values rounded half to even.
    #[test]
    fn composite_combines_the_covered_part_and_clamps() {
        let destination = mask(&[0.5; 12], (1, 3, 4));
        let source = mask(&[1.0, 0.25, 0.5, 0.75], (1, 2, 2));
        let at = |op| values(&composite(&destination, &source, (3, 1), op).unwrap());
        // Only column 3 of rows 1 and 2 is covered (the source runs off the right edge).
        let covered = |v: &[f32]| (v[7], v[11]);
        assert_eq!(covered(&at(Operation::Multiply)), (0.5, 0.25));
        assert_eq!(covered(&at(Operation::Add)), (1.0, 1.0), "1.5 and 1.0, clamped");
        assert_eq!(covered(&at(Operation::Subtract)), (0.0, 0.0), "-0.5 and 0.0, clamped");
        // 0.5 rounds to 0 (half to even), 1.0 and 0.5 to 1 and 0.
        assert_eq!(covered(&at(Operation::And)), (0.0, 0.0));
        assert_eq!(covered(&at(Operation::Or)), (1.0, 0.0));
        assert_eq!(covered(&at(Operation::Xor)), (1.0, 0.0));
        let untouched = at(Operation::Add);
        assert!(untouched
            .iter()
            .enumerate()
            .all(|(i, v)| [7, 11].contains(&i) || *v == 0.5));
        // One source mask serves every destination mask; other counts are refused.
        let two = mask(&[0.0; 24], (2, 3, 4));
        let out = composite(&two, &source, (0, 0), Operation::Add).unwrap();
        assert_eq!(values(&out)[12..14], [1.0, 0.25]);
        let three = mask(&[0.0; 12], (3, 2, 2));
        assert!(composite(&two, &three, (0, 0), Operation::Add).is_err());
    }
}
