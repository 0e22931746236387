//! The streaming weight store: resident units on the device, swapped units as host master
//! copies copied in right before they run.
//!
//! Two ways to move a swapped unit: the synchronous path (copy from pageable memory, then
//! compute), which needs nothing beyond candle's device copies and is what runs on the CPU (where
//! the copy is a no-op), with `non_blocking: false`, and wherever page-locked memory is refused;
//! and, in the CUDA build, the streaming path ([`crate::streaming`]): side-stream copies from
//! page-locked memory into a ring of device memory, prefetched while earlier units compute.
//!
//! Both keep a host copy of the swapped units. When the host has less memory available than
//! those copies need, the swapped units are instead read from the model's source (its files,
//! through the operating system's page cache) on every use: slower, said in the log and the
//! report, and the process is not killed for want of memory.

use crate::plan::{block_of, SwapPlan};
use crate::report::{RunFigures, UnitLine};
use crate::settings::{Granularity, SwapSettings};
use crate::timeline::PassClock;
use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use swapgraph_model::{
    device_memory, Network, SourceError, TensorSource, UnitDecoding, UnitSpec, UnitWeights, WeightDTypes, WeightStore,
};
use swapgraph_node_api::{host_available_bytes, MemoryReport};

/// Host memory left to the rest of the process (activations on the CPU, images, the models'
/// other parts) when deciding whether the swapped units' host copies fit.
const HOST_MARGIN: u64 = 2 << 30;

/// Where one unit's weights live.
enum Home {
    /// On the device for the store's lifetime.
    Resident(UnitWeights),
    /// On the host as tensors; copied in per use (synchronous path).
    Host(HashMap<String, Tensor>),
    /// In the streamer's page-locked memory (streaming path).
    Streamed,
    /// In the model's source only, read on every use (host memory too short for a copy).
    Source,
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

/// Locks `mutex`; a panic while holding it leaves plain figures behind: keep using them.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// Where [`Home::Source`] units are read from.
    source: Arc<TensorSource>,
    plan: SwapPlan,
    settings: SwapSettings,
    transfers: Transfers,
    /// Why the streaming path was not taken although asked for, for the report.
    fallback: Option<String>,
    device: Device,
    /// The dtypes the model computes in and keeps its weights in.
    dtypes: WeightDTypes,
    /// What each unit's kept weights need to become values (8-bit scales, stored encodings).
    decodings: Vec<Arc<UnitDecoding>>,
    /// Block granularity: the block whose units are on the device, and those units.
    current_block: Mutex<Option<(String, HashMap<usize, UnitWeights>)>>,
    stats: Mutex<Stats>,
    /// The synchronous path's pass timeline (with `debug`).
    clock: Mutex<PassClock>,
}

impl SwapStore {
    /// Loads resident units onto `device`, and swapped units into page-locked memory (CUDA,
    /// `non_blocking`) or host tensors (otherwise), or leaves them in `source` when the host's
    /// available memory cannot hold them; all kept in `dtypes.kept`.
    ///
    /// # Errors
    /// A missing or mis-shaped tensor in `source`, or a device that refuses the transfer buffers.
    pub fn load(
        units: Vec<UnitSpec>,
        source: &Arc<TensorSource>,
        plan: SwapPlan,
        settings: SwapSettings,
        device: &Device,
        dtypes: impl Into<WeightDTypes>,
    ) -> std::result::Result<Self, SourceError> {
        let host_room = host_available_bytes().map(|available| available.saturating_sub(HOST_MARGIN));
        Self::load_within(units, source, plan, settings, (device, dtypes.into()), host_room)
    }

    /// [`SwapStore::load`] with `host_room` bytes of host memory for the swapped units' copies
    /// (`None`: as much as they need).
    pub(crate) fn load_within(
        units: Vec<UnitSpec>,
        source: &Arc<TensorSource>,
        plan: SwapPlan,
        settings: SwapSettings,
        (device, dtypes): (&Device, WeightDTypes),
        host_room: Option<u64>,
    ) -> std::result::Result<Self, SourceError> {
        let dtype = dtypes.kept;
        let on_host = |index: usize| plan.swapped[index] || !units[index].group.every_pass;
        let host_bytes: u64 = (0..units.len())
            .filter(|&i| on_host(i))
            .map(|i| source.kept_unit(&units[i], dtype).bytes(dtype))
            .sum();
        let short_of_host = host_room.is_some_and(|room| host_bytes > room);
        let (transfers, fallback) = if short_of_host {
            let reason = format!(
                "{} of swapped weights would need host memory and {} is available; reading them from the model's \
                 files on every use instead (slower)",
                crate::report::mib(host_bytes as f64),
                crate::report::mib(host_room.unwrap_or_default() as f64)
            );
            tracing::warn!("BlockSwap: {reason}");
            (Transfers::Synchronous, Some(reason))
        } else {
            Self::transfers(&units, source, &plan, &settings, device, dtype)?
        };
        let streamed = !matches!(transfers, Transfers::Synchronous);
        // Units are read from their source and placed in parallel: with the packing of the
        // streamed ones, the longest one-off work before the first step.
        let homes = units
            .par_iter()
            .enumerate()
            .map(|(index, unit)| {
                // Context projections run once per conditioning: they wait on the host, packed
                // with the streamed units when streaming.
                let on_host = on_host(index);
                if on_host && streamed {
                    return Ok(Home::Streamed);
                }
                if on_host && short_of_host {
                    return Ok(Home::Source);
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
        let decodings = units
            .iter()
            .map(|unit| source.unit_decoding(unit, dtype).map(Arc::new))
            .collect::<std::result::Result<Vec<_>, SourceError>>()?;
        let stats = Stats {
            per_unit: vec![Duration::ZERO; units.len()],
            ..Stats::default()
        };
        Ok(Self {
            units,
            homes,
            source: Arc::clone(source),
            plan,
            settings,
            transfers,
            fallback,
            device: device.clone(),
            dtypes,
            decodings,
            current_block: Mutex::new(None),
            stats: Mutex::new(stats),
            clock: Mutex::default(),
        })
    }

    /// The store with its resident units' weights laid out once as `network`'s kernels read
    /// them ([`Network::resident_layout`]); streamed units arrive as loaded.
    ///
    /// # Errors
    /// A weight the device could not lay out, naming the network.
    pub fn with_resident_layout(mut self, network: &dyn Network) -> std::result::Result<Self, SourceError> {
        for home in &mut self.homes {
            if let Home::Resident(weights) = home {
                *weights = weights
                    .arranged(|weight| network.resident_layout(weight))
                    .map_err(|e| SourceError::Device(format!("laying out the {}'s weights: {e}", network.kind())))?;
            }
        }
        Ok(self)
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
        // The context projections wait in page-locked memory even when no unit streams: copied
        // from pageable memory they would take most of a run's first step.
        if !settings.non_blocking || device.is_cpu() || (plan.swapped_units() == 0 && plan.context_bytes == 0) {
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

    /// A host or source unit's tensors on the device.
    fn bring_in(&self, unit: usize) -> Result<UnitWeights> {
        let copied = match &self.homes[unit] {
            Home::Host(tensors) => tensors
                .iter()
                .map(|(name, tensor)| Ok((name.clone(), tensor.to_device(&self.device)?)))
                .collect::<Result<HashMap<_, _>>>()?,
            Home::Source => {
                let spec = &self.units[unit];
                spec.tensors
                    .iter()
                    .map(|(name, shape)| {
                        let tensor = self
                            .source
                            .load(&spec.key(name), shape, self.dtypes.kept, &self.device)
                            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                        Ok((name.clone(), tensor))
                    })
                    .collect::<Result<HashMap<_, _>>>()?
            }
            Home::Resident(_) | Home::Streamed => candle_core::bail!("unit {unit} has no host copy"),
        };
        Ok(UnitWeights::new(copied))
    }

    /// Brings a host or source unit of the pass to the device, counting bytes and time.
    fn fetch(&self, unit: usize) -> Result<UnitWeights> {
        let started = Instant::now();
        let weights = self.bring_in(unit)?;
        let elapsed = started.elapsed();
        if self.settings.debug {
            let name = &self.units[unit].name;
            lock(&self.clock).copied(unit, name, started, started + elapsed);
        }
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
                let in_block = block_of(&self.units[index]).as_deref() == Some(&block);
                if in_block && matches!(home, Home::Host(_) | Home::Source) {
                    loaded.insert(index, self.fetch(index)?);
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
        let weights = self
            .acquire_as_kept(unit)?
            .with_eight_bit_products(self.dtypes.eight_bit_products);
        if self.settings.debug && self.units[unit].group.every_pass {
            lock(&self.clock).computing(unit, &self.units[unit].name);
        }
        Ok(match self.decodings.get(unit) {
            Some(decoding) if !decoding.is_empty() => weights.with_decoding(Arc::clone(decoding)),
            _ => weights,
        })
    }

    fn release(&self, unit: usize) {
        if self.settings.debug {
            lock(&self.clock).released(unit);
        }
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
        self.dtypes.compute
    }

    fn memory_now(&self) -> Option<MemoryReport> {
        if !self.settings.debug {
            return None;
        }
        let ring_bytes = match &self.transfers {
            Transfers::Synchronous => None,
            #[cfg(feature = "cuda")]
            Transfers::Streaming(streamer) => Some(streamer.ring_bytes()),
        };
        Some(crate::report::memory_now(
            &self.plan,
            ring_bytes,
            device_memory(&self.device),
        ))
    }

    fn replayable(&self) -> bool {
        // Context projections are only read when the conditioning is projected, before a run's
        // passes repeat; debug mode keeps a timeline of every pass on the host.
        !self.settings.debug
            && self
                .units
                .iter()
                .zip(&self.homes)
                .all(|(unit, home)| !unit.group.every_pass || matches!(home, Home::Resident(_)))
    }

    fn report(&self) -> Option<MemoryReport> {
        if !self.settings.debug {
            return None;
        }
        Some(crate::report::run_report(
            &self.plan,
            &self.settings,
            self.dtypes.kept,
            &self.figures(),
        ))
    }
}

impl SwapStore {
    /// Unit `unit`'s weights on the device, as kept.
    fn acquire_as_kept(&self, unit: usize) -> Result<UnitWeights> {
        if unit == 0 {
            self.stats.lock().unwrap_or_else(PoisonError::into_inner).forward_passes += 1;
            if self.settings.debug {
                lock(&self.clock).begin_pass();
                #[cfg(feature = "cuda")]
                if let Transfers::Streaming(streamer) = &self.transfers {
                    streamer.begin_pass();
                }
            }
        }
        if self.units.get(unit).is_some_and(|u| !u.group.every_pass) {
            // A context projection, once per conditioning: outside the pass's figures.
            return match (self.homes.get(unit), &self.transfers) {
                (Some(Home::Host(_) | Home::Source), _) => self.bring_in(unit),
                #[cfg(feature = "cuda")]
                (Some(Home::Streamed), Transfers::Streaming(streamer)) => streamer.copy_outside_ring(unit),
                _ => candle_core::bail!("no context projection unit {unit}"),
            };
        }
        match self.homes.get(unit) {
            Some(Home::Resident(weights)) => Ok(weights.clone()),
            Some(Home::Streamed) => self.acquire_streamed(unit),
            Some(Home::Host(_) | Home::Source) => match self.settings.granularity {
                Granularity::Unit => self.fetch(unit),
                Granularity::Block => self.acquire_in_block(unit),
            },
            None => candle_core::bail!("no unit {unit}"),
        }
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
        let timeline = match &self.transfers {
            Transfers::Synchronous => lock(&self.clock).timeline(),
            #[cfg(feature = "cuda")]
            Transfers::Streaming(streamer) => swapgraph_node_api::PassTimeline {
                units: streamer
                    .timeline()
                    .into_iter()
                    .map(|(unit, copy, wait)| swapgraph_node_api::UnitSpan {
                        unit: self.units[unit].name.clone(),
                        copy,
                        wait: Some(wait),
                        compute: None,
                    })
                    .collect(),
            },
        };
        RunFigures {
            timeline,
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::plan;
    use swapgraph_model::ResidentStore;
    use swapgraph_sdxl::unet::{UNet, UNetConfig};

    /// The tiny UNet's units and seeded f32 weights.
    pub(crate) fn tiny_model() -> (Vec<UnitSpec>, Arc<TensorSource>) {
        let units = UNet::new(UNetConfig::tiny()).unwrap().units().to_vec();
        let params = units
            .iter()
            .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
            .collect();
        (
            units,
            Arc::new(TensorSource::seeded("tiny", "unet", params, DType::F32)),
        )
    }

    fn store(host_room: Option<u64>, granularity: Granularity) -> SwapStore {
        let (units, source) = tiny_model();
        let settings = SwapSettings {
            granularity,
            ..SwapSettings::default()
        };
        let swap_plan = plan(&units, DType::F32, &settings).unwrap();
        SwapStore::load_within(
            units,
            &source,
            swap_plan,
            settings,
            (&Device::Cpu, DType::F32.into()),
            host_room,
        )
        .unwrap()
    }

    fn same_weights(a: &UnitWeights, b: &UnitWeights, unit: &UnitSpec) {
        for (name, shape) in &unit.tensors {
            let get = |w: &UnitWeights| {
                w.var_builder(DType::F32, &Device::Cpu)
                    .unwrap()
                    .get(shape.clone(), name)
                    .unwrap()
            };
            let difference = (get(a) - get(b)).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(difference.to_scalar::<f32>().unwrap(), 0.0, "{} {name}", unit.name);
        }
    }

    #[test]
    fn only_a_store_that_moves_nothing_during_passes_is_replayable() {
        let (units, source) = tiny_model();
        let load = |settings: SwapSettings| {
            let swap_plan = plan(&units, DType::F32, &settings).unwrap();
            SwapStore::load_within(
                units.clone(),
                &source,
                swap_plan,
                settings,
                (&Device::Cpu, DType::F32.into()),
                None,
            )
            .unwrap()
        };
        let nothing_swapped = SwapSettings {
            blocks_to_swap: 0,
            ..SwapSettings::default()
        };
        assert!(load(nothing_swapped).replayable());
        assert!(!load(SwapSettings::default()).replayable(), "two blocks swapped");
        let debugged = SwapSettings {
            debug: true,
            ..nothing_swapped
        };
        assert!(!load(debugged).replayable(), "debug mode times every pass");
    }

    /// The tiny UNet's units, laid out for the device negated.
    struct Negating(Vec<UnitSpec>);

    impl Network for Negating {
        fn units(&self) -> &[UnitSpec] {
            &self.0
        }

        fn kind(&self) -> &'static str {
            "negating network"
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }

        fn resident_layout(&self, weight: &Tensor) -> Result<Tensor> {
            weight.neg()
        }
    }

    #[test]
    fn only_resident_units_take_the_network_s_resident_layout() {
        let (units, source) = tiny_model();
        let network = Negating(units.clone());
        let loaded = store(None, Granularity::Unit);
        let laid_out = store(None, Granularity::Unit).with_resident_layout(&network).unwrap();
        let resident = |index: usize| matches!(loaded.homes[index], Home::Resident(_));
        assert!((0..units.len()).any(resident) && !(0..units.len()).all(resident));
        let as_laid_out = ResidentStore::load_for(&network, &source, DType::F32, &Device::Cpu).unwrap();
        for (index, unit) in units.iter().enumerate() {
            let expected: &dyn WeightStore = if resident(index) { &as_laid_out } else { &loaded };
            same_weights(
                &laid_out.acquire(index).unwrap(),
                &expected.acquire(index).unwrap(),
                unit,
            );
            for store in [&laid_out, &loaded] {
                store.release(index);
            }
        }
    }

    #[test]
    fn with_too_little_host_memory_swapped_units_are_read_from_the_source_on_every_use() {
        let (units, source) = tiny_model();
        let resident = ResidentStore::load(units.clone(), &source, DType::F32, &Device::Cpu).unwrap();
        for granularity in [Granularity::Unit, Granularity::Block] {
            let kept = store(None, granularity);
            let short = store(Some(0), granularity);
            assert!(kept.homes.iter().any(|h| matches!(h, Home::Host(_))));
            assert!(!short.homes.iter().any(|h| matches!(h, Home::Host(_))));
            assert!(short.homes.iter().any(|h| matches!(h, Home::Source)));
            assert!(kept.fallback.is_none());
            let reason = short.fallback.clone().unwrap();
            assert!(
                reason.contains("reading them from the model's files on every use"),
                "{reason}"
            );
            for pass in 0..2 {
                for (index, unit) in units.iter().enumerate() {
                    let expected = resident.acquire(index).unwrap();
                    for store in [&kept, &short] {
                        same_weights(&store.acquire(index).unwrap(), &expected, unit);
                        store.release(index);
                    }
                }
                assert!(short.figures().streamed_per_pass > 0.0, "pass {pass}");
            }
        }
    }

    #[test]
    fn weights_kept_in_eight_bits_are_swapped_as_kept_and_widened_as_layers_are_built() {
        let (units, source) = tiny_model();
        let dtypes = WeightDTypes {
            compute: DType::F32,
            kept: DType::F8E4M3,
            eight_bit_products: false,
        };
        let resident = ResidentStore::load(units.clone(), &source, dtypes, &Device::Cpu).unwrap();
        let settings = SwapSettings::default();
        let swap_plan = plan(&units, dtypes.kept, &settings).unwrap();
        let halved = plan(&units, DType::F16, &settings).unwrap().device_bytes();
        assert_eq!(
            2 * swap_plan.device_bytes(),
            halved,
            "8-bit weights take half of f16's room"
        );
        let store = SwapStore::load_within(
            units.clone(),
            &source,
            swap_plan,
            settings,
            (&Device::Cpu, dtypes),
            None,
        )
        .unwrap();
        assert_eq!(store.dtype(), DType::F32, "the model computes in f32");
        assert!(store.homes.iter().any(|h| matches!(h, Home::Host(_))));
        for (index, unit) in units.iter().enumerate() {
            let weights = store.acquire(index).unwrap();
            assert_eq!(
                weights.bytes(),
                unit.parameter_count() as u64,
                "{}: a byte a weight",
                unit.name
            );
            same_weights(&weights, &resident.acquire(index).unwrap(), unit);
            store.release(index);
        }
        assert_eq!(
            store.figures().streamed_per_pass,
            units
                .iter()
                .zip(&store.plan.swapped)
                .filter(|(_, swapped)| **swapped)
                .map(|(unit, _)| unit.parameter_count() as f64)
                .sum::<f64>(),
            "swapped units move a byte a weight"
        );
    }

    /// The tiny UNet's seeded weights written as a GGUF file as ComfyUI-GGUF's converter writes
    /// them: Q8_0 blocks wherever the values split into them (a tensor whose rows do not,
    /// reshaped to rows of one block with its shape kept in the metadata), f32 elsewhere.
    fn tiny_gguf(dir: &std::path::Path) -> (Vec<UnitSpec>, Arc<TensorSource>) {
        use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
        let (units, seeded) = tiny_model();
        let mut shapes = Vec::new();
        let tensors: Vec<(String, QTensor)> = units
            .iter()
            .flat_map(|u| u.tensors.iter().map(move |(n, s)| (u.key(n), s.clone())))
            .map(|(key, shape)| {
                let values = seeded.load(&key, &shape, DType::F32, &Device::Cpu).unwrap();
                if shape.rank() == 1 || shape.elem_count() % 32 != 0 {
                    return (key, QTensor::quantize(&values, GgmlDType::F32).unwrap());
                }
                let rows = if shape.dims()[shape.rank() - 1] % 32 == 0 {
                    values
                } else {
                    let dims = shape.dims().iter().map(|&d| gguf_file::Value::I32(d as i32)).collect();
                    shapes.push((format!("comfy.gguf.orig_shape.{key}"), gguf_file::Value::Array(dims)));
                    values.reshape((shape.elem_count() / 32, 32)).unwrap()
                };
                (key, QTensor::quantize(&rows, GgmlDType::Q8_0).unwrap())
            })
            .collect();
        let table: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, q)| (k.as_str(), q)).collect();
        let metadata: Vec<(&str, &gguf_file::Value)> = shapes.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let path = dir.join("unet.gguf");
        gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &metadata, &table).unwrap();
        let file = swapgraph_model::GgufFile::open(&path).unwrap();
        (units, Arc::new(TensorSource::from_gguf(file, "unet.gguf")))
    }

    #[test]
    fn gguf_blocks_are_kept_and_swapped_as_stored_and_dequantized_as_layers_are_built() {
        let dir = tempfile::tempdir().unwrap();
        let (units, source) = tiny_gguf(dir.path());
        assert!(source.holds_quantized_blocks());
        let stored = WeightDTypes {
            compute: DType::F32,
            kept: swapgraph_model::KEPT_AS_STORED,
            eight_bit_products: false,
        };
        let kept_units: Vec<UnitSpec> = units.iter().map(|u| source.kept_unit(u, stored.kept)).collect();
        let stored_bytes = |unit: &UnitSpec| -> u64 {
            source
                .unit_decoding(unit, stored.kept)
                .unwrap()
                .encodings
                .values()
                .map(|encoding| encoding.bytes() as u64)
                .sum()
        };
        let quantized = units
            .iter()
            .flat_map(|unit| source.unit_decoding(unit, stored.kept).unwrap().encodings.into_values())
            .filter(|encoding| encoding.kind == candle_core::quantized::GgmlDType::Q8_0)
            .count();
        assert!(quantized > 20, "{quantized} tensors in Q8_0 blocks");
        let total = |units: &[UnitSpec], dtype: DType| units.iter().map(|u| u.bytes(dtype)).sum::<u64>();
        assert!(
            total(&kept_units, stored.kept) < total(&units, DType::F16) * 6 / 10,
            "Q8_0 blocks take about half of f16's bytes"
        );
        let settings = SwapSettings::default();
        let swap_plan = plan(&kept_units, stored.kept, &settings).unwrap();
        // The reference: the same file read into f32, every weight on the device.
        let resident = ResidentStore::load(units.clone(), &source, DType::F32, &Device::Cpu).unwrap();
        let store = SwapStore::load_within(
            units.clone(),
            &source,
            swap_plan,
            settings,
            (&Device::Cpu, stored),
            None,
        )
        .unwrap();
        assert!(store.homes.iter().any(|h| matches!(h, Home::Host(_))));
        for (index, unit) in units.iter().enumerate() {
            let weights = store.acquire(index).unwrap();
            assert_eq!(weights.bytes(), stored_bytes(unit), "{}: the file's bytes", unit.name);
            assert_eq!(kept_units[index].bytes(stored.kept), stored_bytes(unit));
            same_weights(&weights, &resident.acquire(index).unwrap(), unit);
            store.release(index);
        }
        let swapped: u64 = units
            .iter()
            .zip(&store.plan.swapped)
            .filter(|(_, swapped)| **swapped)
            .map(|(unit, _)| stored_bytes(unit))
            .sum();
        assert!(swapped > 0);
        assert_eq!(
            store.figures().streamed_per_pass,
            swapped as f64,
            "swapped units move their blocks"
        );
    }
}
