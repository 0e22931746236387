//! `ConditioningCombine` and the nodes that place a conditioning, with ComfyUI's params and
//! semantics: `ConditioningSetArea` (pixels), `ConditioningSetAreaPercentage` (fractions),
//! `ConditioningSetAreaStrength`, `ConditioningSetMask` and `ConditioningSetTimestepRange`. Each
//! applies to every conditioning of a list; the sampler weighs them (see
//! [`crate::sampling::RegionalDenoiser`]).

use crate::conditioning::{Area, ConditioningList, Placement, PlacementMask};
use std::sync::Arc;
use swapgraph_model::Mask;
use swapgraph_node_api::{
    Args, Choice, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value,
};

fn conditioning_value(list: ConditioningList) -> Vec<Value> {
    vec![Value::Handle(Handle::new(SocketType::CONDITIONING, Arc::new(list)))]
}

/// Two conditionings (lists) as one list, which the sampler weighs where they overlap.
pub struct ConditioningCombine {
    descriptor: NodeDescriptor,
}

impl ConditioningCombine {
    /// The node type.
    pub fn new() -> Self {
        let descriptor = NodeDescriptor::new(
            "ConditioningCombine",
            "conditioning",
            "Combines two conditionings: the sampler runs both and averages their predictions, each where and when \
             it is placed (ConditioningSetArea, ConditioningSetMask, ConditioningSetTimestepRange).",
        )
        .input("conditioning_1", SocketType::CONDITIONING, "The first conditioning.")
        .input("conditioning_2", SocketType::CONDITIONING, "The second conditioning.")
        .output(SocketType::CONDITIONING, "Both.");
        Self { descriptor }
    }
}

impl NodeType for ConditioningCombine {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let mut both = args.handle::<ConditioningList>("conditioning_1")?.0.clone();
        both.extend(args.handle::<ConditioningList>("conditioning_2")?.0.iter().cloned());
        Ok(conditioning_value(ConditioningList(both)))
    }
}

/// A rectangle in pixels.
#[derive(Params)]
struct PixelArea {
    /// Width in pixels (whole latent pixels of 8 count).
    #[param(default = 64, min = 64, max = 16384)]
    width: i64,
    /// Height in pixels.
    #[param(default = 64, min = 64, max = 16384)]
    height: i64,
    /// Left edge in pixels.
    #[param(default = 0, min = 0, max = 16384)]
    x: i64,
    /// Top edge in pixels.
    #[param(default = 0, min = 0, max = 16384)]
    y: i64,
    /// Weight against other conditionings where they overlap.
    #[param(default = 1.0, min = 0.0, max = 10.0)]
    strength: f64,
}

/// A rectangle as fractions of the image's sides.
#[derive(Params)]
struct FractionArea {
    /// Width as a fraction of the image's.
    #[param(default = 1.0, min = 0.0, max = 1.0)]
    width: f64,
    /// Height as a fraction of the image's.
    #[param(default = 1.0, min = 0.0, max = 1.0)]
    height: f64,
    /// Left edge as a fraction of the width.
    #[param(default = 0.0, min = 0.0, max = 1.0)]
    x: f64,
    /// Top edge as a fraction of the height.
    #[param(default = 0.0, min = 0.0, max = 1.0)]
    y: f64,
    /// Weight against other conditionings where they overlap.
    #[param(default = 1.0, min = 0.0, max = 10.0)]
    strength: f64,
}

/// A weight alone.
#[derive(Params)]
struct Strength {
    /// Weight against other conditionings where they overlap.
    #[param(default = 1.0, min = 0.0, max = 10.0)]
    strength: f64,
}

/// What area a masked conditioning's UNet pass covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
enum MaskArea {
    /// Its area as set (all of the image by default).
    Default,
    /// The mask's bounding box.
    #[choice(name = "mask bounds")]
    MaskBounds,
}

/// How a mask weighs a conditioning.
#[derive(Params)]
struct MaskWeight {
    /// The mask's scale.
    #[param(default = 1.0, min = 0.0, max = 10.0)]
    strength: f64,
    /// default: the UNet pass covers the conditioning's area; mask bounds: only the mask's bounding box.
    #[param(default = MaskArea::Default)]
    set_cond_area: MaskArea,
}

/// Part of the schedule.
#[derive(Params)]
struct TimestepRange {
    /// The fraction of the schedule it starts at.
    #[param(default = 0.0, min = 0.0, max = 1.0)]
    start: f64,
    /// The fraction of the schedule it ends at.
    #[param(default = 1.0, min = 0.0, max = 1.0)]
    end: f64,
}

/// Changes a conditioning's placement from the node's args.
type Change = fn(&Args, &mut Placement) -> Result<(), NodeError>;

/// Places every conditioning of a list: an area, a weight, a mask or part of the schedule.
pub struct SetPlacement {
    descriptor: NodeDescriptor,
    change: Change,
}

impl SetPlacement {
    fn with(type_name: &'static str, description: &'static str) -> NodeDescriptor {
        NodeDescriptor::new(type_name, "conditioning", description).input(
            "conditioning",
            SocketType::CONDITIONING,
            "The conditioning.",
        )
    }

    /// `ConditioningSetArea`: a rectangle in pixels, and a weight.
    pub fn area() -> Self {
        let change: Change = |args, placement| {
            let PixelArea {
                width,
                height,
                x,
                y,
                strength,
            } = PixelArea::from_args(args)?;
            let pixels = |v: i64| v.max(0) as u64;
            placement.area = Some(Area::Pixels {
                width: pixels(width),
                height: pixels(height),
                x: pixels(x),
                y: pixels(y),
            });
            placement.strength = strength;
            Ok(())
        };
        let descriptor = Self::with(
            "ConditioningSetArea",
            "Applies the conditioning to a rectangle of the image in pixels (in whole latent pixels of 8), with a \
             weight against other conditionings where they overlap; its inner edges fade over 64 pixels.",
        )
        .params::<PixelArea>();
        Self::finish(descriptor, change)
    }

    /// `ConditioningSetAreaPercentage`: a rectangle as fractions of the image's sides.
    pub fn area_fraction() -> Self {
        let change: Change = |args, placement| {
            let FractionArea {
                width,
                height,
                x,
                y,
                strength,
            } = FractionArea::from_args(args)?;
            placement.area = Some(Area::Fraction { width, height, x, y });
            placement.strength = strength;
            Ok(())
        };
        let descriptor = Self::with(
            "ConditioningSetAreaPercentage",
            "Applies the conditioning to a rectangle given as fractions of the image's sides, with a weight against \
             other conditionings where they overlap.",
        )
        .params::<FractionArea>();
        Self::finish(descriptor, change)
    }

    /// `ConditioningSetAreaStrength`: the weight alone.
    pub fn strength() -> Self {
        let change: Change = |args, placement| {
            placement.strength = Strength::from_args(args)?.strength;
            Ok(())
        };
        let descriptor = Self::with(
            "ConditioningSetAreaStrength",
            "Sets the conditioning's weight against other conditionings where they overlap.",
        )
        .params::<Strength>();
        Self::finish(descriptor, change)
    }

    /// `ConditioningSetMask`: per-pixel weights.
    pub fn mask() -> Self {
        let change: Change = |args, placement| {
            let MaskWeight {
                strength,
                set_cond_area,
            } = MaskWeight::from_args(args)?;
            let values = &args.handle::<Mask>("mask")?.values;
            let mask = PlacementMask::new(values, strength, set_cond_area == MaskArea::MaskBounds)
                .map_err(|e| NodeError::msg(e.to_string()))?;
            placement.mask = Some(mask);
            Ok(())
        };
        let descriptor = Self::with(
            "ConditioningSetMask",
            "Weighs the conditioning per pixel by a mask (resampled to the image), scaled by strength; with mask \
             bounds its UNet pass covers only the mask's bounding box.",
        )
        .input("mask", SocketType::MASK, "Where the conditioning applies, 0..1.")
        .params::<MaskWeight>();
        Self::finish(descriptor, change)
    }

    /// `ConditioningSetTimestepRange`: part of the schedule.
    pub fn timestep_range() -> Self {
        let change: Change = |args, placement| {
            let TimestepRange { start, end } = TimestepRange::from_args(args)?;
            placement.percent = Some((start, end));
            Ok(())
        };
        let descriptor = Self::with(
            "ConditioningSetTimestepRange",
            "Applies the conditioning only from start to end of the schedule (fractions: 0 is the first step, 1 \
             after the last).",
        )
        .params::<TimestepRange>();
        Self::finish(descriptor, change)
    }

    fn finish(descriptor: NodeDescriptor, change: Change) -> Self {
        Self {
            descriptor: descriptor.output(SocketType::CONDITIONING, "The conditioning, placed."),
            change,
        }
    }
}

impl NodeType for SetPlacement {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let placed = args
            .handle::<ConditioningList>("conditioning")?
            .map(|mut conditioning| {
                (self.change)(args, &mut conditioning.placement)?;
                Ok::<_, NodeError>(conditioning)
            })?;
        Ok(conditioning_value(placed))
    }
}
