//! The streaming weight store: resident units on the device, swapped units as host master
//! copies copied in right before they run.
//!
//! Two ways to move a swapped unit: the synchronous path (copy from pageable memory, then
//! compute), which needs nothing beyond candle's device copies and is what runs on the CPU (where
//! the copy is a no-op), with `non_blocking: false`, and wherever page-locked memory is refused;
//! and, in the CUDA build, the streaming path ([`crate::streaming`]): side-stream copies from
//! page-locked memory into a ring of device memory, prefetched while earlier units compute.

use crate::plan::{block_of, SwapPlan};
use crate::report::{RunFigures, UnitLine};
use crate::settings::{Granularity, SwapSettings};
use candle_core::{DType, Device, Result, Tensor};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use swapgraph_model::{device_memory, SourceError, TensorSource, UnitSpec, UnitWeights, WeightStore};
use swapgraph_node_api::MemoryReport;

/// Where one unit's weights live.
enum Home {
    /// On the device for the store's lifetime.
    Resident(UnitWeights),
    /// On the host as tensors; copied in per use (synchronous path).
    Host(HashMap<String, Tensor>),
    /// In the streamer's page-locked memory (streaming path).
    Streamed,
}

/// How swapped units reach the device.
enum Transfers {
    /// Copy, then compute.
    Synchronous,
    /// Side-stream copies from page-locked memory, prefetched.
    #[cfg(feature = "cuda")]
    Streaming(Box<crate::streaming::Streamer>),
}

impl Transfers {
    fn describe(&self) -> &'static str {
        match self {
            Self::Synchronous => "synchronous (copy, then compute)",
            #[cfg(feature = "cuda")]
            Self::Streaming(_) => "side stream from page-locked memory, prefetched",
        }
    }
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
    transfers: Transfers,
    /// Why the streaming path was not taken although asked for, for the report.
    fallback: Option<String>,
    device: Device,
    dtype: DType,
    /// Block granularity: the block whose units are on the device, and those units.
    current_block: Mutex<Option<(String, HashMap<usize, UnitWeights>)>>,
    stats: Mutex<Stats>,
}

impl SwapStore {
    /// Loads resident units onto `device`, and swapped units into page-locked memory (CUDA,
    /// `non_blocking`) or host tensors (otherwise).
    ///
    /// # Errors
    /// A missing or mis-shaped tensor in `source`, or a device that refuses the transfer buffers.
    pub fn load(
        units: Vec<UnitSpec>,
        source: &TensorSource,
        plan: SwapPlan,
        settings: SwapSettings,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<Self, SourceError> {
        let (transfers, fallback) = Self::transfers(&units, source, &plan, &settings, device, dtype)?;
        let streamed = !matches!(transfers, Transfers::Synchronous);
        let homes = units
            .iter()
            .zip(&plan.swapped)
            .map(|(unit, &swapped)| {
                // Context projections run once per conditioning: they wait on the host, packed
                // with the streamed units when streaming.
                let on_host = swapped || !unit.section.in_every_pass();
                if on_host && streamed {
                    return Ok(Home::Streamed);
                }
                let on = if on_host { &Device::Cpu } else { device };
                let tensors = unit
                    .tensors
                    .iter()
                    .map(|(name, shape)| Ok((name.clone(), source.load(&unit.key(name), shape, dtype, on)?)))
                    .collect::<std::result::Result<HashMap<_, _>, SourceError>>()?;
                Ok(if on_host {
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
            transfers,
            fallback,
            device: device.clone(),
            dtype,
            current_block: Mutex::new(None),
            stats: Mutex::new(stats),
        })
    }

    /// The streaming path where it is asked for and available, else the synchronous one (with
    /// the reason when streaming was asked for and could not be had).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    fn transfers(
        units: &[UnitSpec],
        source: &TensorSource,
        plan: &SwapPlan,
        settings: &SwapSettings,
        device: &Device,
        dtype: DType,
    ) -> std::result::Result<(Transfers, Option<String>), SourceError> {
        if !settings.non_blocking || device.is_cpu() || plan.swapped_units() == 0 {
            return Ok((Transfers::Synchronous, None));
        }
        #[cfg(feature = "cuda")]
        {
            use crate::streaming::{SetupError, Streamer};
            match Streamer::new(
                units,
                &plan.swapped,
                source,
                device,
                dtype,
                plan.buffer_bytes,
                settings.debug,
            ) {
                Ok(streamer) => Ok((Transfers::Streaming(Box::new(streamer)), None)),
                Err(SetupError::Source(e)) => Err(e),
                Err(SetupError::Device(message)) => Err(SourceError::Device(message)),
                Err(pinning @ SetupError::Pinning { .. }) => {
                    let reason = format!("{pinning}; using synchronous copies from pageable memory");
                    tracing::warn!("BlockSwap: {reason}");
                    Ok((Transfers::Synchronous, Some(reason)))
                }
            }
        }
        #[cfg(not(feature = "cuda"))]
        Ok((
            Transfers::Synchronous,
            Some("side-stream copies need the CUDA build; using synchronous copies".into()),
        ))
    }

    /// A host unit's tensors on the device.
    fn copy_in(&self, tensors: &HashMap<String, Tensor>) -> Result<UnitWeights> {
        let copied = tensors
            .iter()
            .map(|(name, tensor)| Ok((name.clone(), tensor.to_device(&self.device)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(UnitWeights::new(copied))
    }

    /// Copies a host unit of the pass to the device, counting bytes and time.
    fn fetch(&self, unit: usize, tensors: &HashMap<String, Tensor>) -> Result<UnitWeights> {
        let started = Instant::now();
        let weights = self.copy_in(tensors)?;
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

impl SwapStore {
    /// A unit of the streaming path, counting the bytes its acquisition put in flight.
    fn acquire_streamed(&self, unit: usize) -> Result<UnitWeights> {
        match &self.transfers {
            #[cfg(feature = "cuda")]
            Transfers::Streaming(streamer) => {
                let (weights, copied) = streamer.acquire(unit)?;
                self.stats.lock().unwrap_or_else(PoisonError::into_inner).bytes_streamed += copied;
                Ok(weights)
            }
            Transfers::Synchronous => candle_core::bail!("unit {unit} has no host copy"),
        }
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
        if self.units.get(unit).is_some_and(|u| !u.section.in_every_pass()) {
            // A context projection, once per conditioning: outside the pass's figures.
            return match (self.homes.get(unit), &self.transfers) {
                (Some(Home::Host(tensors)), _) => self.copy_in(tensors),
                #[cfg(feature = "cuda")]
                (Some(Home::Streamed), Transfers::Streaming(streamer)) => streamer.copy_outside_ring(unit),
                _ => candle_core::bail!("no context projection unit {unit}"),
            };
        }
        match self.homes.get(unit) {
            Some(Home::Resident(weights)) => Ok(weights.clone()),
            Some(Home::Streamed) => self.acquire_streamed(unit),
            Some(Home::Host(tensors)) => match self.settings.granularity {
                Granularity::Unit => self.fetch(unit, tensors),
                Granularity::Block => self.acquire_in_block(unit),
            },
            None => candle_core::bail!("no unit {unit}"),
        }
    }

    fn release(&self, unit: usize) {
        #[cfg(feature = "cuda")]
        if let Transfers::Streaming(streamer) = &self.transfers {
            streamer.release(unit);
        }
        if unit + 1 == self.plan.pass_units {
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
        Some(crate::report::run_report(&self.plan, &self.settings, &self.figures()))
    }
}

impl SwapStore {
    /// Transfer figures per forward pass so far: measured on the device by the streaming
    /// path's events, by the host clock on the synchronous path (where compute waits for all of
    /// it).
    pub fn figures(&self) -> RunFigures {
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let passes = stats.forward_passes.max(1) as f64;
        let units = match &self.transfers {
            Transfers::Synchronous => stats
                .per_unit
                .iter()
                .enumerate()
                .filter(|(_, total)| !total.is_zero())
                .map(|(unit, total)| {
                    let ms = total.as_secs_f64() * 1e3 / passes;
                    UnitLine {
                        name: self.units[unit].name.clone(),
                        transfer_ms: ms,
                        wait_ms: ms,
                    }
                })
                .collect(),
            #[cfg(feature = "cuda")]
            Transfers::Streaming(streamer) => {
                let mut timings: Vec<_> = streamer.timings().into_iter().collect();
                timings.sort_by_key(|(unit, _)| *unit);
                timings
                    .into_iter()
                    .map(|(unit, timing)| UnitLine {
                        name: self.units[unit].name.clone(),
                        transfer_ms: timing.transfer_ms / passes,
                        wait_ms: timing.wait_ms / passes,
                    })
                    .collect()
            }
        };
        let (pinned_bytes, ring_bytes) = match &self.transfers {
            Transfers::Synchronous => (None, None),
            #[cfg(feature = "cuda")]
            Transfers::Streaming(streamer) => (Some(streamer.pinned_bytes()), Some(streamer.ring_bytes())),
        };
        RunFigures {
            transfers: self.transfers.describe().to_string(),
            pinned_bytes,
            ring_bytes,
            fallback: self.fallback.clone(),
            passes: stats.forward_passes,
            streamed_per_pass: stats.bytes_streamed as f64 / passes,
            units,
            device: device_memory(&self.device),
        }
    }
}
