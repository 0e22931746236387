//! `ImageScale`, `ImageScaleBy`, `LatentUpscale` and `LatentUpscaleBy`: images and latents
//! resampled to a size or by a factor, with ComfyUI's params and sizes (a side of 0 keeps the
//! aspect ratio; `crop: center` crops to the new aspect ratio first).

use crate::resample::{crop_to_aspect, resize, ScaleMethod};
use std::sync::Arc;
use swapgraph_model::{Image, Latent};
use swapgraph_node_api::{
    Args, Choice, Handle, NodeDescriptor, NodeError, NodeType, Params, RunContext, SocketType, Value,
};

/// Whether the image is cropped to the new aspect ratio before it is resampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Choice)]
enum Crop {
    /// Stretched to the new size.
    Disabled,
    /// Cropped about its centre to the new aspect ratio, then resampled.
    Center,
}

/// A new size in pixels.
#[derive(Params)]
struct ToSize {
    /// How values between samples are found.
    #[param(default = ScaleMethod::NearestExact)]
    upscale_method: ScaleMethod,
    /// The new width in pixels; 0 keeps the aspect ratio from the height.
    #[param(default = 512, max = 16384)]
    width: usize,
    /// The new height in pixels; 0 keeps the aspect ratio from the width.
    #[param(default = 512, max = 16384)]
    height: usize,
    /// Whether to crop to the new aspect ratio first.
    #[param(default = Crop::Disabled)]
    crop: Crop,
}

/// A factor.
#[derive(Params)]
struct ByFactor {
    /// How values between samples are found.
    #[param(default = ScaleMethod::NearestExact)]
    upscale_method: ScaleMethod,
    /// The factor both sides are multiplied by.
    #[param(default = 1.5, min = 0.01, max = 8.0)]
    scale_by: f64,
}

/// What is resampled, and how its size is given.
#[derive(Clone, Copy)]
enum Kind {
    Image,
    ImageBy,
    Latent,
    LatentBy,
}

/// One of the four scaling nodes.
pub struct Scale {
    descriptor: NodeDescriptor,
    kind: Kind,
}

impl Scale {
    /// `ImageScale`.
    pub fn image() -> Self {
        Self::new(
            Kind::Image,
            "ImageScale",
            "image/upscaling",
            "Resamples images to a size in pixels.",
        )
    }

    /// `ImageScaleBy`.
    pub fn image_by() -> Self {
        Self::new(
            Kind::ImageBy,
            "ImageScaleBy",
            "image/upscaling",
            "Resamples images by a factor.",
        )
    }

    /// `LatentUpscale`.
    pub fn latent() -> Self {
        Self::new(
            Kind::Latent,
            "LatentUpscale",
            "latent",
            "Resamples latents to an image size in pixels (each side at least 64, latents being an eighth of it), e.g. \
             for a second sampling pass at a higher resolution.",
        )
    }

    /// `LatentUpscaleBy`.
    pub fn latent_by() -> Self {
        Self::new(
            Kind::LatentBy,
            "LatentUpscaleBy",
            "latent",
            "Resamples latents by a factor.",
        )
    }

    fn new(kind: Kind, name: &'static str, category: &'static str, description: &'static str) -> Self {
        let (socket, input, about) = match kind {
            Kind::Image | Kind::ImageBy => (SocketType::IMAGE, "image", "The images."),
            Kind::Latent | Kind::LatentBy => (SocketType::LATENT, "samples", "The latents."),
        };
        let descriptor = NodeDescriptor::new(name, category, description).input(input, socket, about);
        let descriptor = match kind {
            Kind::Image | Kind::Latent => descriptor.params::<ToSize>(),
            Kind::ImageBy | Kind::LatentBy => descriptor.params::<ByFactor>(),
        }
        .output(socket, "Resampled.");
        Self { descriptor, kind }
    }
}

/// The size ComfyUI resamples `(height, width)` to for these params, in the same units.
fn new_size(
    kind: Kind,
    args: &Args,
    (height, width): (usize, usize),
) -> Result<Option<(usize, usize, Crop, ScaleMethod)>, NodeError> {
    let round = |x: f64| x.round_ties_even() as usize;
    Ok(Some(match kind {
        Kind::ImageBy | Kind::LatentBy => {
            let ByFactor {
                upscale_method,
                scale_by,
            } = ByFactor::from_args(args)?;
            let size = (
                round(height as f64 * scale_by).max(1),
                round(width as f64 * scale_by).max(1),
            );
            (size.0, size.1, Crop::Disabled, upscale_method)
        }
        Kind::Image | Kind::Latent => {
            let ToSize {
                upscale_method,
                width: w,
                height: h,
                crop,
            } = ToSize::from_args(args)?;
            // Latents are sized in pixels, each side at least 64, then divided by 8.
            let (least, unit) = match kind {
                Kind::Latent => (64, 8),
                _ => (1, 1),
            };
            let pixels = (height * unit, width * unit);
            let (h, w) = match (w, h) {
                (0, 0) => return Ok(None),
                (0, h) => (
                    h.max(least),
                    round(pixels.1 as f64 * h as f64 / pixels.0 as f64).max(least),
                ),
                (w, 0) => (
                    round(pixels.0 as f64 * w as f64 / pixels.1 as f64).max(least),
                    w.max(least),
                ),
                (w, h) => (h.max(least), w.max(least)),
            };
            (h / unit, w / unit, crop, upscale_method)
        }
    }))
}

impl NodeType for Scale {
    fn descriptor(&self) -> &NodeDescriptor {
        &self.descriptor
    }

    fn run(&self, args: &Args, _: &RunContext) -> Result<Vec<Value>, NodeError> {
        let failed = |e: candle_core::Error| NodeError::msg(e.to_string());
        let latent = matches!(self.kind, Kind::Latent | Kind::LatentBy);
        // Channels first, as resampling takes them.
        let (input, socket) = match latent {
            true => (args.handle::<Latent>("samples")?.samples.clone(), SocketType::LATENT),
            false => (
                args.handle::<Image>("image")?
                    .pixels
                    .permute((0, 3, 1, 2))
                    .map_err(failed)?,
                SocketType::IMAGE,
            ),
        };
        let (_, _, height, width) = input.dims4().map_err(failed)?;
        let Some((new_height, new_width, crop, method)) = new_size(self.kind, args, (height, width))? else {
            return Ok(vec![args.value(if latent { "samples" } else { "image" })?.clone()]);
        };
        if latent && method == ScaleMethod::Lanczos {
            return Err(NodeError::msg(
                "upscale_method: lanczos resamples images in 8 bits (as ComfyUI takes it from Pillow) and would \
                 quantise latents; use nearest-exact, bilinear, area, bicubic or bislerp",
            ));
        }
        if new_height == 0 || new_width == 0 {
            return Err(NodeError::msg(format!(
                "the new size {new_width}x{new_height} has a side of 0"
            )));
        }
        let cropped = match crop {
            Crop::Center => crop_to_aspect(&input, (new_height, new_width)).map_err(failed)?,
            Crop::Disabled => input,
        };
        let resized = resize(&cropped, (new_height, new_width), method).map_err(failed)?;
        let handle = match latent {
            // A noise mask stays as it is (the sampler resamples it to the latents' size), and so do
            // the latents' numbers in their batch.
            true => {
                let latent = args.handle::<Latent>("samples")?;
                Handle::new(
                    socket,
                    Arc::new(Latent {
                        samples: resized,
                        ..(*latent).clone()
                    }),
                )
            }
            false => Handle::new(
                socket,
                Arc::new(Image {
                    pixels: resized
                        .permute((0, 2, 3, 1))
                        .and_then(|t| t.contiguous())
                        .map_err(failed)?,
                }),
            ),
        };
        Ok(vec![Value::Handle(handle)])
    }
}
