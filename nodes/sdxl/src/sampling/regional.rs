//! Sampling with lists of conditionings, as ComfyUI's sampler weighs them: each conditioning
//! runs the UNet on its area of the latents (all of them by default) while its part of the
//! schedule lasts, and each side's prediction is the average of its conditionings' predictions
//! weighted by their masks and strengths, with areas that do not reach an edge of the image
//! feathered over their 8 outermost latent pixels. A place no conditioning of a side covers
//! predicts 0 there, as in ComfyUI. An area on one side that the other side has no conditioning
//! for gets one there: the other side's smallest conditioning that covers it (or one without an
//! area), placed as the first. Each conditioning brings the adapters applied to it (ControlNets,
//! image tokens) to its region, as ComfyUI attaches them to its conditionings: a ControlNet sees
//! the region's latents, its text and its hint resized to the region.

use super::adapters::{percent_sigma, Adapters, ControlGuidance, ImageTokenGuidance};
use super::denoiser::{both_sides, TextConditioning};
use super::inpainting::latent_mask;
use super::samplers::Denoiser;
use super::schedule::DiscreteSchedule;
use super::step_split::StepSplit;
use crate::conditioning::{Area, Conditioning, Placement};
use crate::unet::{ContextCache, UNet, UNetInput};
use candle_core::{DType, Device, Result, Tensor};
use swapgraph_model::WeightStore;

/// How far ComfyUI feathers an area's inner edges, in latent pixels.
const FEATHER: usize = 8;

/// A rectangle of the latents: `height` rows from `y`, `width` columns from `x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatentArea {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// First row.
    pub y: usize,
    /// First column.
    pub x: usize,
}

/// One conditioning placed on latents of a known size, before its weights are made.
#[derive(Clone)]
struct Placed<'c> {
    /// The conditioning whose adapters it brings (its text may be another's, see
    /// [`give_opposite_area`]).
    source: &'c Conditioning,
    text: TextConditioning,
    /// Its area, when it has one (`None`: all of the latents).
    area: Option<LatentArea>,
    strength: f64,
    /// The mask resampled to the latents `[batch, 1, h, w]`, and its strength.
    mask: Option<(Tensor, f64)>,
    /// From which sigma down to which it applies.
    sigmas: (f64, f64),
}

/// The adapters a conditioning of a list brings to its region.
#[derive(Default)]
pub struct RegionAdapters<'a> {
    /// Its ControlNets, in the chain's order, each with the region's side as its positive one.
    pub controls: Vec<ControlGuidance<'a>>,
    /// Its image tokens, the same on both sides (a region runs one side).
    pub image_tokens: Option<ImageTokenGuidance>,
}

/// One conditioning as the denoiser runs it.
pub struct Region<'a> {
    text: TextConditioning,
    adapters: RegionAdapters<'a>,
    area: LatentArea,
    /// Its weight at each latent pixel of its area, `[batch or 1, 1, height, width]`.
    weights: Tensor,
    sigmas: (f64, f64),
    context_cache: ContextCache,
}

/// The latents' shape `[batch, channels, height, width]`.
type LatentShape = (usize, usize, usize, usize);

/// `area` in latent pixels on latents `height` x `width` (ComfyUI divides pixels by 8 and
/// rounds fractions), not yet clipped to them.
fn latent_area(area: Area, (height, width): (usize, usize)) -> LatentArea {
    match area {
        Area::Pixels {
            width: w,
            height: h,
            x,
            y,
        } => LatentArea {
            height: (h / 8) as usize,
            width: (w / 8) as usize,
            y: (y / 8) as usize,
            x: (x / 8) as usize,
        },
        Area::Fraction {
            width: w,
            height: h,
            x,
            y,
        } => {
            let round = |f: f64, side: usize| (f * side as f64).round_ties_even() as usize;
            LatentArea {
                height: round(h, height).max(1),
                width: round(w, width).max(1),
                y: round(y, height),
                x: round(x, width),
            }
        }
    }
}

/// The bounding box of where any of `mask`'s maps (`[batch, 1, h, w]`) is not 0, at least 8 by 8
/// latent pixels; 8 by 8 at the corner when it is 0 everywhere.
fn mask_bounds(mask: &Tensor) -> Result<LatentArea> {
    let width = mask.dim(3)?;
    let bounds: Vec<f32> = mask.abs()?.max(0)?.flatten_all()?.to_vec1()?;
    let (mut top, mut left, mut bottom, mut right) = (usize::MAX, usize::MAX, 0, 0);
    for (i, value) in bounds.iter().enumerate() {
        if *value != 0.0 {
            let (row, column) = (i / width, i % width);
            top = top.min(row);
            bottom = bottom.max(row);
            left = left.min(column);
            right = right.max(column);
        }
    }
    if top == usize::MAX {
        return Ok(LatentArea {
            height: 8,
            width: 8,
            y: 0,
            x: 0,
        });
    }
    Ok(LatentArea {
        height: (bottom - top + 1).max(8),
        width: (right - left + 1).max(8),
        y: top,
        x: left,
    })
}

/// One conditioning of a list placed on latents of `shape`.
fn place<'c>(
    conditioning: &'c Conditioning,
    text: TextConditioning,
    shape: LatentShape,
    schedule: &DiscreteSchedule,
) -> std::result::Result<Placed<'c>, String> {
    let Placement {
        area,
        strength,
        mask,
        percent,
    } = &conditioning.placement;
    let (_, _, height, width) = shape;
    let mut area = area.map(|area| latent_area(area, (height, width)));
    let mask = match mask {
        Some(mask) => {
            let values = mask.values.to_device(&Device::Cpu).map_err(|e| e.to_string())?;
            let (batch, mask_height, mask_width) = values.dims3().map_err(|e| format!("mask: {e}"))?;
            let resampled = latent_mask(
                &values
                    .reshape((batch, 1, mask_height, mask_width))
                    .map_err(|e| e.to_string())?,
                &[batch, 1, height, width],
            )
            .map_err(|e| format!("mask: {e}"))?;
            if mask.area_to_bounds {
                area = Some(mask_bounds(&resampled).map_err(|e| e.to_string())?);
            }
            Some((resampled, mask.strength))
        }
        None => None,
    };
    let (start, end) = percent.unwrap_or((0.0, 1.0));
    Ok(Placed {
        source: conditioning,
        text,
        area,
        strength: *strength,
        mask,
        sigmas: (percent_sigma(schedule, start), percent_sigma(schedule, end)),
    })
}

/// ComfyUI's `create_cond_with_same_area_if_none`: when `placed` has an area that no
/// conditioning of `other` has, `other` gets `placed` with the text of its smallest conditioning
/// that covers the area (or of the first without an area), and keeps `placed`'s adapters.
fn give_opposite_area<'c>(other: &mut Vec<Placed<'c>>, placed: &Placed<'c>) {
    let Some(area) = placed.area else {
        return;
    };
    let covers = |a: &LatentArea| {
        area.y >= a.y && area.x >= a.x && a.height + a.y >= area.height + area.y && a.width + a.x >= area.width + area.x
    };
    let mut smallest: Option<&Placed> = None;
    for candidate in other.iter() {
        match (candidate.area, smallest.map(|s| s.area)) {
            (Some(a), None) if covers(&a) => smallest = Some(candidate),
            (Some(a), Some(None)) if covers(&a) => smallest = Some(candidate),
            (Some(a), Some(Some(s))) if covers(&a) && s.height * s.width > a.height * a.width => {
                smallest = Some(candidate)
            }
            (None, None) => smallest = Some(candidate),
            _ => {}
        }
    }
    let Some(smallest) = smallest else {
        return;
    };
    if smallest.area == Some(area) {
        return;
    }
    let mut opposite = placed.clone();
    opposite.text = smallest.text.clone();
    other.push(opposite);
}

/// Ramps the first (`at_start`) and last (`at_end`) [`FEATHER`] weights of `ramp` from 1/8 to 1,
/// as ComfyUI does with Python's slices: on a ramp shorter than 8, the end's ramp wraps around
/// from the far end where ComfyUI's negative indices do.
fn feather(ramp: &mut [f32], at_start: bool, at_end: bool) {
    let len = ramp.len() as isize;
    for t in 0..FEATHER {
        let scale = (t + 1) as f32 / FEATHER as f32;
        if at_start {
            if let Some(v) = ramp.get_mut(t) {
                *v *= scale;
            }
        }
        // ComfyUI's `mult[len - 1 - t : len - t]`: an empty slice when its end is 0.
        let index = len - 1 - t as isize;
        let wrapped = if index >= 0 {
            Some(index)
        } else if index + 1 == 0 {
            None
        } else {
            Some(len + index).filter(|i| *i >= 0)
        };
        if let Some(i) = wrapped.filter(|_| at_end) {
            ramp[i as usize] *= scale;
        }
    }
}

/// The weights of `placed` on latents of `shape`, over its area clipped to them: its mask
/// times the mask's strength (or ones, feathered at inner edges), times its strength.
fn weights(placed: &Placed, shape: LatentShape) -> Result<(LatentArea, Tensor)> {
    let (_, _, height, width) = shape;
    let full = LatentArea {
        height,
        width,
        y: 0,
        x: 0,
    };
    let unclipped = placed.area.unwrap_or(full);
    let area = LatentArea {
        height: unclipped.height.min(height.saturating_sub(unclipped.y)),
        width: unclipped.width.min(width.saturating_sub(unclipped.x)),
        ..unclipped
    };
    if area.height == 0 || area.width == 0 {
        candle_core::bail!("its area lies outside the {}x{} latent pixels", width, height);
    }
    let weights = match &placed.mask {
        Some((mask, strength)) => {
            (mask.narrow(2, area.y, area.height)?.narrow(3, area.x, area.width)? * (strength * placed.strength))?
        }
        None => {
            let mut rows = vec![1.0f32; area.height];
            let mut columns = vec![1.0f32; area.width];
            feather(&mut rows, area.y != 0, unclipped.height + area.y < height);
            feather(&mut columns, area.x != 0, unclipped.width + area.x < width);
            let rows = Tensor::from_vec(rows, (area.height, 1), &Device::Cpu)?;
            let columns = Tensor::from_vec(columns, (1, area.width), &Device::Cpu)?;
            (rows.broadcast_mul(&columns)? * placed.strength)?.reshape((1, 1, area.height, area.width))?
        }
    };
    Ok((area, weights))
}

/// Both sides' conditionings placed on latents of `shape` as regions, each with its text
/// conditioning (`text`) and the adapters `adapters` makes of its conditioning for that text, on
/// `device`.
///
/// # Errors
/// A message naming the side and what is wrong: an area outside the latents, a mask that is
/// not `[batch, height, width]`, a mask with a batch the latents' is not a multiple of, or
/// adapters that cannot be made.
pub fn regions<'c>(
    (positive, negative): (&'c [Conditioning], &'c [Conditioning]),
    text: impl Fn(&Conditioning) -> std::result::Result<TextConditioning, String>,
    adapters: impl Fn(&'c Conditioning, &TextConditioning) -> std::result::Result<RegionAdapters<'c>, String>,
    shape: LatentShape,
    schedule: &DiscreteSchedule,
    device: &Device,
) -> std::result::Result<(Vec<Region<'c>>, Vec<Region<'c>>), String> {
    let placed = |side: &'c [Conditioning], name: &str| -> std::result::Result<Vec<Placed<'c>>, String> {
        side.iter()
            .map(|c| place(c, text(c)?, shape, schedule))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("{name}: {e}"))
    };
    let (mut positive, mut negative) = (placed(positive, "positive")?, placed(negative, "negative")?);
    for conditioning in positive.clone() {
        give_opposite_area(&mut negative, &conditioning);
    }
    for conditioning in negative.clone() {
        give_opposite_area(&mut positive, &conditioning);
    }
    let made = |side: Vec<Placed<'c>>, name: &str| -> std::result::Result<Vec<Region<'c>>, String> {
        side.into_iter()
            .map(|placed| {
                let adapters = adapters(placed.source, &placed.text).map_err(candle_core::Error::Msg)?;
                let (area, weights) = weights(&placed, shape)?;
                let rows = weights.dim(0)?;
                if shape.0 % rows != 0 {
                    candle_core::bail!("a mask of {rows} maps for {} latents", shape.0);
                }
                // Masks repeat over the latents' batch, as ComfyUI tiles them.
                let weights = match rows {
                    1 => weights,
                    _ => Tensor::cat(&vec![&weights; shape.0 / rows], 0)?,
                };
                Ok(Region {
                    text: placed.text,
                    adapters,
                    area,
                    weights: weights.to_dtype(DType::F32)?.to_device(device)?,
                    sigmas: placed.sigmas,
                    context_cache: ContextCache::default(),
                })
            })
            .collect::<Result<_>>()
            .map_err(|e| format!("{name}: {e}"))
    };
    let (positive, negative) = (made(positive, "positive")?, made(negative, "negative")?);
    for (name, side) in [("positive", &positive), ("negative", &negative)] {
        if leaves_uncovered(side, shape).map_err(|e| format!("{name}: {e}"))? {
            tracing::warn!(
                "the {name} conditionings leave part of the image without weight (a mask or area covers only part \
                 of it): the {name} prediction is 0 there, as in ComfyUI; combine them with an unplaced conditioning \
                 (ConditioningCombine) to cover the rest"
            );
        }
    }
    Ok((positive, negative))
}

/// Whether some latent pixel of `shape` gets no weight from any of `regions`, whatever their
/// parts of the schedule.
fn leaves_uncovered(regions: &[Region], (_, _, height, width): LatentShape) -> Result<bool> {
    let mut covered: Option<Tensor> = None;
    for region in regions {
        let LatentArea {
            height: h,
            width: w,
            y,
            x,
        } = region.area;
        let weights = region
            .weights
            .abs()?
            .max_keepdim(0)?
            .pad_with_zeros(2, y, height - y - h)?
            .pad_with_zeros(3, x, width - x - w)?;
        covered = Some(match covered {
            Some(sum) => (sum + weights)?,
            None => weights,
        });
    }
    match covered {
        Some(covered) => Ok(covered.flatten_all()?.min(0)?.to_scalar::<f32>()? == 0.0),
        None => Ok(true),
    }
}

/// The UNet as a denoiser over lists of conditionings (see the module's description), with
/// classifier-free guidance between the two sides' weighted predictions.
pub struct RegionalDenoiser<'a> {
    /// The UNet.
    pub unet: &'a UNet,
    /// Its weights.
    pub store: &'a dyn WeightStore,
    /// Sigma to timestep conversion.
    pub schedule: &'a DiscreteSchedule,
    /// The positive side's regions.
    pub positive: Vec<Region<'a>>,
    /// The negative side's regions.
    pub negative: Vec<Region<'a>>,
    /// Guidance scale; 1 evaluates only the positive side.
    pub cfg: f64,
    /// Where the ControlNets' and the UNet's passes are timed, if anywhere.
    pub split: Option<&'a StepSplit>,
}

impl RegionalDenoiser<'_> {
    /// One side's prediction at `sigma`: its active regions' predictions, weighted.
    fn side(&self, regions: &[Region], x: &Tensor, sigma: f64) -> Result<Tensor> {
        let (unet, store, schedule) = (self.unet, self.store, self.schedule);
        let (batch, _, height, width) = x.dims4()?;
        let x = x.to_dtype(DType::F32)?;
        let mut sum = x.zeros_like()?;
        let mut count = Tensor::full(1e-37f32, (1, 1, height, width), x.device())?;
        let timesteps = Tensor::full(schedule.timestep(sigma) as f32, batch, x.device())?;
        for region in regions.iter().filter(|r| sigma <= r.sigmas.0 && sigma >= r.sigmas.1) {
            let LatentArea {
                height: h,
                width: w,
                y,
                x: left,
            } = region.area;
            let input = x.narrow(2, y, h)?.narrow(3, left, w)?;
            let scaled = (&input / (sigma * sigma + 1.0).sqrt())?;
            let rows = |t: &Tensor| Tensor::cat(&vec![t; batch], 0);
            let (context, pooled, time_ids) = (
                rows(&region.text.context)?,
                rows(&region.text.pooled)?,
                rows(&region.text.time_ids)?,
            );
            let projected = region
                .context_cache
                .get_or_make((false, batch), || unet.project_context(store, &context))?;
            let adapters = Adapters {
                controls: &region.adapters.controls,
                image_tokens: region.adapters.image_tokens.as_ref(),
                split: self.split,
            };
            let eps = adapters
                .forward(
                    (unet, store),
                    schedule,
                    UNetInput {
                        sample: &scaled,
                        timesteps: &timesteps,
                        context: &context,
                        projected: Some(&projected),
                        text_embeds: &pooled,
                        time_ids: &time_ids,
                        control: None,
                        extra_tokens: None,
                    },
                    sigma,
                    false,
                )?
                .to_dtype(DType::F32)?;
            let denoised = (input - (eps * sigma)?)?;
            let pad = |t: &Tensor| {
                t.pad_with_zeros(2, y, height - y - h)?
                    .pad_with_zeros(3, left, width - left - w)
            };
            sum = (sum + pad(&denoised.broadcast_mul(&region.weights)?)?)?;
            count = count.broadcast_add(&pad(&region.weights)?)?;
        }
        sum.broadcast_div(&count)
    }

    /// The guided prediction, and the negative side's own when `with_unconditioned`.
    fn predict(&mut self, x: &Tensor, sigma: f64, with_unconditioned: bool) -> Result<(Tensor, Option<Tensor>)> {
        let cond = self.side(&self.positive, x, sigma)?;
        if self.cfg == 1.0 && !with_unconditioned {
            return Ok((cond, None));
        }
        let uncond = self.side(&self.negative, x, sigma)?;
        let guided = (&uncond + ((cond - &uncond)? * self.cfg)?)?;
        Ok((guided, Some(uncond)))
    }
}

impl Denoiser for RegionalDenoiser<'_> {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        Ok(self.predict(x, sigma, false)?.0)
    }

    fn denoise_with_unconditioned(&mut self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        both_sides(self.predict(x, sigma, true)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditioning::PlacementMask;

    /// The positive side's regions for `conditionings` on 1x4x8x8 latents.
    fn positive_regions(conditionings: &[Conditioning]) -> Vec<Region<'_>> {
        let text = |c: &Conditioning| {
            Ok(TextConditioning {
                context: c.context.clone(),
                pooled: c.pooled.clone(),
                time_ids: Tensor::zeros((1, 6), DType::F32, &Device::Cpu).map_err(|e| e.to_string())?,
            })
        };
        let negative = std::slice::from_ref(&conditionings[0]);
        regions(
            (conditionings, negative),
            text,
            |_, _| Ok(RegionAdapters::default()),
            (1, 4, 8, 8),
            &DiscreteSchedule::sdxl(),
            &Device::Cpu,
        )
        .unwrap()
        .0
    }

    #[test]
    fn a_mask_over_part_of_the_image_leaves_the_rest_uncovered_until_an_unplaced_one_joins() {
        let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        let plain = Conditioning::text(zeros(&[1, 2, 8]), zeros(&[1, 4]), None);
        let left = Tensor::from_vec((0..64).map(|i| f32::from(i % 8 < 4)).collect(), (1, 8, 8), &Device::Cpu).unwrap();
        let mut masked = plain.clone();
        masked.placement.mask = Some(PlacementMask::new(&left, 1.0, false).unwrap());
        let shape = (1, 4, 8, 8);
        let alone = [masked.clone()];
        assert!(leaves_uncovered(&positive_regions(&alone), shape).unwrap());
        let beside = [masked, plain];
        assert!(!leaves_uncovered(&positive_regions(&beside), shape).unwrap());
    }
}
