//! DEIS's coefficients, as ComfyUI's `deis` sampler takes them (its "tab" mode): an
//! Adams-Bashforth step in the time of a variance-preserving process, whose weights integrate
//! the exponential integrator's kernel against the Lagrange polynomials through the last steps'
//! times, numerically over 10,000 points. Computed in f32, as ComfyUI does.
//!
//! Reference: Zhang and Chen, "Fast Sampling of Diffusion Models with Exponential Integrator"
//! (2022); ComfyUI's `comfy/k_diffusion/deis.py`.

/// The highest order: the current slope and two earlier ones.
pub(super) const DEIS_ORDER: usize = 3;
/// Points of the numerical integration over a step.
const POINTS: usize = 10_000;

/// The variance-preserving process EDM's sigmas are mapped into (ComfyUI's `edm2t`, from
/// sigmas 0.002 to 80 over times 0.001 to 1).
struct VpProcess {
    beta_min: f32,
    beta_d: f32,
}

impl VpProcess {
    fn new() -> Self {
        let (epsilon_s, sigma_min, sigma_max) = (1e-3_f32, 0.002_f32, 80.0_f32);
        let log_max = (sigma_max * sigma_max + 1.0).ln();
        let beta_d = 2.0 * ((sigma_min * sigma_min + 1.0).ln() / epsilon_s - log_max) / (epsilon_s - 1.0);
        Self {
            beta_min: log_max - 0.5 * beta_d,
            beta_d,
        }
    }

    /// The process's time at noise level `sigma`.
    fn time(&self, sigma: f32) -> f32 {
        ((self.beta_min * self.beta_min + 2.0 * self.beta_d * (sigma * sigma + 1.0).ln()).sqrt() - self.beta_min)
            / self.beta_d
    }

    /// The integrand at time `t`: -(d log alpha / dt) / (2 sqrt(alpha (1 - alpha))).
    fn kernel(&self, t: f32) -> f32 {
        let alpha = (-0.5 * t * t * self.beta_d - t * self.beta_min).exp();
        let d_log_alpha = -(t * self.beta_d) - self.beta_min;
        -0.5 * d_log_alpha / (alpha * (1.0 - alpha)).sqrt()
    }
}

/// Step `i`'s weights (from `sigmas[i]` to `sigmas[i + 1]`) for the current slope and the
/// `order - 1` slopes before it, each already multiplied by the step.
pub(super) fn coefficients(sigmas: &[f64], i: usize, order: usize) -> Vec<f64> {
    let process = VpProcess::new();
    let times: Vec<f32> = (0..order).map(|back| process.time(sigmas[i - back] as f32)).collect();
    let (start, end) = (times[0], process.time(sigmas[i + 1] as f32));
    let width = (end - start) / POINTS as f32;
    let taus = linspace(start, end, POINTS);
    (0..order)
        .map(|j| {
            let sum: f64 = taus
                .iter()
                .map(|&tau| f64::from(process.kernel(tau) * lagrange(&times, j, tau)))
                .sum();
            sum * f64::from(width)
        })
        .collect()
}

/// The Lagrange basis polynomial of node `j` through `times`, at `tau`.
fn lagrange(times: &[f32], j: usize, tau: f32) -> f32 {
    (0..times.len())
        .filter(|&k| k != j)
        .fold(1.0, |product, k| product * ((tau - times[k]) / (times[j] - times[k])))
}

/// `torch.linspace(start, end, count)` in f32: the first half counted from `start`, the rest
/// back from `end`.
fn linspace(start: f32, end: f32, count: usize) -> Vec<f32> {
    let step = (end - start) / (count - 1) as f32;
    let half = count / 2;
    (0..count)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (count - 1 - i) as f32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_are_comfyuis_on_a_karras_schedule() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/comfy_sampling_cases.safetensors");
        let cases = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
        let sigmas: Vec<f64> = cases["deis.sigmas"]
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let reference = cases["deis.coefficients"].to_vec1::<f32>().unwrap();
        // Step 0 is Euler's; the last, to zero, is too (its weights are infinite there).
        let ours: Vec<f64> = (1..sigmas.len() - 2)
            .flat_map(|i| coefficients(&sigmas, i, (i + 1).min(DEIS_ORDER)))
            .collect();
        assert_eq!(ours.len() + 3, reference.len());
        for (k, (a, b)) in ours.iter().zip(&reference).enumerate() {
            let b = f64::from(*b);
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-2), "weight {k}: {a} against {b}");
        }
    }
}
