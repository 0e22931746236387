//! The CUDA streaming path: swapped units packed once into page-locked host memory, copied on a
//! dedicated copy stream into a ring of device memory while earlier units compute.
//!
//! Ordering is by events alone, never by synchronising the host: each copy (a placement) has a
//! `ready` event recorded after it on the copy stream and a `free` event its unit records on the
//! compute stream when released; each part of a copy waits for the `free` event of the
//! placement under it, and the compute stream waits for a unit's `ready` event before it runs.
//! [`StreamSchedule`] decides those operations and their order (where each tensor goes in the
//! ring, how far ahead, which event each waits for; tested on the CPU against a model of the two
//! streams); this file carries them out. The host copy is the master: nothing is copied back.
//!
//! Units that run once per conditioning rather than in every pass (the context projections) are
//! packed too but stay out of the ring: each use copies them on the compute stream into device
//! memory of their own, freed when the weights are dropped.

use crate::pinned_arena::PinnedArena;
use crate::pipeline::{tensor_pieces, Transfer};
use crate::stream_ops::{StreamOp, StreamSchedule};
use candle_core::cuda_backend::cudarc::driver::{result, sys, CudaEvent, CudaStream, DevicePtr};
use candle_core::{DType, Device, Shape, Storage, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use swapgraph_model::{SourceError, TensorSource, UnitSpec, UnitWeights};

/// Why the streaming path could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Page-locked host memory could not be allocated; the synchronous path still works.
    #[error("page-locked allocation of {bytes} bytes failed: {message}")]
    Pinning {
        /// The allocation that failed.
        bytes: usize,
        /// The driver's message.
        message: String,
    },
    /// A weight could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The device refused a stream, event or buffer.
    #[error("device error while setting up streaming: {0}")]
    Device(String),
}

fn device_error(e: impl std::fmt::Display) -> SetupError {
    SetupError::Device(e.to_string())
}

/// One swapped unit in the page-locked arena: its bytes there, and its tensors end to end as
/// [`tensor_pieces`] lays them out, each with its start and piece length in elements.
struct PackedUnit {
    bytes: std::ops::Range<usize>,
    tensors: Vec<PackedTensor>,
}

/// Where one tensor lies in a packed unit.
struct PackedTensor {
    name: String,
    shape: Shape,
    /// Start in the packed unit, in elements.
    offset: usize,
    /// Elements of its piece, the tensor rounded up to the alignment.
    piece: usize,
}

/// The events that order one placement's copy, its use and the copies that overwrite it.
struct PlacementEvents {
    /// Recorded on the copy stream after the copy.
    ready: CudaEvent,
    /// Recorded on the compute stream when the unit is released (on the copy stream when its
    /// copy was abandoned).
    free: CudaEvent,
}

/// Timestamps of one use of a streamed unit, read when a report asks for them.
struct PendingTiming {
    unit: usize,
    /// The forward pass it belongs to (see [`Streamer::begin_pass`]).
    pass: u64,
    copy: Option<(CudaEvent, CudaEvent)>,
    wait: (CudaEvent, CudaEvent),
}

/// Per-unit totals of transfer and compute-wait time, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitTiming {
    /// Time the unit's copies took on the copy stream.
    pub transfer_ms: f64,
    /// Time the compute stream stood still waiting for the unit's copies.
    pub wait_ms: f64,
    /// Uses measured.
    pub uses: u64,
}

struct State {
    schedule: StreamSchedule,
    /// Events of the placements that may still be waited on.
    events: HashMap<usize, PlacementEvents>,
    /// The unit whose copy started last, and its start's timing event (debug only).
    copying: Option<(usize, Option<CudaEvent>)>,
    /// Timing events of placements' copies (debug only).
    copy_events: HashMap<usize, (CudaEvent, CudaEvent)>,
    pending: Vec<PendingTiming>,
    totals: HashMap<usize, UnitTiming>,
    /// The forward pass running now (debug only), and an event recorded on the compute stream
    /// at the start of each recent one.
    pass: u64,
    origins: HashMap<u64, CudaEvent>,
    /// The latest pass harvested: each streamed use's copy and wait, in milliseconds from the
    /// pass's start.
    last_pass: (u64, Vec<UnitUse>),
}

/// One streamed unit's copy (absent when it was copied outside the timed ring) and the compute
/// stream's wait for it, as `[start, end]` in milliseconds from its pass's start.
pub type UnitUse = (usize, Option<[f64; 2]>, [f64; 2]);

/// Streams swapped units to one CUDA device.
pub struct Streamer {
    /// Every packed unit's bytes, page-locked.
    arena: PinnedArena,
    packed: HashMap<usize, PackedUnit>,
    /// The transfer ring; unit weights are views into it.
    ring: Tensor,
    ring_address: sys::CUdeviceptr,
    copy_stream: Arc<CudaStream>,
    compute_stream: Arc<CudaStream>,
    dtype: DType,
    timing: bool,
    state: Mutex<State>,
}

// SAFETY: device addresses and events are plain handles; all mutation goes through `state`'s
// mutex, and the CUDA driver API is thread-safe.
unsafe impl Send for Streamer {}
unsafe impl Sync for Streamer {}

impl Streamer {
    /// Packs the swapped units of `units` into page-locked memory and allocates a transfer ring
    /// of `ring_bytes` (at least the largest unit) on `device`. `timing` records per-unit
    /// transfer and wait times.
    ///
    /// # Errors
    /// [`SetupError::Pinning`] when page-locked memory is refused (the caller falls back to the
    /// synchronous path); a source or device error otherwise.
    pub fn new(
        units: &[UnitSpec],
        swapped: &[bool],
        source: &TensorSource,
        device: &Device,
        dtype: DType,
        ring_bytes: u64,
        timing: bool,
    ) -> Result<Self, SetupError> {
        let Device::Cuda(cuda) = device else {
            return Err(SetupError::Device("streaming needs a CUDA device".into()));
        };
        let compute_stream = cuda.cuda_stream();
        let context = compute_stream.context().clone();
        let copy_stream = context.new_stream().map_err(device_error)?;
        let order: Vec<usize> = (0..units.len()).filter(|&i| swapped[i]).collect();
        let once = (0..units.len()).filter(|&i| !units[i].group.every_pass);
        // Units are read, converted and packed in parallel into one arena, page-locked once
        // filled: the longest one-off work before the first step.
        let indices: Vec<usize> = order.iter().copied().chain(once).collect();
        let mut packed = HashMap::new();
        let mut end = 0;
        for &index in &indices {
            let unit = layout(&source.kept_unit(&units[index], dtype), dtype);
            let bytes = unit.bytes.len();
            packed.insert(
                index,
                PackedUnit {
                    bytes: end..end + bytes,
                    tensors: unit.tensors,
                },
            );
            end += bytes;
        }
        let pinning = |message: String| SetupError::Pinning { bytes: end, message };
        let mut arena = PinnedArena::new(end).map_err(|e| pinning(e.to_string()))?;
        let lengths: Vec<usize> = indices.iter().map(|i| packed[i].bytes.len()).collect();
        indices
            .par_iter()
            .zip(arena.parts_mut(&lengths))
            .try_for_each(|(&index, part)| fill(&units[index], &packed[&index].tensors, source, dtype, part))?;
        arena.register(&context).map_err(|e| pinning(e.to_string()))?;
        let pieces = order
            .iter()
            .map(|unit| packed[unit].tensors.iter().map(|t| t.piece).collect())
            .collect();
        let ring_elements = ring_bytes as usize / dtype.size_in_bytes();
        let schedule = StreamSchedule::new(order, pieces, ring_elements);
        let ring = Tensor::zeros(schedule.capacity().max(1), dtype, device).map_err(device_error)?;
        let ring_address = device_address(&ring, &copy_stream).map_err(device_error)?;
        let state = State {
            schedule,
            events: HashMap::new(),
            copying: None,
            copy_events: HashMap::new(),
            pending: Vec::new(),
            totals: HashMap::new(),
            pass: 0,
            origins: HashMap::new(),
            last_pass: (0, Vec::new()),
        };
        Ok(Self {
            arena,
            packed,
            ring,
            ring_address,
            copy_stream,
            compute_stream,
            dtype,
            timing,
            state: Mutex::new(state),
        })
    }

    /// Bytes of the device's transfer ring.
    pub fn ring_bytes(&self) -> u64 {
        (self.ring.elem_count() * self.dtype.size_in_bytes()) as u64
    }

    /// Bytes of page-locked host memory holding swapped units and the context projections.
    pub fn pinned_bytes(&self) -> u64 {
        self.packed.values().map(|p| p.bytes.len() as u64).sum()
    }

    /// The weights of `unit`, a context projection, copied on the compute stream into device
    /// memory of their own (the compute that reads them follows the copy on the stream; the
    /// memory goes when the weights are dropped).
    ///
    /// # Errors
    /// A driver error, or a unit that was not packed.
    pub fn copy_outside_ring(&self, unit: usize) -> candle_core::Result<UnitWeights> {
        let packed = self
            .packed
            .get(&unit)
            .ok_or_else(|| candle_core::Error::Msg(format!("unit {unit} has no page-locked copy")))?;
        let element = self.dtype.size_in_bytes();
        let buffer = Tensor::zeros(packed.bytes.len() / element, self.dtype, self.ring.device())?;
        let target = device_address(&buffer, &self.compute_stream)?;
        let host = self.arena.bytes(packed.bytes.clone());
        self.compute_stream.context().bind_to_thread().map_err(driver)?;
        // SAFETY: the buffer holds the whole packed unit; the page-locked host memory lives as
        // long as the streamer, whose drop synchronises the compute stream.
        unsafe { result::memcpy_htod_async(target, host, self.compute_stream.cu_stream()) }.map_err(driver)?;
        let offsets: Vec<usize> = packed.tensors.iter().map(|t| t.offset).collect();
        views(&buffer, &packed.tensors, &offsets)
    }

    /// The weights of swapped unit `unit`, once its copy has landed (the compute stream waits;
    /// the host does not). Issues the copies the schedule asks for.
    ///
    /// # Errors
    /// A driver error, or a unit that is not swapped.
    pub fn acquire(&self, unit: usize) -> candle_core::Result<(UnitWeights, u64)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let acquisition = state
            .schedule
            .acquire(unit)
            .ok_or_else(|| candle_core::Error::Msg(format!("unit {unit} is not streamed")))?;
        let mut copied = 0;
        for op in &acquisition.ops {
            copied += self.carry_out(op, unit, &mut state)?;
        }
        let State {
            schedule,
            events,
            copy_events,
            ..
        } = &mut *state;
        events.retain(|placement, _| schedule.is_evented(*placement));
        copy_events.retain(|placement, _| schedule.is_evented(*placement));
        Ok((
            views(&self.ring, &self.packed[&unit].tensors, &acquisition.starts)?,
            copied,
        ))
    }

    /// The compute stream is done enqueueing work on `unit`'s weights: later copies may
    /// overwrite them once that work has run.
    pub fn release(&self, unit: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for op in state.schedule.release(unit) {
            if let Err(e) = self.carry_out(&op, unit, &mut state) {
                tracing::warn!("BlockSwap: recording a unit's release failed: {e}");
            }
        }
    }

    /// Carries out one operation of the schedule for `unit`'s acquisition or release: the bytes
    /// it copies.
    fn carry_out(&self, op: &StreamOp, unit: usize, state: &mut State) -> candle_core::Result<u64> {
        match op {
            StreamOp::FreeOnCopy(placement) => {
                if let Some(events) = state.events.get(placement) {
                    events.free.record(&self.copy_stream).map_err(driver)?;
                }
            }
            StreamOp::CopyStarts {
                placement,
                unit: copied,
            } => {
                let context = self.copy_stream.context();
                let events = PlacementEvents {
                    ready: context.new_event(None).map_err(driver)?,
                    free: context.new_event(None).map_err(driver)?,
                };
                state.events.insert(*placement, events);
                let start = self.timing.then(|| self.timing_event(&self.copy_stream)).transpose()?;
                state.copying = Some((*copied, start));
            }
            StreamOp::CopyWaitsFree(placement) => {
                if let Some(events) = state.events.get(placement) {
                    self.copy_stream.wait(&events.free).map_err(driver)?;
                }
            }
            StreamOp::Transfer(transfer) => {
                let (copied, _) = state
                    .copying
                    .as_ref()
                    .ok_or_else(|| candle_core::Error::Msg("a transfer outside a copy".into()))?;
                return self.transfer(&self.packed[copied], transfer);
            }
            StreamOp::CopyReady(placement) => {
                state.events[placement]
                    .ready
                    .record(&self.copy_stream)
                    .map_err(driver)?;
                if let Some((_, Some(start))) = state.copying.take() {
                    let end = self.timing_event(&self.copy_stream)?;
                    state.copy_events.insert(*placement, (start, end));
                }
                if state.pending.len() > 4096 {
                    harvest(state);
                }
            }
            StreamOp::ComputeWaitsReady(placement) => {
                let before = self
                    .timing
                    .then(|| self.timing_event(&self.compute_stream))
                    .transpose()?;
                self.compute_stream
                    .wait(&state.events[placement].ready)
                    .map_err(driver)?;
                if let Some(before) = before {
                    let after = self.timing_event(&self.compute_stream)?;
                    let copy = state.copy_events.remove(placement);
                    state.pending.push(PendingTiming {
                        unit,
                        pass: state.pass,
                        copy,
                        wait: (before, after),
                    });
                }
            }
            StreamOp::FreeOnCompute(placement) => {
                if let Some(events) = state.events.get(placement) {
                    events.free.record(&self.compute_stream).map_err(driver)?;
                }
            }
        }
        Ok(0)
    }

    /// A forward pass starts (debug only): later timings are placed on its timeline.
    pub fn begin_pass(&self) {
        if !self.timing {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.pass += 1;
        let pass = state.pass;
        match self.timing_event(&self.compute_stream) {
            Ok(origin) => {
                state.origins.insert(pass, origin);
            }
            Err(e) => tracing::warn!("BlockSwap: timing a pass failed: {e}"),
        }
        // Timings not yet harvested may belong to the few passes before.
        state.origins.retain(|earlier, _| *earlier + 4 > pass);
    }

    /// The latest forward pass's streamed uses, unit by unit. Waits for the recorded work to
    /// finish.
    pub fn timeline(&self) -> Vec<UnitUse> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        harvest(&mut state);
        state.last_pass.1.clone()
    }

    /// Per-unit transfer and wait totals so far. Waits for the recorded work to finish.
    pub fn timings(&self) -> HashMap<usize, UnitTiming> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        harvest(&mut state);
        state.totals.clone()
    }

    /// One host-to-device transfer on the copy stream, from the packed unit into the ring: the
    /// bytes it copies.
    fn transfer(&self, packed: &PackedUnit, transfer: &Transfer) -> candle_core::Result<u64> {
        let element = self.dtype.size_in_bytes();
        let start = packed.bytes.start + transfer.offset * element;
        let source = self.arena.bytes(start..start + transfer.length * element);
        let target = self.ring_address + (transfer.start * element) as u64;
        self.copy_stream.context().bind_to_thread().map_err(driver)?;
        // SAFETY: the schedule places every piece inside the ring; the host buffer is page-locked
        // and outlives the copy (drop synchronises the copy stream); every unit the transfer
        // overwrites has finished with it (the `free` events waited on before it).
        unsafe { result::memcpy_htod_async(target, source, self.copy_stream.cu_stream()) }.map_err(driver)?;
        Ok(source.len() as u64)
    }

    fn timing_event(&self, stream: &CudaStream) -> candle_core::Result<CudaEvent> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        stream
            .context()
            .new_event(flags)
            .and_then(|e| e.record(stream).map(|()| e))
            .map_err(driver)
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        // Copies in flight read the page-locked buffers and write the ring.
        let _ = self.copy_stream.synchronize();
        let _ = self.compute_stream.synchronize();
    }
}

/// Adds finished timings to the totals, and those of the latest pass to its timeline.
fn harvest(state: &mut State) {
    let pending = std::mem::take(&mut state.pending);
    for timing in pending {
        let total = state.totals.entry(timing.unit).or_default();
        if let Some((start, end)) = &timing.copy {
            total.transfer_ms += f64::from(start.elapsed_ms(end).unwrap_or(0.0));
        }
        total.wait_ms += f64::from(timing.wait.0.elapsed_ms(&timing.wait.1).unwrap_or(0.0));
        total.uses += 1;
        let Some(origin) = state.origins.get(&timing.pass) else {
            continue;
        };
        let since = |event: &CudaEvent| f64::from(origin.elapsed_ms(event).unwrap_or(0.0));
        let copy = timing.copy.as_ref().map(|(start, end)| [since(start), since(end)]);
        let wait = [since(&timing.wait.0), since(&timing.wait.1)];
        if timing.pass > state.last_pass.0 {
            state.last_pass = (timing.pass, Vec::new());
        }
        if timing.pass == state.last_pass.0 {
            state.last_pass.1.push((timing.unit, copy, wait));
        }
    }
}

fn driver(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("BlockSwap streaming: {e}"))
}

/// A packed unit's `tensors` as views into `buffer`, each from its element in `starts`.
fn views(buffer: &Tensor, tensors: &[PackedTensor], starts: &[usize]) -> candle_core::Result<UnitWeights> {
    let tensors = tensors
        .iter()
        .zip(starts)
        .map(|(tensor, &start)| {
            let view = buffer
                .narrow(0, start, tensor.shape.elem_count())?
                .reshape(&tensor.shape)?;
            Ok((tensor.name.clone(), view))
        })
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    Ok(UnitWeights::new(tensors))
}

/// The device address of a buffer (the ring, or a unit's own).
fn device_address(buffer: &Tensor, stream: &CudaStream) -> candle_core::Result<sys::CUdeviceptr> {
    let (storage, _) = buffer.storage_and_layout();
    let Storage::Cuda(cuda) = &*storage else {
        candle_core::bail!("the ring buffer is not on a CUDA device")
    };
    let address = match buffer.dtype() {
        DType::F16 => cuda.as_cuda_slice::<f16>()?.device_ptr(stream).0,
        DType::BF16 => cuda.as_cuda_slice::<bf16>()?.device_ptr(stream).0,
        DType::F32 => cuda.as_cuda_slice::<f32>()?.device_ptr(stream).0,
        DType::F8E4M3 => cuda.as_cuda_slice::<float8::F8E4M3>()?.device_ptr(stream).0,
        DType::U8 => cuda.as_cuda_slice::<u8>()?.device_ptr(stream).0,
        other => {
            candle_core::bail!("BlockSwap streams f16, bf16, f32, fp8 (e4m3) or stored (GGUF) weights, not {other:?}")
        }
    };
    Ok(address)
}

/// Where `unit`'s tensors lie when packed in `dtype`.
fn layout(unit: &UnitSpec, dtype: DType) -> PackedUnit {
    let mut tensors = Vec::with_capacity(unit.tensors.len());
    let mut elements = 0;
    for ((name, shape), piece) in unit.tensors.iter().zip(tensor_pieces(unit, dtype)) {
        tensors.push(PackedTensor {
            name: name.clone(),
            shape: shape.clone(),
            offset: elements,
            piece,
        });
        elements += piece;
    }
    PackedUnit {
        bytes: 0..elements * dtype.size_in_bytes(),
        tensors,
    }
}

/// Reads `unit`'s tensors in `dtype` into `part`, laid out as `tensors` (the unit as kept) say,
/// padding zeroed.
fn fill(
    unit: &UnitSpec,
    tensors: &[PackedTensor],
    source: &TensorSource,
    dtype: DType,
    part: &mut [u8],
) -> Result<(), SetupError> {
    let element = dtype.size_in_bytes();
    for (tensor, (_, shape)) in tensors.iter().zip(&unit.tensors) {
        let start = tensor.offset * element;
        let written = start + tensor.shape.elem_count() * element;
        // Read from the file straight into the arena where the file allows.
        source.read_into(&unit.key(&tensor.name), shape, dtype, &mut part[start..written])?;
        part[written..start + tensor.piece * element].fill(0);
    }
    Ok(())
}
