//! An SDXL-size ControlNet beside the UNet, as InstantID's IdentityNet runs in the main job:
//! every step it reads the same latents, attends to 16 face tokens instead of the text, and its
//! residuals go into the UNet's skips and middle block. Its weights stay resident; its hint is
//! embedded at the first step and kept, as the sampler keeps it.

use candle_core::{DType, Device, Result, Tensor};
use swapgraph_model::{seeded_tensor, Network, ResidentStore, TensorSource};
use swapgraph_sdxl::controlnet::{ControlNet, ControlNetConfig, EmbeddedHint, Hint};
use swapgraph_sdxl::unet::{ControlResiduals, ProjectedContext, UNetInput};

/// InstantID's face tokens: the Resampler's 16 queries, each as wide as the UNet's context.
const FACE_TOKENS: usize = 16;

/// A ControlNet with seeded random weights on the device, and the inputs of its steps.
pub(crate) struct IdentityNet {
    net: ControlNet,
    store: ResidentStore,
    projected: ProjectedContext,
    tokens: Tensor,
    hint_image: Tensor,
    embedded: EmbeddedHint,
}

impl IdentityNet {
    /// The ControlNet for a CFG batch of two at `latent` x `latent`, its context projected once.
    pub(crate) fn new(latent: usize, dtype: DType, device: &Device) -> Result<Self> {
        let net = ControlNet::new(ControlNetConfig::sdxl())?;
        let params = net
            .units()
            .iter()
            .flat_map(|unit| unit.tensors.iter().map(|(name, shape)| (unit.key(name), shape.clone())))
            .collect();
        let source = TensorSource::seeded("random IdentityNet", "random IdentityNet", params, dtype);
        let store = ResidentStore::load_for(&net, &source, dtype, device)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let width = net.config().unet.cross_attention_dim;
        let randn = |name: &str, shape: &[usize]| {
            let count = shape.iter().product::<usize>();
            seeded_tensor("identity_net inputs", name, &(count, 1).into(), dtype)?
                .reshape(shape)?
                .to_device(device)
        };
        let tokens = randn("face tokens", &[2, FACE_TOKENS, width])?;
        let side = latent * net.config().hint_factor();
        let hint_image = randn("hint", &[2, 3, side, side])?;
        let projected = net.project_context(&store, &tokens)?;
        Ok(Self {
            net,
            store,
            projected,
            tokens,
            hint_image,
            embedded: EmbeddedHint::default(),
        })
    }

    /// The residuals for the UNet's `input` (its latents, timesteps and pooled text).
    pub(crate) fn residuals(&self, input: &UNetInput) -> Result<ControlResiduals> {
        let image = || Ok(self.hint_image.clone());
        let hint = Hint {
            image: &image,
            embedded: &self.embedded,
        };
        let input = UNetInput {
            context: &self.tokens,
            projected: Some(&self.projected),
            control: None,
            extra_tokens: None,
            ..*input
        };
        self.net.forward(&self.store, &input, &hint, 1.0)
    }
}
