//! A product's algorithm chosen by timing, with `SWAPGRAPH_GEMM_TUNING=on`. cuBLASLt's
//! heuristics rank a handful of algorithms for each geometry, and the first they rank is not
//! always the fastest on the card at hand (torch.compile's max-autotune times its candidates for
//! the same reason). The first time a geometry comes, each candidate runs on that product's own
//! buffers, once to warm up and then [`RUNS`] times between two events, and the fastest is kept
//! for the process: one-off work of a few milliseconds a geometry, at a model's first step.
//!
//! Timing waits for the card, so it is skipped while the stream is being recorded into a CUDA
//! graph (a step is run before it is recorded, so its geometries are timed by then). Without the
//! switch the heuristics' first algorithm is taken: timings vary, so another process may keep
//! another algorithm and round an image's last bits differently, for a step only about 1.5%
//! faster (`bench/gpu_graphs.sh tuning`); a run gives the same image every time by default.

use candle_core::cuda_backend::cudarc::driver::{sys, CudaStream};
use candle_core::cuda_backend::WrapErr;
use candle_core::Result;
use std::sync::{Arc, OnceLock};

/// How many of the heuristics' algorithms are asked for and timed.
pub const CANDIDATES: usize = 6;

/// Timed runs of each candidate, after one to warm up.
const RUNS: usize = 3;

/// Whether `SWAPGRAPH_GEMM_TUNING=on` asks for the candidates to be timed.
fn asked() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("SWAPGRAPH_GEMM_TUNING").is_ok_and(|v| v.eq_ignore_ascii_case("on")))
}

/// The fastest of `candidates` on `stream`, each queued by `run`; `None` where there is nothing
/// to choose or timing does not apply (see the module's doc).
///
/// # Errors
/// A failure of the events that time the runs.
pub fn fastest<A: Copy>(
    stream: &Arc<CudaStream>,
    candidates: &[A],
    run: impl Fn(&A) -> Result<()>,
) -> Result<Option<A>> {
    if !asked() || candidates.len() < 2 {
        return Ok(None);
    }
    if stream.capture_status().w()? != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE {
        return Ok(None);
    }
    timed_fastest(stream, candidates, run)
}

/// The candidate whose runs took least between two events; one `run` refuses is passed over,
/// and the last one queued leaves its output to be written again.
fn timed_fastest<A: Copy>(
    stream: &Arc<CudaStream>,
    candidates: &[A],
    run: impl Fn(&A) -> Result<()>,
) -> Result<Option<A>> {
    let context = stream.context();
    let timed = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let (start, end) = (context.new_event(timed).w()?, context.new_event(timed).w()?);
    let mut best: Option<(f32, A)> = None;
    for candidate in candidates {
        if run(candidate).is_err() {
            continue;
        }
        start.record(stream).w()?;
        let ran = (0..RUNS).try_for_each(|_| run(candidate));
        end.record(stream).w()?;
        let milliseconds = start.elapsed_ms(&end).w()?;
        if ran.is_ok() && best.is_none_or(|(fastest, _)| milliseconds < fastest) {
            best = Some((milliseconds, *candidate));
        }
    }
    Ok(best.map(|(_, algorithm)| algorithm))
}

/// Run by the CUDA build's tests on a machine with an NVIDIA GPU.
#[cfg(test)]
mod tests {
    use super::timed_fastest;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{Device, Result};
    use std::cell::RefCell;

    #[test]
    fn the_candidate_whose_work_takes_least_is_chosen_and_one_that_fails_is_passed_over() -> Result<()> {
        let Device::Cuda(device) = Device::new_cuda(0)? else {
            candle_core::bail!("no CUDA device")
        };
        let stream = device.cuda_stream();
        let buffer = RefCell::new(stream.alloc_zeros::<u8>(256 << 20).w()?);
        // Each candidate clears that many MiB; 0 stands for one the product refuses.
        let run = |mib: &usize| -> Result<()> {
            if *mib == 0 {
                candle_core::bail!("not supported");
            }
            stream.memset_zeros(&mut buffer.borrow_mut().slice_mut(..mib << 20)).w()
        };
        assert_eq!(timed_fastest(&stream, &[256, 0, 4, 64], run)?, Some(4));
        assert_eq!(timed_fastest(&stream, &[0, 0], run)?, None);
        Ok(())
    }
}
