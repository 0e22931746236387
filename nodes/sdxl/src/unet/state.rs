//! The state a UNet's forward pass threads through its steps.

use super::layout::{Layer, Op};
use super::{ProjectedContext, UNetInput};
use crate::kernels;
use candle_core::{DType, Module, Result, Tensor};

/// What flows between steps: the feature map, the time embedding, the tokens inside a
/// transformer and the stack of skip connections.
pub(crate) struct State {
    pub(crate) x: Tensor,
    pub(crate) emb: Option<Tensor>,
    pub(crate) tokens: Option<Tensor>,
    pub(crate) skips: Vec<Tensor>,
}

impl State {
    /// The state before the stem, holding the noisy latents.
    pub(crate) fn new(sample: &Tensor) -> Self {
        Self {
            x: sample.clone(),
            emb: None,
            tokens: None,
            skips: Vec::new(),
        }
    }

    /// Runs one step's layer on the state, cross-attending to `context`.
    pub(crate) fn apply(
        &mut self,
        layer: &Layer,
        op: &Op,
        input: &UNetInput,
        context: &ProjectedContext,
        dtype: DType,
    ) -> Result<()> {
        match (layer, op) {
            (Layer::Stem(stem), _) => {
                let text_embeds = input.text_embeds.to_dtype(dtype)?;
                self.emb = Some(stem.embedding(input.timesteps, &text_embeds, input.time_ids)?);
                self.x = stem.conv_in(&input.sample.to_dtype(dtype)?)?;
                self.skips.push(self.x.clone());
            }
            (
                Layer::Resnet(resnet),
                Op::Resnet {
                    pop_skip, push_skip, ..
                },
            ) => {
                if *pop_skip {
                    let skip = self
                        .skips
                        .pop()
                        .ok_or_else(|| candle_core::Error::Msg("skip stack empty".into()))?;
                    self.x = kernels::cat_channels(&self.x, &skip)?;
                }
                let emb = self
                    .emb
                    .as_ref()
                    .ok_or_else(|| candle_core::Error::Msg("stem not run".into()))?;
                self.x = resnet.forward(&self.x, Some(emb))?;
                if *push_skip {
                    self.skips.push(self.x.clone());
                }
            }
            (Layer::TransformerIn(way_in), _) => self.tokens = Some(way_in.enter(&self.x)?),
            (Layer::Block(block), Op::Block { layer, .. }) => {
                let extra = match input.extra_tokens {
                    Some(provider) => provider(*layer, (self.x.dim(2)?, self.x.dim(3)?))?,
                    None => None,
                };
                let tokens = self
                    .tokens
                    .take()
                    .ok_or_else(|| candle_core::Error::Msg("no tokens".into()))?;
                self.tokens = Some(block.forward(&tokens, context.layer(*layer)?, extra.as_ref())?);
            }
            (Layer::TransformerOut(way_out), Op::TransformerOut { push_skip, .. }) => {
                let tokens = self
                    .tokens
                    .take()
                    .ok_or_else(|| candle_core::Error::Msg("no tokens".into()))?;
                self.x = way_out.leave(&tokens, &self.x)?;
                if *push_skip {
                    self.skips.push(self.x.clone());
                }
            }
            (Layer::Downsample(down), _) => {
                self.x = down.forward(&self.x)?;
                self.skips.push(self.x.clone());
            }
            (Layer::Upsample(up), _) => {
                let (h, w) = match self.skips.last() {
                    Some(skip) => (skip.dim(2)?, skip.dim(3)?),
                    None => (self.x.dim(2)? * 2, self.x.dim(3)? * 2),
                };
                self.x = up.forward(&self.x, h, w)?;
            }
            (Layer::Head(head), _) => self.x = head.forward(&self.x)?,
            _ => candle_core::bail!("step and layer disagree"),
        }
        Ok(())
    }

    /// Adds a ControlNet's down residuals to the skip connections.
    pub(crate) fn add_down_residuals(&mut self, residuals: &[Tensor]) -> Result<()> {
        if residuals.len() != self.skips.len() {
            candle_core::bail!(
                "ControlNet gave {} down residuals, the UNet has {} skip connections",
                residuals.len(),
                self.skips.len()
            );
        }
        for (skip, residual) in self.skips.iter_mut().zip(residuals) {
            *skip = kernels::add(skip, &residual.to_dtype(skip.dtype())?)?;
        }
        Ok(())
    }
}
