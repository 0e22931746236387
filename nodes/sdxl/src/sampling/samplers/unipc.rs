//! UniPC (ComfyUI's `uni_pc` and `uni_pc_bh2`): a multistep predictor-corrector in
//! half-log-SNR, the corrector's model evaluation serving as the next step's, run as ComfyUI
//! runs it: on the variance-preserving scaling of the latents, the last sigma 0 replaced by
//! 0.001, order up to 3 and lower at the end. Its scalars are float32, as ComfyUI computes them
//! (at sigma 0.001 the float32 formulas differ from exact ones by percents, which ComfyUI's
//! images carry).
//!
//! Reference: Zhao et al., "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
//! Diffusion Models" (2023); ComfyUI's `comfy/extra_samplers/uni_pc.py`.

use super::Denoiser;
use candle_core::{Result, Tensor};

/// The B(h) of the update: `h` itself (bh1) or `e^h - 1` (bh2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Variant {
    Bh1,
    Bh2,
}

/// The variance-preserving view of a sigma, in float32 as ComfyUI's `SigmaConvert` has it.
#[derive(Clone, Copy)]
struct Level {
    sigma: f32,
    log_alpha: f32,
}

impl Level {
    fn new(sigma: f32) -> Self {
        Self {
            sigma,
            log_alpha: 0.5 * (1.0 / (sigma * sigma + 1.0)).ln(),
        }
    }

    fn alpha(self) -> f32 {
        self.log_alpha.exp()
    }

    fn std(self) -> f32 {
        (1.0 - (2.0 * self.log_alpha).exp()).sqrt()
    }

    /// Half-log-SNR: log alpha - log std.
    fn lambda(self) -> f32 {
        self.log_alpha - 0.5 * (1.0 - (2.0 * self.log_alpha).exp()).ln()
    }
}

/// The predictions at the last steps' levels, oldest first.
struct History {
    models: Vec<Tensor>,
    levels: Vec<Level>,
}

/// What one update does: where to, of which order, with the corrector or not.
#[derive(Clone, Copy)]
struct Step {
    to: Level,
    order: usize,
    corrector: bool,
    variant: Variant,
}

/// Runs UniPC down `sigmas` from `x` (the latents at `sigmas[0]`), calling `after_step(i, n)`
/// after each of the `n` steps.
pub(super) fn sample(
    model: &mut dyn Denoiser,
    x: Tensor,
    sigmas: &[f64],
    variant: Variant,
    after_step: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<Tensor> {
    let steps = sigmas.len().saturating_sub(1);
    let mut times: Vec<Level> = sigmas.iter().map(|&s| Level::new(s as f32)).collect();
    if let Some(last) = times.last_mut().filter(|last| last.sigma == 0.0) {
        *last = Level::new(0.001);
    }
    let order = 3.min(times.len().saturating_sub(2));
    let Some(&first) = times.first() else {
        return Ok(x);
    };
    let mut x = (x * f64::from(1.0 / (1.0 + first.sigma * first.sigma).sqrt()))?;
    let mut history = History {
        models: vec![data_prediction(model, &x, first)?],
        levels: vec![first],
    };
    for step_index in 0..steps {
        if step_index == 0 {
            // The first evaluation above is this step's.
        } else if step_index < order {
            let step = Step {
                to: times[step_index],
                order: step_index,
                corrector: true,
                variant,
            };
            let (next, evaluated) = update(model, &x, &history, step)?;
            x = next;
            let prediction = match evaluated {
                Some(prediction) => prediction,
                None => data_prediction(model, &x, step.to)?,
            };
            history.models.push(prediction);
            history.levels.push(step.to);
        } else {
            let last = if step_index == steps - 1 { steps } else { step_index };
            for (index, &to) in times.iter().enumerate().take(last + 1).skip(step_index) {
                let step = Step {
                    to,
                    order: order.min(steps + 1 - index),
                    corrector: index != steps,
                    variant,
                };
                let (next, evaluated) = update(model, &x, &history, step)?;
                x = next;
                history.levels.rotate_left(1);
                history.models.rotate_left(1);
                let newest = history.levels.len() - 1;
                history.levels[newest] = step.to;
                // The last update's prediction is never used.
                if index < steps {
                    history.models[newest] = match evaluated {
                        Some(prediction) => prediction,
                        None => data_prediction(model, &x, step.to)?,
                    };
                }
            }
        }
        after_step(step_index + 1, steps)?;
    }
    let Some(&last) = times.last() else {
        return Ok(x);
    };
    x / f64::from(last.alpha())
}

/// The model's prediction of the clean latents from `x` in the variance-preserving scaling at
/// `at`, through its noise prediction as ComfyUI converts it.
fn data_prediction(model: &mut dyn Denoiser, x: &Tensor, at: Level) -> Result<Tensor> {
    let sigma = at.sigma;
    let input = (x * f64::from((sigma * sigma + 1.0).sqrt()))?;
    let noise = ((&input - model.denoise(&input, f64::from(sigma))?)? / f64::from(sigma))?;
    (x - (noise * f64::from(at.std()))?)? / f64::from(at.alpha())
}

/// One step of the B(h) predictor-corrector from the newest of `history`: the new latents, and
/// the model's prediction at the predictor's latents when the corrector ran.
fn update(model: &mut dyn Denoiser, x: &Tensor, history: &History, step: Step) -> Result<(Tensor, Option<Tensor>)> {
    let Step {
        to: t,
        order,
        corrector,
        variant,
    } = step;
    let (models, earlier) = (&history.models, &history.levels);
    let newest = earlier.len() - 1;
    let (previous, model_previous) = (earlier[newest], &models[newest]);
    let h = t.lambda() - previous.lambda();
    let mut rks = Vec::with_capacity(order);
    let mut differences = Vec::with_capacity(order);
    for back in 1..order {
        let rk = (earlier[newest - back].lambda() - previous.lambda()) / h;
        rks.push(rk);
        differences.push(((&models[newest - back] - model_previous)? / f64::from(rk))?);
    }
    rks.push(1.0);
    let hh = -h;
    let h_phi_1 = hh.exp_m1();
    let b_h = match variant {
        Variant::Bh1 => hh,
        Variant::Bh2 => hh.exp_m1(),
    };
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial = 1.0_f32;
    let mut r = Vec::with_capacity(order);
    let mut b = Vec::with_capacity(order);
    for i in 1..=order {
        r.push(rks.iter().map(|&rk| rk.powi(i as i32 - 1)).collect::<Vec<f32>>());
        b.push(h_phi_k * factorial / b_h);
        factorial *= (i + 1) as f32;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    let alpha_t = t.alpha();
    let base = ((x * f64::from(t.std() / previous.std()))? - (model_previous * f64::from(alpha_t * h_phi_1))?)?;
    let combine = |weights: &[f32]| -> Result<Option<Tensor>> {
        let mut sum: Option<Tensor> = None;
        for (weight, difference) in weights.iter().zip(&differences) {
            let term = (difference * f64::from(*weight))?;
            sum = Some(match sum {
                Some(total) => (total + term)?,
                None => term,
            });
        }
        Ok(sum)
    };
    let scale = f64::from(alpha_t * b_h);
    let predicted = if differences.is_empty() {
        base.clone()
    } else {
        let rhos = if order == 2 {
            vec![0.5]
        } else {
            solve(&leading(&r, order - 1), &b[..order - 1])
        };
        match combine(&rhos)? {
            Some(residual) => (&base - (residual * scale)?)?,
            None => base.clone(),
        }
    };
    if !corrector {
        return Ok((predicted, None));
    }
    let evaluated = data_prediction(model, &predicted, t)?;
    let rhos = if order == 1 { vec![0.5] } else { solve(&r, &b) };
    let current = ((&evaluated - model_previous)? * f64::from(rhos[order - 1]))?;
    let correction = match combine(&rhos[..order - 1])? {
        Some(residual) => (residual + current)?,
        None => current,
    };
    Ok(((&base - (correction * scale)?)?, Some(evaluated)))
}

/// The leading `n` x `n` block of `matrix`.
fn leading(matrix: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    matrix[..n].iter().map(|row| row[..n].to_vec()).collect()
}

/// `matrix^-1 rhs` by Gaussian elimination with partial pivoting, in float32.
fn solve(matrix: &[Vec<f32>], rhs: &[f32]) -> Vec<f32> {
    let n = rhs.len();
    let mut a: Vec<Vec<f32>> = matrix
        .iter()
        .zip(rhs)
        .map(|(row, &v)| [row.clone(), vec![v]].concat())
        .collect();
    for column in 0..n {
        let pivot = (column..n)
            .max_by(|&i, &j| a[i][column].abs().total_cmp(&a[j][column].abs()))
            .unwrap_or(column);
        a.swap(column, pivot);
        let pivot_row = a[column].clone();
        for row in a.iter_mut().skip(column + 1) {
            let factor = row[column] / pivot_row[column];
            for (value, above) in row.iter_mut().zip(&pivot_row).skip(column) {
                *value -= factor * above;
            }
        }
    }
    let mut solution = vec![0.0_f32; n];
    for row in (0..n).rev() {
        let known: f32 = (row + 1..n).map(|k| a[row][k] * solution[k]).sum();
        solution[row] = (a[row][n] - known) / a[row][row];
    }
    solution
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solving_returns_the_vector_that_gives_the_right_side() {
        let matrix = vec![vec![0.0, 2.0, 1.0], vec![1.0, 1.0, 1.0], vec![4.0, -1.0, 0.5]];
        let x = solve(&matrix, &[5.0, 6.0, 3.5]);
        for (row, expected) in matrix.iter().zip([5.0, 6.0, 3.5]) {
            let got: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum();
            assert!((got - expected).abs() < 1e-5, "{got} against {expected}");
        }
    }
}
