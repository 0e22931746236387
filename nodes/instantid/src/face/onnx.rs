//! ONNX models run with tract (pure Rust), one optimized plan per input shape.

use super::FaceError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tract_onnx::prelude::*;

/// An optimized, runnable model.
type Plan = Arc<TypedRunnableModel>;

/// One output: its shape and values.
pub type Output = (Vec<usize>, Vec<f32>);

/// An ONNX model whose plans are built per input shape on first use.
pub struct OnnxModel {
    path: PathBuf,
    model: InferenceModel,
    plans: Mutex<HashMap<Vec<usize>, Plan>>,
}

impl OnnxModel {
    /// Reads `path`.
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] naming the file when it is missing or not a valid ONNX model.
    pub fn open(path: &Path) -> Result<Self, FaceError> {
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| FaceError::Unreadable(format!("cannot read ONNX model {}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            model,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// Runs the model on one f32 input of `shape`; every output as (shape, values).
    ///
    /// # Errors
    /// [`FaceError::Unreadable`] naming the file when the model rejects the input.
    pub fn run(&self, shape: &[usize], values: Vec<f32>) -> Result<Vec<Output>, FaceError> {
        let failed = |e: TractError| FaceError::Unreadable(format!("ONNX model {}: {e}", self.path.display()));
        let plan = self.plan(shape).map_err(failed)?;
        let input = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), values)
            .map_err(|e| FaceError::Unreadable(format!("ONNX model {}: input: {e}", self.path.display())))?;
        let outputs = plan.run(tvec!(Tensor::from(input).into())).map_err(failed)?;
        outputs
            .iter()
            .map(|output| {
                let view = output.to_plain_array_view::<f32>().map_err(failed)?;
                Ok((view.shape().to_vec(), view.iter().copied().collect()))
            })
            .collect()
    }

    fn plan(&self, shape: &[usize]) -> TractResult<Plan> {
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(plan) = plans.get(shape) {
            return Ok(Arc::clone(plan));
        }
        let plan = self
            .model
            .clone()
            .with_input_fact(0, f32::fact(shape).into())?
            .into_optimized()?
            .into_runnable()?;
        plans.insert(shape.to_vec(), Arc::clone(&plan));
        Ok(plan)
    }
}
