//! Recording a step as a CUDA graph on the device's compute stream, and replaying it.

use super::StepKey;
use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{DType, Device, Result, Shape, Tensor};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Where each key's step stands.
enum Recording {
    /// Ran once as it is; the next step with the key is recorded into an output of this shape.
    Warmed(Shape, DType),
    /// Replayed from now on.
    Recorded(RecordedStep),
    /// Recording failed: queued from the host from now on.
    Queued,
}

/// A run's recordings, by key.
pub(super) struct Recorder {
    device: Device,
    steps: RefCell<HashMap<StepKey, Recording>>,
    replayed: Cell<usize>,
}

impl Recorder {
    pub(super) fn new(device: Device) -> Self {
        Self {
            device,
            steps: RefCell::default(),
            replayed: Cell::new(0),
        }
    }

    pub(super) fn replayed(&self) -> usize {
        self.replayed.get()
    }

    /// `step` on `inputs` as `key`'s recording stands, moving it on.
    pub(super) fn run(
        &self,
        key: StepKey,
        inputs: &[Tensor],
        step: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let cuda = self.device.as_cuda_device()?;
        let recording = self.steps.borrow_mut().remove(&key);
        let (output, recording) = match recording {
            None => {
                // The small host data the step uploads (kernel parameters) stays on the device,
                // found by value, for the recording to read from there.
                let _kept = cuda.enable_cuda_graph_htod_cache();
                let output = step(inputs)?;
                let warmed = Recording::Warmed(output.shape().clone(), output.dtype());
                (output, warmed)
            }
            Some(Recording::Warmed(shape, dtype)) => {
                // The graph allocates from a pool of its own: the blocks the steps before it left
                // cached in the other pool go back to the driver first, not to be held twice.
                swapgraph_model::release_cached_memory(&self.device);
                match RecordedStep::record(cuda, inputs, (&shape, dtype), step) {
                    Ok(recorded) => (self.replay(&recorded, inputs)?, Recording::Recorded(recorded)),
                    Err(e) => {
                        tracing::warn!(
                            "denoising steps are queued from the host: recording one as a CUDA graph failed: {e}"
                        );
                        (step(inputs)?, Recording::Queued)
                    }
                }
            }
            Some(Recording::Recorded(recorded)) => (self.replay(&recorded, inputs)?, Recording::Recorded(recorded)),
            Some(Recording::Queued) => (step(inputs)?, Recording::Queued),
        };
        self.steps.borrow_mut().insert(key, recording);
        Ok(output)
    }

    fn replay(&self, recorded: &RecordedStep, inputs: &[Tensor]) -> Result<Tensor> {
        let output = recorded.replay(inputs)?;
        self.replayed.set(self.replayed.get() + 1);
        Ok(output)
    }
}

impl Drop for Recorder {
    /// The graphs go, and so does the memory they held, for the work after the run.
    fn drop(&mut self) {
        self.steps.borrow_mut().clear();
        swapgraph_model::release_cached_memory(&self.device);
    }
}

/// A step as one graph, reading its inputs from buffers of its own and leaving its output in
/// another.
struct RecordedStep {
    graph: CudaGraph,
    inputs: Vec<Tensor>,
    output: Tensor,
}

impl RecordedStep {
    /// Records `step` on the compute stream, reading copies of `inputs` and writing an output
    /// of `shape`: queued, not run.
    fn record(
        cuda: &CudaDevice,
        inputs: &[Tensor],
        (shape, dtype): (&Shape, DType),
        step: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    ) -> Result<Self> {
        let device = Device::Cuda(cuda.clone());
        let recorded_inputs = inputs.iter().map(Tensor::zeros_like).collect::<Result<Vec<_>>>()?;
        let output = Tensor::zeros(shape, dtype, &device)?;
        let _kept = cuda.enable_cuda_graph_htod_cache();
        let stream = cuda.cuda_stream();
        // Relaxed: other threads (a server's, BlockSwap's) may use the driver meanwhile.
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .w()?;
        // Every tensor the step makes is dropped inside the recording, so the graph frees all
        // it allocates.
        let queued = step(&recorded_inputs).and_then(|out| output.slice_set(&out.contiguous()?, 0, 0));
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH);
        if queued.is_err() || graph.is_err() {
            // Frees refused inside a broken recording are left as the context's error state.
            let _ = stream.context().check_err();
        }
        queued?;
        let graph = graph
            .w()?
            .ok_or_else(|| candle_core::Error::Msg("the recording holds no work".into()))?;
        graph.upload().w()?;
        Ok(Self {
            graph,
            inputs: recorded_inputs,
            output,
        })
    }

    /// Queues a replay on `inputs`: its output, copied out of the recorded buffer.
    fn replay(&self, inputs: &[Tensor]) -> Result<Tensor> {
        for (recorded, input) in self.inputs.iter().zip(inputs) {
            recorded.slice_set(&input.contiguous()?, 0, 0)?;
        }
        self.graph.launch().w()?;
        self.output.copy()
    }
}
