//! SDXL-size UNet steps on a device, resident or through BlockSwap, with seeded random weights:
//! the figures BlockSwap's promises are measured by.
//!
//! `cargo bench --bench unet_step [--features cuda] -- --device cuda:0 --latent 128 --steps 10
//! [--weights fp8|fp8-fast|q8_0|q4_k] --configs none,blocks:3/p1,blocks:3/sync,budget:4096/p2/debug`
//!
//! `--weights q8_0` and `q4_k` write the random weights to a GGUF file first (as ComfyUI-GGUF's
//! converter lays them out: blocks wherever the values split into them, a tensor whose rows do
//! not reshaped to rows of 256, vectors in f32) and run the UNet from it, its blocks kept as
//! stored and dequantized on the device.
//!
//! Each configuration is a swap choice (`none`, `blocks:N`, `budget:MB`) with optional modifiers:
//! `pN` prefetch N units, `sync` synchronous copies (`non_blocking: false`), `block` block
//! granularity, `debug` per-unit timing (adds event overhead), `profile` time per block (a mark
//! on the compute stream as each unit starts), `graph` (`none` only) each step a replay of one
//! recorded CUDA graph, as the sampler replays them, its output held to the first plain resident
//! configuration's (`identical_to_resident`) and the graph's memory counted in the peak;
//! `controlnet` an SDXL-size ControlNet beside the UNet at every step, as InstantID's IdentityNet
//! runs in the main job (16 face tokens for its context, a hint embedded once, its weights
//! resident, its residuals into the UNet), its share of each step reported as `controlnet_ms`
//! (median; not with `graph`, whose steps have no marks inside) and its output held only to
//! other `controlnet` configurations'. The random weights are made once for all configurations.
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
//! configuration's, and the step's rate in TFLOP/s (`tflop_s`: [`UNetConfig::step_flops`], the
//! products PyTorch's flop counter counts, over the median). The text's keys and values are
//! projected once before the steps, as a sampler does (`context_projection_ms`), so the steps run
//! without those weights. With `debug`, the
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
//! `warm_up_ms` is the first step's time on the host, to its end on the device: the one-off work
//! at a shape's first step (the first configuration's takes the process's plans and the linear
//! layers' algorithm timing).
//!
//! Each configuration also reports `host_queue_ms`, the median time the host took to queue a
//! step's work. Back to back it equals the step, since the driver's queue holds the host a
//! bounded way ahead (`host_lead_ms` tells whether the device ever waits for the host); with
//! `--synchronize-steps`, when it comes close to `median_ms` the host rather than the device sets
//! the pace. With CUDA, `pinned_gb_s_this_process` is the page-locked host-to-device rate
//! measured in this process after its steps, the way `swapgraph doctor` measures it, to hold
//! beside the rate the floors take.
//!
//! With weights kept in another form than drawn (`fp8`, `fp8-fast`, `q8_0`, `q4_k`), a last line
//! holds the first resident configuration's output to the same step on the drawn weights
//! themselves (kept in the compute dtype): the relative error of the whole output, and the
//! largest error against the largest value.

use candle_core::quantized::GgmlDType;
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
    candle_device, device_memory, reset_peak_memory, seeded_tensor, weight_dtype, GgufFile, ModelHandle, ResidentStore,
    TensorSource, WeightStore, KEPT_AS_STORED,
};
use swapgraph_node_api::DeviceSpec;
use swapgraph_sdxl::sampling::StepGraphs;
use swapgraph_sdxl::unet::{ControlResiduals, ProjectedContext, UNet, UNetConfig, UNetInput};

#[path = "unet_step/bus_load.rs"]
mod bus_load;
#[path = "gguf_writer.rs"]
mod gguf_writer;
#[path = "unet_step/identity_net.rs"]
mod identity_net;
#[path = "unet_step/timed_store.rs"]
mod timed_store;

#[cfg(feature = "cuda")]
use bus_load::BusLoad;
use bus_load::Copier;
use identity_net::IdentityNet;
use timed_store::{unit_marks, Mark, TimedStore, UnitMark};

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
    const VALUED: [&str; 6] = [
        "--device",
        "--latent",
        "--steps",
        "--configs",
        "--bandwidth-gb-s",
        "--weights",
    ];
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
    // `--weights fp8` keeps the weights in 8-bit floats, widened layer by layer as the UNet runs;
    // `fp8-fast` multiplies them as kept in the linear layers (`fp8_e4m3fn_fast`).
    let weights = value("--weights", "compute");
    let (kept, eight_bit_products, blocks) = match weights.as_str() {
        "compute" => (dtype, false, None),
        "fp8" => (DType::F8E4M3, false, None),
        "fp8-fast" => (DType::F8E4M3, true, None),
        "q8_0" => (KEPT_AS_STORED, false, Some(GgmlDType::Q8_0)),
        "q4_k" => (KEPT_AS_STORED, false, Some(GgmlDType::Q4K)),
        other => {
            eprintln!("unet_step: --weights is compute, fp8, fp8-fast, q8_0 or q4_k, not `{other}`");
            std::process::exit(2);
        }
    };
    let cfg = UNetConfig::sdxl();
    let unet = UNet::new(cfg.clone()).expect("the SDXL layout");
    let logical_units = unet.units().to_vec();
    // Drawn once in the compute dtype; weights kept otherwise are these rounded to 8 bits or
    // quantized, and the step on these is the reference the kept step's output is held to.
    let drawn = random_weights(&logical_units, dtype);
    let source = match blocks {
        Some(kind) => quantized_source(&drawn, kind),
        None => TensorSource::from_tensors(
            "random",
            drawn
                .iter()
                .map(|(key, tensor)| (key.clone(), tensor.to_dtype(kept).expect("the kept dtype")))
                .collect(),
        ),
    };
    // The units as kept (blocks in their bytes) for plans, pieces and figures; the stores read
    // through the model's own.
    let units: Vec<_> = logical_units.iter().map(|unit| source.kept_unit(unit, kept)).collect();
    // The pass's units come first, then the context projections, run once before the steps.
    let pass_units = units.iter().take_while(|u| u.group.every_pass).count();
    // Each unit's pieces in bytes, as the streaming path copies them, for the replays.
    let element = kept.size_in_bytes() as u64;
    let unit_pieces: Vec<Vec<u64>> = units[..pass_units]
        .iter()
        .map(|unit| {
            tensor_pieces(unit, kept)
                .into_iter()
                .map(|n| n as u64 * element)
                .collect()
        })
        .collect();
    let model = ModelHandle::new("random SDXL UNet", Arc::new(unet), Arc::new(source))
        .with_kept_dtype(Some(kept))
        .with_eight_bit_products(eight_bit_products);
    let unet = model.network.as_any().downcast_ref::<UNet>().expect("a UNet");
    let inputs = Inputs::new(&cfg, latent, dtype, &device).expect("inputs");
    // What a step computes, for its rate (`tflop_s`): the CFG batch of two, one prompt window.
    let step_flops = cfg.step_flops(2, latent, latent, 77);
    // The first plain resident output, without and with the ControlNet beside the UNet.
    let mut resident_output: [Option<Vec<f32>>; 2] = [None, None];
    let mut identity_net: Option<IdentityNet> = None;
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
            graph,
            controlnet,
        } = parse_config(config);
        assert!(
            !(graph && (swapped || profile)),
            "graph: a resident step without profile marks"
        );
        assert!(
            !(controlnet && profile),
            "controlnet: its time is its own mark, not a unit's"
        );
        let swap_plan = swapped.then(|| plan(&units, kept, &settings).expect("a swap plan"));
        let swap = swap_plan.clone().map(|swap_plan| {
            SwapStore::load(
                logical_units.clone(),
                &model.source,
                swap_plan,
                settings,
                &device,
                model.dtypes(dtype),
            )
            .and_then(|store| store.with_resident_layout(model.network.as_ref()))
            .expect("a swap store")
        });
        // Built here rather than through the model's placement, which would keep it cached on
        // the device for the configurations after it.
        let resident = swap.is_none().then(|| {
            ResidentStore::load_for(model.network.as_ref(), &model.source, model.dtypes(dtype), &device)
                .expect("weights on the device")
        });
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
        // With `graph` the steps go through the sampler's recorder: the warm-up runs as it is, a
        // second step is recorded, and the timed steps replay it.
        let graphs = if graph {
            StepGraphs::recording(&device)
        } else {
            StepGraphs::queued()
        };
        if controlnet && identity_net.is_none() {
            identity_net = Some(IdentityNet::new(latent, dtype, &device).expect("an SDXL ControlNet"));
        }
        let beside = identity_net.as_ref().filter(|_| controlnet);
        // The ControlNet's share of each step, between marks around it (none inside a recording).
        let controlnet_marks = std::cell::RefCell::new(Vec::new());
        let step = || {
            graphs
                .run(
                    &[inputs.sample.clone(), inputs.timesteps.clone()],
                    Vec::new(),
                    |given| {
                        let marked = !graph;
                        let start = marked.then(|| Mark::now(&device));
                        let control = beside
                            .map(|net| net.residuals(&inputs.input(given, &projected)))
                            .transpose()?;
                        if let Some(start) = start {
                            controlnet_marks.borrow_mut().push((start, Mark::now(&device)));
                        }
                        inputs.run(unet, store, &projected, given, control.as_ref())
                    },
                )
                .expect("a UNet step")
        };
        reset_peak_memory(&device);
        let warm_up = Instant::now();
        step();
        device.synchronize().expect("the warm-up step to finish");
        let warm_up_ms = warm_up.elapsed().as_secs_f64() * 1e3;
        if graph {
            step();
            assert_eq!(
                graphs.replayed(),
                1,
                "the step recorded as a CUDA graph (see the warning)"
            );
        }
        device.synchronize().expect("the warm-up step to finish");
        if let Some(timed) = &timed {
            timed.drain();
        }
        controlnet_marks.borrow_mut().clear();
        let run_queued = Instant::now();
        let run_start = Mark::now(&device);
        let mut bounds = Vec::new();
        let mut step_marks = Vec::new();
        let mut last_output = None;
        for _ in 0..steps {
            let queued = Instant::now();
            let start = Mark::now(&device);
            last_output = Some(step());
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
        let resident_output_here = &mut resident_output[usize::from(controlnet)];
        if !swapped && !graph && resident_output_here.is_none() {
            *resident_output_here = Some(output.clone());
        }
        let identical_to_resident = (swapped || graph)
            .then(|| resident_output_here.as_ref().map(|resident| *resident == output))
            .flatten();
        let controlnet_ms = (beside.is_some() && !graph).then(|| {
            let mut shares: Vec<f64> = controlnet_marks
                .borrow()
                .iter()
                .map(|(start, end)| start.until(end))
                .collect();
            shares.sort_by(f64::total_cmp);
            shares[shares.len() / 2]
        });
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
        if !swapped && !graph && !controlnet {
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
                        bytes: unit.bytes(kept),
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
                        let deeper_plan = plan(&units, kept, &deeper).ok()?;
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
                "weights": blocks.map_or_else(|| format!("{kept:?}"), |kind| format!("{kind:?}")),
                "eight_bit_products": eight_bit_products,
                "median_ms": round(median, 1),
                "controlnet_ms": controlnet_ms.map(|ms| round(ms, 1)),
                "tflop_s": (!controlnet).then(|| round(step_flops as f64 / (median * 1e-3) / 1e12, 1)),
                "context_projection_ms": round(projection_ms, 1),
                "warm_up_ms": round(warm_up_ms, 1),
                "min_ms": round(times[0], 1),
                "host_queue_ms": round(queued_median, 1),
                "streamed_gib_per_step": round(gib(streamed), 3),
                "achieved_h2d_gb_s": round(streamed / (median * 1e-3) / 1e9, 1),
                "compute_wait_ms_per_step": wait.map(|w| round(w, 1)),
                "compute_wait_ms_per_step_by_block": wait_by_block,
                "ms_per_step_by_block": time_by_block,
                "by_unit": profile.then(|| units[..pass_units].iter().zip(&unit_ms).enumerate().map(|(i, (unit, &ms))| serde_json::json!({
                    "unit": unit.name,
                    "bytes": unit.bytes(kept),
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
    // Weights kept in another form than drawn (8 bits, quantized blocks): the resident step's
    // output against the same step on the drawn weights themselves.
    if let (true, Some(kept_output)) = (kept != dtype, &resident_output[0]) {
        let drawn = TensorSource::from_tensors("drawn", drawn);
        let reference = ResidentStore::load(logical_units.clone(), &drawn, dtype, &device).expect("the drawn weights");
        let projected = unet
            .project_context(&reference, &inputs.context)
            .expect("the context projected");
        let expected: Vec<f32> = inputs
            .run(unet, &reference, &projected, &inputs.given(), None)
            .and_then(|o| o.to_dtype(DType::F32)?.flatten_all()?.to_vec1())
            .expect("the reference output");
        let squares = |values: &mut dyn Iterator<Item = f64>| values.map(|v| v * v).sum::<f64>().sqrt();
        let difference = squares(&mut kept_output.iter().zip(&expected).map(|(a, b)| f64::from(a - b)));
        let magnitude = squares(&mut expected.iter().map(|&v| f64::from(v)));
        let largest = |values: &[f32]| values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = kept_output
            .iter()
            .zip(&expected)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!(
            "{}",
            serde_json::json!({
                "weights": blocks.map_or_else(|| format!("{kept:?}"), |kind| format!("{kind:?}")),
                "eight_bit_products": eight_bit_products,
                "against": format!("the same step on the drawn {dtype:?} weights"),
                "relative_error": (difference / magnitude * 1e4).round() / 1e4,
                "largest_error_of_largest_value": f64::from((worst / largest(&expected) * 1e4).round() / 1e4),
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
    /// Replay the step as a CUDA graph recorded once (resident only).
    graph: bool,
    /// Run an SDXL-size ControlNet beside the UNet at every step.
    controlnet: bool,
}

/// A configuration string as the settings it names.
fn parse_config(config: &str) -> Config {
    let mut profile = false;
    let mut bus_load = None;
    let mut graph = false;
    let mut controlnet = false;
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
            "graph" => graph = true,
            "controlnet" => controlnet = true,
            "noise" => bus_load = Some(Copier::CopyEngine),
            "noise-sm" => bus_load = Some(Copier::Kernel),
            "noise-huge" => bus_load = Some(Copier::HugePages),
            "block" => settings.granularity = Granularity::Block,
            p => {
                settings.prefetch = p.trim_start_matches('p').parse().expect(
                    "a modifier: pN, sync, debug, block, profile, graph, controlnet, noise, noise-sm, noise-huge",
                )
            }
        }
    }
    Config {
        swapped,
        settings,
        profile,
        bus_load,
        graph,
        controlnet,
    }
}

/// `drawn` written to a GGUF file in `kind`'s blocks as ComfyUI-GGUF's converter lays them
/// out ([`gguf_writer`]), and opened as the UNet's source.
fn quantized_source(drawn: &HashMap<String, Tensor>, kind: GgmlDType) -> TensorSource {
    let started = Instant::now();
    let tensors: Vec<(String, candle_core::Shape)> =
        drawn.iter().map(|(k, t)| (k.clone(), t.shape().clone())).collect();
    let path = std::env::temp_dir().join(format!("unet_step_{kind:?}.gguf"));
    let bytes = gguf_writer::write_gguf(&path, &tensors, kind, |name| drawn[name].clone()).expect("the GGUF file");
    eprintln!(
        "unet_step: {} tensors in {kind:?} ({:.2} GiB) written to {} in {:.1} s",
        tensors.len(),
        bytes as f64 / (1u64 << 30) as f64,
        path.display(),
        started.elapsed().as_secs_f64()
    );
    let file = GgufFile::open(&path).expect("the GGUF file read back");
    TensorSource::from_gguf(file, path.display().to_string())
}

/// Seeded random weights for every tensor of `units`, as the built-in models draw theirs
/// (matrices and kernels N(0, 1/fan_in), norm scales 1, biases 0): the same in every process,
/// so that the kept forms' errors are held to the same weights.
fn random_weights(units: &[swapgraph_model::UnitSpec], dtype: DType) -> HashMap<String, Tensor> {
    units
        .iter()
        .flat_map(|u| u.tensors.iter().map(|(n, s)| (u.key(n), s.clone())))
        .map(|(key, shape)| {
            let tensor = seeded_tensor("random SDXL UNet", &key, &shape, dtype).expect("random weights");
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
        // Seeded N(0, 1) values: drawn as a matrix of one column, whose fan-in of 1 leaves them
        // unscaled.
        let randn = |name: &str, shape: &[usize]| {
            let count = shape.iter().product::<usize>();
            seeded_tensor("unet_step inputs", name, &(count, 1).into(), dtype)?
                .reshape(shape)?
                .to_device(device)
        };
        Ok(Self {
            sample: randn("sample", &[2, 4, latent, latent])?,
            timesteps: Tensor::new(&[500f32, 500.0], device)?,
            context: randn("context", &[2, 77, cfg.cross_attention_dim])?,
            pooled: randn("pooled", &[2, cfg.pooled_text_dim])?,
            ids: Tensor::new(&[[1024f32, 1024.0, 0.0, 0.0, 1024.0, 1024.0]; 2], device)?,
        })
    }

    /// What changes from step to step in a sampler: the latents and the timesteps.
    fn given(&self) -> [Tensor; 2] {
        [self.sample.clone(), self.timesteps.clone()]
    }

    /// The UNet's input of a step whose latents and timesteps are `given` (as the sampler
    /// passes them).
    fn input<'a>(&'a self, given: &'a [Tensor], projected: &'a ProjectedContext) -> UNetInput<'a> {
        UNetInput {
            sample: &given[0],
            timesteps: &given[1],
            context: &self.context,
            projected: Some(projected),
            text_embeds: &self.pooled,
            time_ids: &self.ids,
            control: None,
            extra_tokens: None,
        }
    }

    /// A step on these inputs, its latents and timesteps `given`, with a ControlNet's residuals.
    fn run(
        &self,
        unet: &UNet,
        store: &dyn WeightStore,
        projected: &ProjectedContext,
        given: &[Tensor],
        control: Option<&ControlResiduals>,
    ) -> candle_core::Result<Tensor> {
        let input = UNetInput {
            control,
            ..self.input(given, projected)
        };
        unet.forward(store, &input)
    }
}
