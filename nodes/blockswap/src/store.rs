//! The streaming weight store: resident units on the device, swapped units as host master
//! copies copied in right before they run.
//!
//! This is the synchronous path (copy, then compute), which needs nothing beyond candle's device
//! copies and is what runs on the CPU (where the copy is a no-op) and in CPU-only builds; the
//! CUDA build's side-stream path replaces `fetch` with copies from page-locked memory on a
//! dedicated stream.

use crate::plan::{block_of, SwapPlan};
use crate::settings::{Granularity, SwapSettings};
use candle_core::{DType, Device, Result, Tensor};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use swapgraph_model::{SourceError, TensorSource, UnitSpec, UnitWeights, WeightStore};
use swapgraph_node_api::MemoryReport;

/// Where one unit's weights live.
enum Home {
    /// On the device for the store's lifetime.
    Resident(UnitWeights),
    /// On the host; copied in per use.
    Host(HashMap<String, Tensor>),
}

/// Counters since the store was built.
#[derive(Default)]
struct Stats {
    forward_passes: u64,
    bytes_streamed: u64,
    transfer: Duration,
    per_unit: Vec<Duration>,
}

/// Hands out weights, streaming the units the plan swaps.
pub struct SwapStore {
    units: Vec<UnitSpec>,
    homes: Vec<Home>,
    plan: SwapPlan,
    settings: SwapSettings,
    device: Device,
    dtype: DType,
    /// Block granularity: the block whose units are on the device, and those units.
    current_block: Mutex<Option<(String, HashMap<usize, UnitWeights>)>>,
    stats: Mutex<Stats>,
}

impl SwapStore {
    /// Loads resident units onto `device` and swapped units into host memory.
    ///
    /// # Errors
    /// A missing or mis-shaped tensor in `source`.
    pub fn load(
        units: Vec<UnitSpec>,
        source: &TensorSource,
        plan: SwapPlan,
        settings: SwapSettings,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, SourceError> {
        let homes = units
            .iter()
            .zip(&plan.swapped)
            .map(|(unit, &swapped)| {
                let on = if swapped { &Device::Cpu } else { device };
                let tensors = unit
                    .tensors
                    .iter()
                    .map(|(name, shape)| Ok((name.clone(), source.load(&unit.key(name), shape, dtype, on)?)))
                    .collect::<std::result::Result<HashMap<_, _>, SourceError>>()?;
                Ok(if swapped {
                    Home::Host(tensors)
                } else {
                    Home::Resident(UnitWeights::new(tensors))
                })
            })
            .collect::<std::result::Result<Vec<_>, SourceError>>()?;
        let stats = Stats {
            per_unit: vec![Duration::ZERO; units.len()],
            ..Stats::default()
        };
        Ok(Self {
            units,
            homes,
            plan,
            settings,
            device: device.clone(),
            dtype,
            current_block: Mutex::new(None),
            stats: Mutex::new(stats),
        })
    }

    /// Copies a host unit to the device, counting bytes and time.
    fn fetch(&self, unit: usize, tensors: &HashMap<String, Tensor>) -> Result<UnitWeights> {
        let started = Instant::now();
        let copied = tensors
            .iter()
            .map(|(name, tensor)| Ok((name.clone(), tensor.to_device(&self.device)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let weights = UnitWeights::new(copied);
        let elapsed = started.elapsed();
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.bytes_streamed += weights.bytes();
        stats.transfer += elapsed;
        stats.per_unit[unit] += elapsed;
        Ok(weights)
    }

    /// Block granularity: all of `unit`'s block on the device, then `unit` from it.
    fn acquire_in_block(&self, unit: usize) -> Result<UnitWeights> {
        let block = block_of(&self.units[unit]).unwrap_or_default();
        let mut current = self.current_block.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_none_or(|(name, _)| *name != block) {
            *current = None; // the previous block leaves the device before the next arrives
            let mut loaded = HashMap::new();
            for (index, home) in self.homes.iter().enumerate() {
                if let (Home::Host(tensors), true) = (home, block_of(&self.units[index]).as_deref() == Some(&block)) {
                    loaded.insert(index, self.fetch(index, tensors)?);
                }
            }
            *current = Some((block, loaded));
        }
        current
            .as_ref()
            .and_then(|(_, loaded)| loaded.get(&unit).cloned())
            .ok_or_else(|| candle_core::Error::Msg(format!("unit {unit} missing from its block")))
    }
}

impl WeightStore for SwapStore {
    fn units(&self) -> &[UnitSpec] {
        &self.units
    }

    fn acquire(&self, unit: usize) -> Result<UnitWeights> {
        if unit == 0 {
            self.stats.lock().unwrap_or_else(PoisonError::into_inner).forward_passes += 1;
        }
        match self.homes.get(unit) {
            Some(Home::Resident(weights)) => Ok(weights.clone()),
            Some(Home::Host(tensors)) => match self.settings.granularity {
                Granularity::Unit => self.fetch(unit, tensors),
                Granularity::Block => self.acquire_in_block(unit),
            },
            None => candle_core::bail!("no unit {unit}"),
        }
    }

    fn release(&self, unit: usize) {
        if unit + 1 == self.units.len() {
            *self.current_block.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn report(&self) -> Option<MemoryReport> {
        if !self.settings.debug {
            return None;
        }
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let passes = stats.forward_passes.max(1) as f64;
        let mut report = crate::report::plan_report(&self.plan, &self.settings);
        report
            .details
            .push(("forward passes".into(), stats.forward_passes.to_string()));
        report
            .details
            .push(("streamed per pass".into(), mib(stats.bytes_streamed as f64 / passes)));
        report.details.push((
            "transfer per pass".into(),
            format!("{:.2} ms", stats.transfer.as_secs_f64() * 1e3 / passes),
        ));
        let mut slowest: Vec<(usize, Duration)> = stats
            .per_unit
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, d)| !d.is_zero())
            .collect();
        slowest.sort_by_key(|(_, total)| std::cmp::Reverse(*total));
        for (unit, total) in slowest.into_iter().take(5) {
            let label = format!("transfer {}", self.units[unit].name);
            report
                .details
                .push((label, format!("{:.2} ms per pass", total.as_secs_f64() * 1e3 / passes)));
        }
        Some(report)
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}
