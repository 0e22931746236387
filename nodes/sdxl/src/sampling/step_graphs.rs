//! Denoising steps replayed as CUDA graphs. The host queues a step's kernels (the UNet's, its
//! ControlNets' and the image tokens') one by one, a few thousand of them; recorded once as a
//! graph, a step is one launch, and the host's queueing leaves the device's critical path.
//!
//! A step is recorded the second time it runs with the same [`StepKey`]: the first runs as
//! usual and leaves every kernel compiled, every algorithm chosen and every projection cached,
//! none of which a recording may do. Later steps copy their inputs into the recorded buffers and
//! replay. Where the weights move during a step (BlockSwap streaming) nothing is recorded, and a
//! step that cannot be recorded runs as usual from then on, with a warning naming why. Samplers
//! record only with [`SWITCH`] set to `on`: replays give the queued steps' output bit for bit,
//! but a run records its graph again at its second step, and for a whole image that costs more
//! than its replays save (`bench/gpu_graphs.sh images`).

use candle_core::{Device, Result, Tensor};

#[cfg(all(test, feature = "cuda"))]
mod cuda_tests;
#[cfg(feature = "cuda")]
mod recorder;

/// Set to `on` to record steps and replay them (each step's kernels are queued from the host
/// otherwise).
pub const SWITCH: &str = "SWAPGRAPH_CUDA_GRAPHS";

/// What a recorded step depends on beside its inputs' values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StepKey {
    /// The inputs' shapes.
    shapes: Vec<Vec<usize>>,
    /// Which adapters act at the step (they change the work, not only its inputs).
    acting: Vec<bool>,
}

/// One sampling run's recorded steps, a graph per [`StepKey`]; their device memory is given
/// back when the run drops them.
pub struct StepGraphs {
    #[cfg(feature = "cuda")]
    recorder: Option<recorder::Recorder>,
}

impl StepGraphs {
    /// Steps on `device` recorded and replayed where [`SWITCH`] is `on` and the step is
    /// `replayable` (every store it reads hands out the same resident weights at every pass);
    /// queued from the host otherwise, as by default.
    pub fn new(device: &Device, replayable: bool) -> Self {
        let asked = std::env::var(SWITCH).is_ok_and(|v| v.eq_ignore_ascii_case("on"));
        if asked && device.is_cuda() && !replayable {
            tracing::info!(
                "denoising steps are queued from the host, not replayed as CUDA graphs: a weight store moves \
                 weights or times each pass (BlockSwap streaming, or its debug mode)"
            );
        }
        if asked && replayable {
            Self::recording(device)
        } else {
            Self::queued()
        }
    }

    /// Steps on `device` recorded and replayed wherever it is a GPU, whatever [`SWITCH`] says.
    pub fn recording(device: &Device) -> Self {
        #[cfg(feature = "cuda")]
        return Self {
            recorder: device.is_cuda().then(|| recorder::Recorder::new(device.clone())),
        };
        #[cfg(not(feature = "cuda"))]
        {
            let _ = device;
            Self::queued()
        }
    }

    /// Every step queued from the host as it comes.
    pub fn queued() -> Self {
        Self {
            #[cfg(feature = "cuda")]
            recorder: None,
        }
    }

    /// `step` on `inputs`, where `acting` says which adapters act: run as it is, or recorded,
    /// or replayed. `step` must read nothing that changes between calls but `inputs` (values
    /// it computes once and caches are fine: the first call makes them).
    ///
    /// # Errors
    /// Whatever `step` returns, or a device error while replaying.
    pub fn run(
        &self,
        inputs: &[Tensor],
        acting: Vec<bool>,
        step: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let Some(recorder) = &self.recorder {
            let key = StepKey {
                shapes: inputs.iter().map(|input| input.dims().to_vec()).collect(),
                acting,
            };
            return recorder.run(key, inputs, &step);
        }
        let _ = acting;
        step(inputs)
    }

    /// Whether steps are recorded (and so hold nothing that must be read after each step, such
    /// as timing marks).
    pub fn records(&self) -> bool {
        #[cfg(feature = "cuda")]
        return self.recorder.is_some();
        #[cfg(not(feature = "cuda"))]
        false
    }

    /// How many steps so far were replays of a recorded graph.
    pub fn replayed(&self) -> usize {
        #[cfg(feature = "cuda")]
        if let Some(recorder) = &self.recorder {
            return recorder.replayed();
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_on_the_cpu_are_queued_as_they_come() -> Result<()> {
        let graphs = StepGraphs::recording(&Device::Cpu);
        let doubled = graphs.run(&[Tensor::new(&[1f32, 2.0], &Device::Cpu)?], vec![], |inputs| {
            &inputs[0] * 2.0
        })?;
        assert_eq!(doubled.to_vec1::<f32>()?, [2.0, 4.0]);
        assert_eq!(graphs.replayed(), 0);
        Ok(())
    }
}
