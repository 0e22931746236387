//! Quantiles of the beta distribution, for ComfyUI's `beta` scheduler (which takes them from
//! SciPy's `beta.ppf`): the regularized incomplete beta function by its continued fraction
//! (Lentz's method), inverted by bisection to the last bit.

/// The `p` quantile of Beta(`a`, `b`): the `x` in [0, 1] where the distribution's CDF is `p`.
pub(super) fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (mut low, mut high) = (0.0f64, 1.0f64);
    // The CDF is increasing: halve the bracket until it no longer shrinks.
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if mid <= low || mid >= high {
            break;
        }
        if regularized_incomplete_beta(mid, a, b) < p {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// I_x(a, b), the CDF of Beta(a, b) at `x`.
fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast below the mean; above it, use the symmetry
    // I_x(a, b) = 1 - I_{1-x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0) {
        front * continued_fraction(x, a, b) / a
    } else {
        1.0 - front * continued_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of the incomplete beta function, evaluated by Lentz's method.
fn continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut h = d;
    for m in 1..1000 {
        let m = f64::from(m);
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + numerator / c;
            if c.abs() < TINY {
                c = TINY;
            }
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0, by Lanczos' approximation (g = 7, nine terms; about 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = COEFFICIENTS[1..]
        .iter()
        .enumerate()
        .fold(COEFFICIENTS[0], |sum, (i, c)| sum + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quantile_inverts_the_distribution_and_matches_known_values() {
        // Beta(1, 1) is uniform; Beta(2, 1) has CDF x^2; Beta(0.5, 0.5) is the arcsine law,
        // CDF (2 / π) asin(sqrt x).
        for p in [0.01, 0.25, 0.5, 0.9] {
            assert!((beta_quantile(p, 1.0, 1.0) - p).abs() < 1e-12, "{p}");
            assert!((beta_quantile(p, 2.0, 1.0) - p.sqrt()).abs() < 1e-12, "{p}");
            let arcsine = (p * std::f64::consts::FRAC_PI_2).sin().powi(2);
            assert!((beta_quantile(p, 0.5, 0.5) - arcsine).abs() < 1e-12, "{p}");
        }
        // Symmetric parameters put the median at one half.
        assert!((beta_quantile(0.5, 0.6, 0.6) - 0.5).abs() < 1e-12);
        assert_eq!((beta_quantile(0.0, 0.6, 0.6), beta_quantile(1.0, 0.6, 0.6)), (0.0, 1.0));
    }
}
