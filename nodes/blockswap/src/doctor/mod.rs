//! `swapgraph doctor`: checks that BlockSwap can work on this machine, and recommends settings
//! from what it measures here (free device memory, activation memory per resolution,
//! host-to-device bandwidth) instead of a static table.

mod command;
mod recommend;
mod round_trip;
mod workflow;

pub use command::doctor_command;
pub use recommend::{recommend, Fit, Recommendation, HEADROOM_FRACTION};
pub use round_trip::{round_trip, RoundTrip};

use crate::probe::probe_transfers;
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Shape};
use swapgraph_model::{
    converter_encoding, device_info, device_memory, ggml_name, weight_dtype, StreamedFamily, UnitSpec, KEPT_AS_STORED,
};

/// Resolutions recommendations are made for.
pub const RESOLUTIONS: [usize; 2] = [1024, 1280];

/// Bytes copied per bandwidth measurement.
const PROBE_BYTES: usize = 256 << 20;

/// How one check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Pass,
    /// Does not work; the detail says why.
    Fail,
    /// Not applicable here (e.g. bandwidth on the CPU).
    Skip,
}

/// One line of the doctor's report.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// Figures or the reason.
    pub detail: String,
}

/// Everything the doctor found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Diagnosis {
    /// The network the recommendations are for, e.g. "SDXL UNet".
    pub model: &'static str,
    /// How its weights are kept for the recommendations (f16, fp8 (e4m3), GGUF blocks).
    pub weights: String,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
    /// Settings per resolution (GPU only).
    pub recommendations: Vec<Recommendation>,
    /// Measured page-locked host-to-device rate, when it could be measured.
    pub pinned_gb_s: Option<f64>,
}

impl Diagnosis {
    /// Whether every check passed or was skipped.
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    fn push(&mut self, name: &'static str, status: Status, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            status,
            detail: detail.into(),
        });
    }
}

/// How the weights the recommendations are made for are kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeptWeights {
    /// In the device's dtype.
    Compute,
    /// In this dtype (8-bit floats).
    Dtype(DType),
    /// As a GGUF file of these blocks stores them (laid out as ComfyUI-GGUF's converter
    /// writes them).
    Blocks(GgmlDType),
}

impl KeptWeights {
    /// The dtype stores keep the weights in on `device`.
    fn dtype(self, device: &Device) -> DType {
        match self {
            Self::Compute => weight_dtype(device),
            Self::Dtype(dtype) => dtype,
            Self::Blocks(_) => KEPT_AS_STORED,
        }
    }

    /// `unit` as kept: for blocks, each tensor's shape its bytes in the converter's layout.
    fn unit(self, unit: &UnitSpec) -> UnitSpec {
        let Self::Blocks(blocks) = self else {
            return unit.clone();
        };
        let tensors = unit
            .tensors
            .iter()
            .map(|(name, shape)| (name.clone(), Shape::from(converter_encoding(shape, blocks).bytes())))
            .collect();
        UnitSpec {
            tensors,
            ..unit.clone()
        }
    }

    /// How the weights are kept, for the summary.
    fn describe(self, device: &Device) -> String {
        match self {
            Self::Blocks(blocks) => format!(
                "{} blocks (GGUF, as stored), dequantized on the device layer by layer as the model runs",
                ggml_name(blocks)
            ),
            _ => crate::report::kept_name(self.dtype(device)).to_string(),
        }
    }
}

/// Runs every check on `device` (already opened by the caller, which reports failing to open
/// it), streaming and sizing a model of `family` whose weights are kept as `kept` says.
pub fn diagnose(device: &Device, family: &dyn StreamedFamily, kept: KeptWeights) -> Diagnosis {
    let mut diagnosis = Diagnosis {
        model: family.name(),
        weights: kept.describe(device),
        ..Diagnosis::default()
    };
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    match (device_info(device), device_memory(device)) {
        (Some(info), Some(memory)) => diagnosis.push(
            "device",
            Status::Pass,
            format!(
                "{}; driver supports CUDA {}{}; {:.1} GiB free of {:.1} GiB",
                info.name,
                info.driver_cuda,
                info.driver.map(|d| format!(" ({d})")).unwrap_or_default(),
                gib(memory.free),
                gib(memory.total)
            ),
        ),
        _ => diagnosis.push(
            "device",
            Status::Skip,
            "the CPU: weights already live in host memory, BlockSwap plans but copies nothing",
        ),
    }
    match probe_transfers(device, PROBE_BYTES) {
        Ok(probe) => {
            match &probe.pinned_gb_s {
                Ok(_) => diagnosis.push("page-locked memory", Status::Pass, "allocated 256 MiB"),
                Err(reason) => diagnosis.push(
                    "page-locked memory",
                    Status::Fail,
                    format!(
                        "{reason}; BlockSwap falls back to synchronous copies (set non_blocking: false to silence)"
                    ),
                ),
            }
            let pinned = probe
                .pinned_gb_s
                .as_ref()
                .map_or("n/a".to_string(), |rate| format!("{rate:.1} GB/s"));
            diagnosis.push(
                "host-to-device bandwidth",
                Status::Pass,
                format!(
                    "page-locked {pinned}, pageable {:.1} GB/s (256 MiB copies, best of 5)",
                    probe.pageable_gb_s
                ),
            );
            diagnosis.pinned_gb_s = probe.pinned_gb_s.ok();
        }
        Err(reason) => {
            diagnosis.push("page-locked memory", Status::Skip, reason.clone());
            diagnosis.push("host-to-device bandwidth", Status::Skip, reason);
        }
    }
    match round_trip(device, family) {
        Ok(trip) => {
            let identical = trip.max_difference == 0.0;
            let leak = trip.leaked_bytes.unwrap_or(0);
            let status = if identical && leak <= 0 {
                Status::Pass
            } else {
                Status::Fail
            };
            let memory = match trip.leaked_bytes {
                Some(bytes) if bytes > 0 => format!("device memory {bytes} bytes above its starting point"),
                Some(_) => "device memory back to its starting point".to_string(),
                None => "device memory not reported here".to_string(),
            };
            let outputs = if identical {
                "outputs identical to the resident model".to_string()
            } else {
                format!(
                    "outputs differ from the resident model by up to {}",
                    trip.max_difference
                )
            };
            diagnosis.push(
                "BlockSwap round trip",
                status,
                format!(
                    "tiny {} streamed ({}): {outputs}; {memory}",
                    family.name(),
                    trip.transfers
                ),
            );
        }
        Err(reason) => diagnosis.push("BlockSwap round trip", Status::Fail, reason),
    }
    if let Some(memory) = device_memory(device) {
        recommend_all(device, memory.free, family, kept, &mut diagnosis);
    }
    diagnosis
}

/// Measures activations per resolution and recommends settings for `family`'s network, its
/// weights kept as `kept` says.
fn recommend_all(
    device: &Device,
    free: u64,
    family: &dyn StreamedFamily,
    kept: KeptWeights,
    diagnosis: &mut Diagnosis,
) {
    let dtype = weight_dtype(device);
    let name = family.name();
    let units: Vec<UnitSpec> = match family.units() {
        Ok(units) => units.iter().map(|unit| kept.unit(unit)).collect(),
        Err(e) => return diagnosis.push("recommendations", Status::Fail, format!("{name} layout: {e}")),
    };
    let kept = kept.dtype(device);
    let companions = match family.companion_bytes(device) {
        Ok(bytes) => bytes,
        Err(e) => {
            return diagnosis.push(
                "recommendations",
                Status::Fail,
                format!("the models beside the {name}: {e}"),
            )
        }
    };
    for resolution in RESOLUTIONS {
        let activations = match family.step_activations(device, dtype, resolution) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => {
                diagnosis.push(
                    "activations",
                    Status::Fail,
                    format!("one {name} step at {resolution}x{resolution} does not run here: {e}"),
                );
                continue;
            }
        };
        match recommend(&units, kept, free, companions, resolution, activations) {
            Ok(recommendation) => diagnosis.recommendations.push(recommendation),
            Err(e) => diagnosis.push("recommendations", Status::Fail, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swapgraph_sdxl::unet::{UNet, UNetConfig};

    #[test]
    fn gguf_blocks_are_planned_in_the_converters_bytes() {
        let units = UNet::new(UNetConfig::sdxl()).unwrap().units().to_vec();
        let bytes = |kept: KeptWeights| -> u64 {
            let dtype = kept.dtype(&Device::Cpu);
            units.iter().map(|unit| kept.unit(unit).bytes(dtype)).sum()
        };
        let f16 = bytes(KeptWeights::Dtype(DType::F16));
        let ratio = |kind| bytes(KeptWeights::Blocks(kind)) as f64 / f16 as f64;
        // 4.5 and 8.5 bits a weight in blocks, with the vectors in f32.
        assert!(
            (0.28..0.30).contains(&ratio(GgmlDType::Q4K)),
            "Q4_K: {}",
            ratio(GgmlDType::Q4K)
        );
        assert!(
            (0.53..0.55).contains(&ratio(GgmlDType::Q8_0)),
            "Q8_0: {}",
            ratio(GgmlDType::Q8_0)
        );
    }
}
