//! SDXL-size UNet steps on a device, resident or through BlockSwap, with seeded random weights:
//! the figures BlockSwap's promises are measured by.
//!
//! `cargo bench --bench unet_step [--features cuda] -- --device cuda:0 --latent 128 --steps 10
//! --configs none,blocks:3/p1,blocks:3/sync,budget:4096/p2/debug`
//!
//! Each configuration is a swap choice (`none`, `blocks:N`, `budget:MB`) with optional modifiers:
//! `pN` prefetch N units, `sync` synchronous copies (`non_blocking: false`), `block` block
//! granularity, `debug` per-unit timing (adds event overhead), `profile` time per block (a mark
//! on the compute stream as each unit starts). The random weights are made once for all
//! configurations.
//!
//! After a warm-up step, the timed steps are queued back to back, as the sampler queues them, and
//! each is timed on the device between marks at its start and end; the host is ahead of the
//! device after the first step's start. `--synchronize-steps` waits for each step to finish
//! before queueing the next: the device then waits for the host at each step's start, where the
//! host's pace varies between processes.
//!
//! One JSON line per configuration: median and minimum ms per step, bytes streamed per step, the
//! achieved host-to-device rate, the memory pool's peak from the warm-up step on (CUDA), and for
//! a streamed configuration whether its output is bit for bit the first resident
//! configuration's. The text's keys and values are projected once before the steps, as a sampler
//! does (`context_projection_ms`), so the steps run without those weights. With `debug`, the
//! compute stream's wait for copies per step, in all and by block; with `profile`, the time per
//! step by block and by unit (compute, and waits for copies when streamed), and by unit how far
//! the host was ahead of the device as it queued the unit (`host_lead_ms`; the least of them is
//! `host_lead_min_ms`: near zero, the device waited for the host there).
//!
//! `noise` (CUDA) keeps the bus busy with unrelated host-to-device copies on a stream of their
//! own while the steps run: a swap's copies without the swap, to see what copies alone cost the
//! compute beside them; `noise-sm` makes the same copies with a kernel whose loads and stores
//! leave the L2 cache first (`NOISE_SM_BLOCKS` blocks of 512 threads, default 16). Each copy is
//! `NOISE_MIB` MiB (default 256), queued again `NOISE_GAP_US` microseconds after it finishes
//! (default at once). Their rate is reported as `noise_gb_s`.
//!
//! `none/profile` also measures each unit's compute resident (scaled down to the `none` step when
//! that has run faster, since the marks add a little): budget configurations after it report
//! `budget_floor_ms`, the fastest any schedule could run in that budget at the
//! host-to-device rate given by `--bandwidth-gb-s` ([`swapgraph_blockswap::floor`]). After
//! `none/noise/profile` they also report `budget_floor_beside_copies_ms`, the same bound with the
//! compute slowed as copies slow it. Streamed configurations after `none/profile` also report
//! `schedule_replay_ms`: their own schedule replayed on the resident compute at that rate
//! ([`swapgraph_blockswap::simulate`]), what the step would take if copies cost the compute
//! nothing; after `none/noise/profile` too, `schedule_replay_beside_copies_ms` charges each unit
//! for the copies it overlaps, and budgets report `best_prefetch_replay_beside_copies`, the
//! fastest replay of the same budget at any prefetch depth up to 12.
//!
//! Each configuration also reports `host_queue_ms`, the median time the host took to queue a
//! step's work. Back to back it equals the step, since the driver's queue holds the host a
//! bounded way ahead (`host_lead_ms` tells whether the device ever waits for the host); with
//! `--synchronize-steps`, when it comes close to `median_ms` the host rather than the device sets
//! the pace. With CUDA, `pinned_gb_s_this_process` is the page-locked host-to-device rate
//! measured in this process after its steps, the way `swapgraph doctor` measures it, to hold
//! beside the rate the floors take.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use swapgraph_blockswap::floor::{step_floor_ms, UnitCost};
use swapgraph_blockswap::pipeline::tensor_pieces;
use swapgraph_blockswap::probe::probe_transfers;
use swapgraph_blockswap::simulate::Replay;
use swapgraph_blockswap::store::SwapStore;
use swapgraph_blockswap::{plan, Granularity, SwapPlan, SwapSettings};
use swapgraph_model::{
    candle_device, device_memory, reset_peak_memory, weight_dtype, ModelHandle, ResidentStore, TensorSource,
    WeightStore,
};
use swapgraph_node_api::DeviceSpec;
use swapgraph_sdxl::unet::{ProjectedContext, UNet, UNetConfig, UNetInput};

/// Bytes of each copy timed for `pinned_gb_s_this_process`, the size `swapgraph doctor` times.
const PROCESS_PROBE_BYTES: usize = 256 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    // A mistyped flag would otherwise leave its default in place without a word.
    const VALUED: [&str; 5] = ["--device", "--latent", "--steps", "--configs", "--bandwidth-gb-s"];
    const SWITCHES: [&str; 2] = ["--synchronize-steps", "--bench"]; // `cargo bench` passes `--bench`
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        if VALUED.contains(&arg.as_str()) {
            rest.next();
        } else if !SWITCHES.contains(&arg.as_str()) {
            eprintln!(
                "unet_step: unknown argument `{arg}`; the flags are {VALUED:?} (each with a value) and {SWITCHES:?}"
            );
            std::process::exit(2);
        }
    }
    let spec: DeviceSpec = value("--device", "cpu").parse().expect("--device cpu|cuda:N");
    let device = candle_device(spec).expect("the device");
    let latent: usize = value("--latent", "128").parse().expect("--latent N");
    let steps: usize = value("--steps", "10").parse().expect("--steps N");
    if steps == 0 {
        eprintln!("unet_step: --steps must be at least 1: the medians need a timed step");
        std::process::exit(2);
    }
    let configs = value("--configs", "none");
    let synchronize_steps = args.iter().any(|a| a == "--synchronize-steps");
    let bandwidth: Option<f64> = args
        .iter()
        .any(|a| a == "--bandwidth-gb-s")
        .then(|| value("--bandwidth-gb-s", "").parse().expect("--bandwidth-gb-s GB/s"));
    let dtype = weight_dtype(&device);
    let cfg = UNetConfig::sdxl();
    let unet = UNet::new(cfg).expect("the SDXL layout");
    let units = unet.units().to_vec();
    // The pass's units come first, then the context projections, run once before the steps.
    let pass_units = units.iter().take_while(|u| u.group.every_pass).count();
    // Each unit's pieces in bytes, as the streaming path copies them, for the replays.
    let element = dtype.size_in_bytes() as u64;
    let unit_pieces: Vec<Vec<u64>> = units[..pass_units]
        .iter()
        .map(|unit| {
            tensor_pieces(unit, dtype)
                .into_iter()
                .map(|n| n as u64 * element)
                .collect()
        })
        .collect();
    let model = ModelHandle::new(
        "random SDXL UNet",
        Arc::new(unet),
        Arc::new(TensorSource::from_tensors("random", random_weights(&units, dtype))),
    );
    let unet = model.network.as_any().downcast_ref::<UNet>().expect("a UNet");
    let inputs = Inputs::new(&cfg, latent, dtype, &device).expect("inputs");
    let mut resident_output: Option<Vec<f32>> = None;
    let mut resident_unit_ms: Option<Vec<f64>> = None;
    let mut loaded_unit_ms: Option<Vec<f64>> = None;
    let mut resident_step_ms: Option<f64> = None;
    let mut loaded_step_ms: Option<f64> = None;
    for config in configs.split(',') {
        let Config {
            swapped,
            settings,
            profile,
            bus_load,
        } = parse_config(config);
        let swap_plan = swapped.then(|| plan(&units, dtype, &settings).expect("a swap plan"));
        let swap = swap_plan.clone().map(|swap_plan| {
            SwapStore::load(units.clone(), &model.source, swap_plan, settings, &device, dtype).expect("a swap store")
        });
        // Built here rather than through the model's placement, which would keep it cached on
        // the device for the configurations after it.
        let resident = swap
            .is_none()
            .then(|| ResidentStore::load(units.clone(), &model.source, dtype, &device).expect("weights on the device"));
        let store: &dyn WeightStore = match (&swap, &resident) {
            (Some(swap), _) => swap,
            (None, Some(resident)) => resident,
            (None, None) => unreachable!("one store is built"),
        };
        #[cfg(feature = "cuda")]
        let load = bus_load.map(|copier| BusLoad::start(&device, copier));
        #[cfg(not(feature = "cuda"))]
        assert!(bus_load.is_none(), "noise needs the CUDA build");
        // The conditioning's keys and values, projected once as a sampler does: the steps run on
        // them, the projection's weights stay out of every step.
        let clock = Instant::now();
        let projected = unet
            .project_context(store, &inputs.context)
            .expect("the context projected");
        device.synchronize().expect("the projection to finish");
        let projection_ms = clock.elapsed().as_secs_f64() * 1e3;
        let timed = profile.then(|| TimedStore::new(store));
        let store: &dyn WeightStore = timed.as_ref().map_or(store, |t| t as &dyn WeightStore);
        let mut unit_ms = vec![0.0; units.len()];
        let mut unit_lead_ms = vec![0.0; units.len()];
        // A warm-up step, then the timed steps queued as a sampler queues them: back to back, or
        // each after the last has finished with `--synchronize-steps`. The peak counts the warm-up.
        reset_peak_memory(&device);
        inputs.run(unet, store, &projected);
        device.synchronize().expect("the warm-up step to finish");
        if let Some(timed) = &timed {
            timed.drain();
        }
        let run_queued = Instant::now();
        let run_start = Mark::now(&device);
        let mut bounds = Vec::new();
        let mut step_marks = Vec::new();
        let mut last_output = None;
        for _ in 0..steps {
            let queued = Instant::now();
            let start = Mark::now(&device);
            last_output = Some(inputs.run(unet, store, &projected));
            let end = Mark::now(&device);
            let queue_ms = queued.elapsed().as_secs_f64() * 1e3;
            if synchronize_steps {
                device.synchronize().expect("the step to finish");
            }
            step_marks.push(timed.as_ref().map(TimedStore::drain).unwrap_or_default());
            bounds.push((start, end, queue_ms));
        }
        device.synchronize().expect("the steps to finish");
        let mut times = Vec::new();
        let mut queued_times = Vec::new();
        for ((start, end, queue_ms), marks) in bounds.iter().zip(step_marks) {
            times.push(start.until(end));
            queued_times.push(*queue_ms);
            for UnitMark { unit, ms, lead_ms } in unit_marks(marks, start, end, (&run_start, run_queued)) {
                unit_ms[unit] += ms / steps as f64;
                unit_lead_ms[unit] += lead_ms / steps as f64;
            }
        }
        // The last step's output, to hold a streamed configuration's to the resident one's.
        let output: Vec<f32> = last_output
            .expect("at least one step")
            .to_dtype(DType::F32)
            .and_then(|o| o.flatten_all()?.to_vec1())
            .expect("the step's output");
        if !swapped && resident_output.is_none() {
            resident_output = Some(output.clone());
        }
        let identical_to_resident = swapped
            .then(|| resident_output.as_ref().map(|resident| *resident == output))
            .flatten();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        queued_times.sort_by(f64::total_cmp);
        let queued_median = queued_times[queued_times.len() / 2];
        #[cfg(feature = "cuda")]
        let noise_gb_s = load.map(|load| load.gb_s());
        #[cfg(not(feature = "cuda"))]
        let noise_gb_s: Option<f64> = None;
        // Marks add a little to each unit: the profiles are scaled down to the plain resident step
        // of the same kind (with or without copies beside it) where one has run and was faster.
        if !swapped {
            let (profiled, plain) = if bus_load.is_some() {
                (&mut loaded_unit_ms, &mut loaded_step_ms)
            } else {
                (&mut resident_unit_ms, &mut resident_step_ms)
            };
            if profile {
                *profiled = Some(unit_ms.clone());
            } else {
                *plain = Some(median);
            }
        }
        let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
        // Each unit's resident compute and bytes. Only ever scaled down: a bound must not rise
        // with a slow plain run.
        let costs = |compute: &Option<Vec<f64>>, step_ms: Option<f64>| {
            compute.as_ref().map(|compute| {
                let scale = step_ms.map_or(1.0, |step| (step / compute.iter().sum::<f64>()).min(1.0));
                units[..pass_units]
                    .iter()
                    .zip(compute)
                    .map(|(unit, &compute_ms)| UnitCost {
                        compute_ms: compute_ms * scale,
                        bytes: unit.bytes(dtype),
                    })
                    .collect::<Vec<_>>()
            })
        };
        let floor = |compute: &Option<Vec<f64>>, step_ms: Option<f64>| match (settings.vram_budget_mb, bandwidth) {
            (Some(mb), Some(gb_s)) => {
                costs(compute, step_ms).map(|costs| round(step_floor_ms(&costs, mb << 20, gb_s * 1e9), 1))
            }
            _ => None,
        };
        // The schedule replayed on the resident compute: as it is, and with the compute slowed by
        // the copies it overlaps (after `none/noise/profile`).
        let streaming = settings.non_blocking && settings.granularity == Granularity::Unit;
        let resident_costs = costs(&resident_unit_ms, resident_step_ms);
        let beside_copies: Option<Vec<f64>> =
            costs(&loaded_unit_ms, loaded_step_ms).map(|c| c.iter().map(|u| u.compute_ms).collect());
        let replay = |swap_plan: &SwapPlan, slowed: bool| -> Option<f64> {
            let (costs, gb_s) = (resident_costs.as_ref()?, bandwidth?);
            let replay = Replay::new(costs, gb_s * 1e9).in_pieces(&unit_pieces);
            let replay = match (slowed, &beside_copies) {
                (false, _) => replay,
                (true, Some(beside)) => replay.slowed_by_copies(beside),
                (true, None) => return None,
            };
            Some(round(
                replay.pass_ms(&swap_plan.swapped[..pass_units], swap_plan.buffer_bytes),
                1,
            ))
        };
        let replayed = swap_plan.as_ref().filter(|_| streaming).and_then(|p| replay(p, false));
        let replayed_beside_copies = swap_plan.as_ref().filter(|_| streaming).and_then(|p| replay(p, true));
        // The same budget at every prefetch depth up to 12, replayed beside copies: the best of
        // them and its depth.
        let best_prefetch = settings
            .vram_budget_mb
            .filter(|_| streaming)
            .and_then(|_| {
                (0..=12)
                    .filter_map(|prefetch| {
                        let deeper = SwapSettings { prefetch, ..settings };
                        let deeper_plan = plan(&units, dtype, &deeper).ok()?;
                        Some((replay(&deeper_plan, true)?, prefetch))
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0))
            })
            .map(|(ms, prefetch)| serde_json::json!({ "prefetch": prefetch, "ms": ms }));
        let memory = device_memory(&device).unwrap_or_default();
        // The page-locked rate this process gets, measured after its steps: the floors take the
        // best of three `swapgraph doctor` processes, and page-locked memory in one process may
        // copy slower than in another.
        let process_gb_s = probe_transfers(&device, PROCESS_PROBE_BYTES)
            .ok()
            .and_then(|probe| probe.pinned_gb_s.ok());
        let gib = |bytes: f64| bytes / (1u64 << 30) as f64;
        let figures = swap.as_ref().map(SwapStore::figures);
        let streamed = figures.as_ref().map_or(0.0, |f| f.streamed_per_pass);
        let wait: Option<f64> = figures
            .as_ref()
            .filter(|_| settings.debug)
            .map(|f| f.units.iter().map(|u| u.wait_ms).sum());
        let wait_by_block = figures
            .as_ref()
            .filter(|_| settings.debug)
            .map(|f| by_block(f.units.iter().map(|u| (u.name.as_str(), u.wait_ms))));
        let time_by_block = profile.then(|| by_block(units.iter().zip(&unit_ms).map(|(u, &ms)| (u.name.as_str(), ms))));
        println!(
            "{}",
            serde_json::json!({
                "config": config,
                "transfers": figures.as_ref().map_or("resident".to_string(), |f| f.transfers.clone()),
                "latent": latent,
                "dtype": format!("{dtype:?}"),
                "median_ms": round(median, 1),
                "context_projection_ms": round(projection_ms, 1),
                "min_ms": round(times[0], 1),
                "host_queue_ms": round(queued_median, 1),
                "streamed_gib_per_step": round(gib(streamed), 3),
                "achieved_h2d_gb_s": round(streamed / (median * 1e-3) / 1e9, 1),
                "compute_wait_ms_per_step": wait.map(|w| round(w, 1)),
                "compute_wait_ms_per_step_by_block": wait_by_block,
                "ms_per_step_by_block": time_by_block,
                "by_unit": profile.then(|| units[..pass_units].iter().zip(&unit_ms).enumerate().map(|(i, (unit, &ms))| serde_json::json!({
                    "unit": unit.name,
                    "bytes": unit.bytes(dtype),
                    "ms_per_step": round(ms, 3),
                    "host_lead_ms": round(unit_lead_ms[i], 3),
                })).collect::<Vec<_>>()),
                "host_lead_min_ms": profile.then(|| round(unit_lead_ms[..pass_units].iter().copied().fold(f64::INFINITY, f64::min), 3)),
                "budget_floor_ms": floor(&resident_unit_ms, resident_step_ms),
                "schedule_replay_ms": replayed,
                "schedule_replay_beside_copies_ms": replayed_beside_copies,
                "best_prefetch_replay_beside_copies": best_prefetch,
                "budget_floor_beside_copies_ms": floor(&loaded_unit_ms, loaded_step_ms),
                "peak_device_gib": round(gib(memory.peak_allocated as f64), 3),
                "identical_to_resident": identical_to_resident,
                "noise_gb_s": noise_gb_s.map(|r| round(r, 1)),
                "pinned_gb_s_this_process": process_gb_s.map(|r| round(r, 1)),
            })
        );
    }
}

/// Milliseconds summed by block, in order of first appearance, to one decimal.
fn by_block<'a>(units: impl Iterator<Item = (&'a str, f64)>) -> serde_json::Map<String, serde_json::Value> {
    let mut sums: Vec<(String, f64)> = Vec::new();
    for (name, ms) in units {
        let block = block_name(name);
        match sums.iter_mut().find(|(b, _)| *b == block) {
            Some((_, sum)) => *sum += ms,
            None => sums.push((block, ms)),
        }
    }
    sums.into_iter()
        .map(|(b, ms)| (b, ((ms * 10.0).round() / 10.0).into()))
        .collect()
}

/// A point in the device's work: a CUDA event on the compute stream, or the host's clock on the
/// CPU, where compute is synchronous.
enum Mark {
    Host(Instant),
    #[cfg(feature = "cuda")]
    Cuda(candle_core::cuda_backend::cudarc::driver::CudaEvent),
}

impl Mark {
    fn now(device: &Device) -> Self {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = device {
            use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
            let stream = cuda.cuda_stream();
            let event = stream
                .context()
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .expect("a CUDA event");
            event.record(&stream).expect("an event recorded");
            return Self::Cuda(event);
        }
        let _ = device;
        Self::Host(Instant::now())
    }

    /// Milliseconds from `self` to `later`, once the device has passed both.
    fn until(&self, later: &Self) -> f64 {
        match (self, later) {
            (Self::Host(a), Self::Host(b)) => (*b - *a).as_secs_f64() * 1e3,
            #[cfg(feature = "cuda")]
            (Self::Cuda(a), Self::Cuda(b)) => f64::from(a.elapsed_ms(b).expect("event timing")),
            #[cfg(feature = "cuda")]
            _ => unreachable!("marks of one device"),
        }
    }
}

/// A store that marks the compute stream as each unit's weights are asked for, so a step's time
/// splits by unit: from one unit's mark to the next is that unit's compute (and, streamed, the
/// wait for its copy). Each mark also keeps the host's clock as it was queued.
struct TimedStore<'a> {
    inner: &'a dyn WeightStore,
    marks: std::sync::Mutex<Vec<(usize, Mark, Instant)>>,
}

/// One unit's share of a step.
struct UnitMark {
    unit: usize,
    /// From the unit's mark to the next one on the device.
    ms: f64,
    /// How far the host was ahead of the device as it queued the unit's mark: the time the mark
    /// waited on the stream. Near zero, the device had run out of queued work there and waited
    /// for the host.
    lead_ms: f64,
}

impl<'a> TimedStore<'a> {
    fn new(inner: &'a dyn WeightStore) -> Self {
        Self {
            inner,
            marks: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The marks queued since the last call.
    fn drain(&self) -> Vec<(usize, Mark, Instant)> {
        std::mem::take(&mut *self.marks.lock().expect("marks"))
    }
}

/// Each unit's time in a step between `start` and `end` (the device having passed `end`), and
/// the host's lead as it queued the unit. The run's first mark was queued with the device idle,
/// so it ran at once: a mark's lead is its time after that mark on the device less its time
/// after it on the host's clock. Work before the first unit counts to it.
fn unit_marks(
    marks: Vec<(usize, Mark, Instant)>,
    start: &Mark,
    end: &Mark,
    (run_start, run_queued): (&Mark, Instant),
) -> Vec<UnitMark> {
    let nexts = marks.iter().skip(1).map(|(_, mark, _)| mark).chain([end]);
    marks
        .iter()
        .zip(nexts)
        .enumerate()
        .map(|(i, ((unit, mark, at), next))| UnitMark {
            unit: *unit,
            ms: if i == 0 { start.until(next) } else { mark.until(next) },
            lead_ms: run_start.until(mark) - (*at - run_queued).as_secs_f64() * 1e3,
        })
        .collect()
}

impl WeightStore for TimedStore<'_> {
    fn units(&self) -> &[swapgraph_model::UnitSpec] {
        self.inner.units()
    }

    fn acquire(&self, unit: usize) -> candle_core::Result<swapgraph_model::UnitWeights> {
        let mark = Mark::now(self.inner.device());
        self.marks.lock().expect("marks").push((unit, mark, Instant::now()));
        self.inner.acquire(unit)
    }

    fn release(&self, unit: usize) {
        self.inner.release(unit);
    }

    fn device(&self) -> &Device {
        self.inner.device()
    }

    fn dtype(&self) -> DType {
        self.inner.dtype()
    }
}

/// What moves the bytes of `noise`.
#[derive(Clone, Copy, PartialEq)]
enum Copier {
    /// `cuMemcpyHtoDAsync`: the copy engine, as BlockSwap's streaming does.
    CopyEngine,
    /// `cuMemHostRegister` on host memory the kernel backs with 2 MiB pages (transparent huge
    /// pages): the same copies from memory of fewer, larger pages.
    HugePages,
    /// A kernel reading page-locked host memory and writing device memory with evict-first
    /// (`.cs`) loads and stores, so that the copied lines leave the L2 cache first.
    Kernel,
}

/// Host-to-device copies of [`noise_bytes`] from page-locked memory, two queued on a stream of
/// their own (each queued again [`noise_gap`] after it finishes), until dropped; the host sleeps
/// between polls, so no thread spins in the driver beside the steps.
#[cfg(feature = "cuda")]
struct BusLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    copies: Arc<std::sync::atomic::AtomicU64>,
    started: Instant,
    bytes: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Bytes of each `noise` copy: `NOISE_MIB` MiB, default 256.
#[cfg(feature = "cuda")]
fn noise_bytes() -> usize {
    std::env::var("NOISE_MIB").map_or(256, |m| m.parse().expect("NOISE_MIB: a size in MiB")) << 20
}

/// A pause before each `noise` copy is queued again, `NOISE_GAP_US` microseconds (default none):
/// a lower copy rate in the same pattern.
#[cfg(feature = "cuda")]
fn noise_gap() -> std::time::Duration {
    std::time::Duration::from_micros(
        std::env::var("NOISE_GAP_US").map_or(0, |g| g.parse().expect("NOISE_GAP_US: microseconds")),
    )
}

#[cfg(feature = "cuda")]
const STREAM_COPY: &str = r#"
extern "C" __global__ void stream_copy(const uint4* src, uint4* dst, unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        unsigned int x, y, z, w;
        asm volatile("ld.global.cs.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(x), "=r"(y), "=r"(z), "=r"(w) : "l"(src + i));
        asm volatile("st.global.cs.v4.u32 [%0], {%1,%2,%3,%4};" :: "l"(dst + i), "r"(x), "r"(y), "r"(z), "r"(w) : "memory");
    }
}
"#;

#[cfg(feature = "cuda")]
impl BusLoad {
    fn start(device: &Device, copier: Copier) -> Self {
        use candle_core::cuda_backend::cudarc::driver::{result, CudaEvent, DevicePtr, LaunchConfig, PushKernelArg};
        let Device::Cuda(cuda) = device else {
            panic!("noise needs a CUDA device")
        };
        let context = cuda.cuda_stream().context().clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let copies = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stopped, done) = (stop.clone(), copies.clone());
        let (bytes, gap) = (noise_bytes(), noise_gap());
        let blocks: u32 = std::env::var("NOISE_SM_BLOCKS").map_or(16, |b| b.parse().expect("NOISE_SM_BLOCKS: a count"));
        let thread = std::thread::spawn(move || {
            let stream = context.new_stream().expect("a copy stream");
            // SAFETY: the buffers' contents are never read; they only give the copies a size.
            let pinned = (copier != Copier::HugePages)
                .then(|| unsafe { context.alloc_pinned::<u8>(bytes) }.expect("page-locked memory"));
            let registered = (copier == Copier::HugePages).then(|| {
                context.bind_to_thread().expect("the context");
                HugePages::register(bytes)
            });
            let target = unsafe { stream.alloc::<u8>(bytes) }.expect("device memory");
            let host = match (&pinned, &registered) {
                (Some(pinned), _) => pinned.as_slice().expect("page-locked memory"),
                (None, Some(registered)) => registered.as_slice(),
                (None, None) => unreachable!("one host buffer is made"),
            };
            let (address, _guard) = target.device_ptr(&stream);
            let kernel = (copier == Copier::Kernel).then(|| {
                let ptx = candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(STREAM_COPY).expect("the copy kernel");
                let module = context.load_module(ptx).expect("the copy kernel");
                module.load_function("stream_copy").expect("the copy kernel")
            });
            let copy = |event: &CudaEvent| {
                match &kernel {
                    // SAFETY: both buffers outlive the copies (the stream is synchronised below).
                    None => unsafe { result::memcpy_htod_async(address, host, stream.cu_stream()) }.expect("a copy"),
                    Some(function) => {
                        let (source, vectors) = (host.as_ptr() as u64, (bytes / 16) as u64);
                        let config = LaunchConfig {
                            grid_dim: (blocks, 1, 1),
                            block_dim: (512, 1, 1),
                            shared_mem_bytes: 0,
                        };
                        let mut launch = stream.launch_builder(function);
                        launch.arg(&source).arg(&address).arg(&vectors);
                        // SAFETY: page-locked memory is mapped at its host address; both
                        // buffers hold `vectors` 16-byte vectors.
                        unsafe { launch.launch(config) }.expect("a copy kernel");
                    }
                }
                event.record(&stream).expect("an event recorded");
            };
            let queued = [(); 2].map(|()| context.new_event(None).expect("an event"));
            queued.iter().for_each(copy);
            for turn in [0, 1].into_iter().cycle() {
                while !queued[turn].try_is_complete().expect("an event query") {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(gap);
                copy(&queued[turn]);
            }
            stream.synchronize().expect("the copies to finish");
        });
        Self {
            stop,
            copies,
            started: Instant::now(),
            bytes,
            thread: Some(thread),
        }
    }

    /// The copies' rate so far, in GB/s.
    fn gb_s(&self) -> f64 {
        let bytes = self.copies.load(std::sync::atomic::Ordering::Relaxed) as f64 * self.bytes as f64;
        bytes / self.started.elapsed().as_secs_f64() / 1e9
    }
}

/// Host memory on 2 MiB pages where the kernel grants them, page-locked and mapped for the
/// device with `cuMemHostRegister`; unregistered and freed when dropped.
#[cfg(feature = "cuda")]
struct HugePages {
    pointer: *mut u8,
    layout: std::alloc::Layout,
}

#[cfg(feature = "cuda")]
impl HugePages {
    const PAGE: usize = 2 << 20;

    fn register(bytes: usize) -> Self {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let layout =
            std::alloc::Layout::from_size_align(bytes.next_multiple_of(Self::PAGE), Self::PAGE).expect("a layout");
        // SAFETY: the layout has a non-zero size; the memory is written before it is registered.
        let pointer = unsafe { std::alloc::alloc(layout) };
        assert!(!pointer.is_null(), "host memory for the copies");
        unsafe {
            libc::madvise(pointer.cast(), layout.size(), libc::MADV_HUGEPAGE);
            std::ptr::write_bytes(pointer, 0, layout.size());
            let registered = sys::cuMemHostRegister_v2(pointer.cast(), layout.size(), 0);
            assert_eq!(registered, sys::CUresult::CUDA_SUCCESS, "cuMemHostRegister");
        }
        let huge = std::fs::read_to_string("/proc/self/smaps_rollup")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("AnonHugePages")).map(str::to_string));
        eprintln!(
            "noise-huge: {bytes} bytes registered; process {}",
            huge.unwrap_or_default()
        );
        Self { pointer, layout }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: the allocation holds `layout.size()` initialised bytes until dropped.
        unsafe { std::slice::from_raw_parts(self.pointer, self.layout.size()) }
    }
}

#[cfg(feature = "cuda")]
impl Drop for HugePages {
    fn drop(&mut self) {
        // SAFETY: registered and allocated in `register` with this layout; no copy is in flight
        // (the stream is synchronised before the buffer goes).
        unsafe {
            candle_core::cuda_backend::cudarc::driver::sys::cuMemHostUnregister(self.pointer.cast());
            std::alloc::dealloc(self.pointer, self.layout);
        }
    }
}

#[cfg(feature = "cuda")]
impl Drop for BusLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the copy thread");
        }
    }
}

/// The block a unit's name belongs to: `down_blocks.2` for `down_blocks.2.attentions.0`.
fn block_name(unit: &str) -> String {
    let parts = if unit.starts_with("mid_block") { 1 } else { 2 };
    unit.split('.').take(parts).collect::<Vec<_>>().join(".")
}

/// What a configuration string names.
struct Config {
    /// `false` for `none` (resident).
    swapped: bool,
    settings: SwapSettings,
    /// Time each unit.
    profile: bool,
    /// Copy unrelated data to the device throughout, and how.
    bus_load: Option<Copier>,
}

/// A configuration string as the settings it names.
fn parse_config(config: &str) -> Config {
    let mut profile = false;
    let mut bus_load = None;
    let mut parts = config.split('/');
    let mut settings = SwapSettings {
        non_blocking: true,
        ..SwapSettings::default()
    };
    let swapped = match parts.next().unwrap_or("none").split_once(':') {
        Some(("blocks", n)) => {
            settings.blocks_to_swap = n.parse().expect("blocks:N");
            true
        }
        Some(("budget", mb)) => {
            settings.vram_budget_mb = Some(mb.parse().expect("budget:MB"));
            true
        }
        _ => false,
    };
    for modifier in parts {
        match modifier {
            "sync" => settings.non_blocking = false,
            "debug" => settings.debug = true,
            "profile" => profile = true,
            "noise" => bus_load = Some(Copier::CopyEngine),
            "noise-sm" => bus_load = Some(Copier::Kernel),
            "noise-huge" => bus_load = Some(Copier::HugePages),
            "block" => settings.granularity = Granularity::Block,
            p => {
                settings.prefetch = p
                    .trim_start_matches('p')
                    .parse()
                    .expect("a modifier: pN, sync, debug, block, profile, noise, noise-sm, noise-huge")
            }
        }
    }
    Config {
        swapped,
        settings,
        profile,
        bus_load,
    }
}

/// Seeded random weights, N(0, 1/fan_in), for every tensor of `units`.
fn random_weights(units: &[swapgraph_model::UnitSpec], dtype: DType) -> HashMap<String, Tensor> {
    units
        .iter()
        .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
        .map(|(key, shape)| {
            let fan_in: usize = shape.dims().iter().skip(1).product::<usize>().max(1);
            let scale = (1.0 / fan_in as f64).sqrt();
            let tensor = Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
                .and_then(|t| t.affine(scale, 0.0))
                .and_then(|t| t.to_dtype(dtype))
                .expect("random weights");
            (key, tensor)
        })
        .collect()
}

/// One CFG batch of SDXL inputs at `latent` x `latent`.
struct Inputs {
    sample: Tensor,
    timesteps: Tensor,
    context: Tensor,
    pooled: Tensor,
    ids: Tensor,
}

impl Inputs {
    fn new(cfg: &UNetConfig, latent: usize, dtype: DType, device: &Device) -> candle_core::Result<Self> {
        let randn = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, device)?.to_dtype(dtype);
        Ok(Self {
            sample: randn(&[2, 4, latent, latent])?,
            timesteps: Tensor::new(&[500f32, 500.0], device)?,
            context: randn(&[2, 77, cfg.cross_attention_dim])?,
            pooled: randn(&[2, cfg.pooled_text_dim])?,
            ids: Tensor::new(&[[1024f32, 1024.0, 0.0, 0.0, 1024.0, 1024.0]; 2], device)?,
        })
    }

    fn run(&self, unet: &UNet, store: &dyn WeightStore, projected: &ProjectedContext) -> Tensor {
        let input = UNetInput {
            sample: &self.sample,
            timesteps: &self.timesteps,
            context: &self.context,
            projected: Some(projected),
            text_embeds: &self.pooled,
            time_ids: &self.ids,
            control: None,
            extra_tokens: None,
        };
        unet.forward(store, &input).expect("a UNet step")
    }
}
