//! Listing the parameters a layer constructor asks for, without allocating them.

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use std::sync::{Arc, Mutex, PoisonError};

/// Answers every request with a zero-stride tensor of the asked shape and remembers the request.
struct Recorder(Arc<Mutex<Vec<(String, Shape)>>>);

impl SimpleBackend for Recorder {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, device: &Device) -> Result<Tensor> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.to_string(), shape.clone()));
        Tensor::zeros((), dtype, device)?.broadcast_as(shape)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("recording builder cannot answer an unchecked request for {name}")
    }

    /// Every tensor a layer might ask for, except the scales that stores offer beside weights
    /// kept in 8 bits: those are never parameters of their own.
    fn contains_tensor(&self, name: &str) -> bool {
        !name.ends_with(crate::store::SCALE_SUFFIX)
    }
}

/// Runs `build` against a recording builder and returns the (name, shape) of every tensor it
/// asked for, in order. This is how a model derives its unit list from its layer code alone,
/// for any size, without touching memory.
///
/// # Errors
/// Whatever `build` returns.
pub fn record_params<T>(build: impl FnOnce(VarBuilder) -> Result<T>) -> Result<Vec<(String, Shape)>> {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let builder = VarBuilder::from_backend(Box::new(Recorder(Arc::clone(&requests))), DType::F32, Device::Cpu);
    build(builder)?;
    let requests = requests.lock().unwrap_or_else(PoisonError::into_inner).clone();
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_names_and_shapes_in_order() {
        let params = record_params(|vb| {
            candle_nn::linear(4, 3, vb.pp("proj"))?;
            candle_nn::group_norm(2, 4, 1e-5, vb.pp("norm"))
        })
        .unwrap();
        let names: Vec<String> = params.iter().map(|(n, s)| format!("{n}{:?}", s.dims())).collect();
        assert_eq!(
            names,
            ["proj.weight[3, 4]", "proj.bias[3]", "norm.weight[4]", "norm.bias[4]"]
        );
    }
}
