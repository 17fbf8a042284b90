//! L2-regularised logistic regression, fitted by Newton's method.
//!
//! With a few hundred examples of at most 768 features the Hessian is small,
//! so each Newton step is one Cholesky solve and the fit converges in about
//! ten steps to the exact optimum: no learning rate, no epochs, the same
//! weights on every machine up to floating-point summation order.

/// A logistic head: `sigmoid(weights . x + bias)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    /// One weight per feature.
    pub weights: Vec<f32>,
    /// The intercept.
    pub bias: f32,
}

impl Logistic {
    /// The probability of the positive class for one feature vector.
    ///
    /// # Panics
    ///
    /// When `x` has another length than the weights.
    pub fn probability(&self, x: &[f32]) -> f32 {
        assert_eq!(x.len(), self.weights.len(), "feature length");
        let z: f64 = self.weights.iter().zip(x).map(|(&w, &v)| f64::from(w) * f64::from(v)).sum::<f64>()
            + f64::from(self.bias);
        sigmoid(z) as f32
    }

    /// Fits the weights minimising `sum log-loss + l2 / 2 * |weights|^2` (the
    /// bias is not penalised) over rows `x` with labels `y`.
    ///
    /// # Panics
    ///
    /// When `x` is empty, the rows differ in length, or `y` has another length.
    pub fn fit(x: &[Vec<f32>], y: &[bool], l2: f64) -> Logistic {
        assert!(!x.is_empty() && x.len() == y.len(), "one label per row, at least one row");
        let d = x[0].len();
        assert!(x.iter().all(|r| r.len() == d), "rows of one length");
        let p = d + 1; // the bias last
        let rows: Vec<Vec<f64>> =
            x.iter().map(|r| r.iter().map(|&v| f64::from(v)).chain([1.0]).collect()).collect();
        let targets: Vec<f64> = y.iter().map(|&b| f64::from(u8::from(b))).collect();
        let objective = |theta: &[f64]| {
            let data: f64 = rows
                .iter()
                .zip(&targets)
                .map(|(r, &t)| {
                    let z = dot(r, theta);
                    softplus(z) - t * z
                })
                .sum();
            data + 0.5 * l2 * theta[..d].iter().map(|w| w * w).sum::<f64>()
        };

        let mut theta = vec![0.0; p];
        let mut current = objective(&theta);
        for _ in 0..100 {
            let mut grad = vec![0.0; p];
            let mut hess = vec![0.0; p * p];
            for (r, &t) in rows.iter().zip(&targets) {
                let q = sigmoid(dot(r, &theta));
                let (g, w) = (q - t, q * (1.0 - q));
                for i in 0..p {
                    grad[i] += g * r[i];
                    let wi = w * r[i];
                    if wi != 0.0 {
                        let row = &mut hess[i * p..i * p + i + 1];
                        for (h, &rj) in row.iter_mut().zip(&r[..=i]) {
                            *h += wi * rj;
                        }
                    }
                }
            }
            for i in 0..d {
                grad[i] += l2 * theta[i];
                hess[i * p + i] += l2;
            }
            hess[d * p + d] += 1e-9;
            let Some(step) = cholesky_solve(&mut hess, &grad, p) else { break };
            // Newton's step, halved until the objective goes down.
            let mut scale = 1.0;
            let mut accepted = false;
            while scale > 1e-6 {
                let candidate: Vec<f64> = theta.iter().zip(&step).map(|(t, s)| t - scale * s).collect();
                let value = objective(&candidate);
                if value <= current {
                    theta = candidate;
                    accepted = current - value > 1e-12 * current.abs().max(1.0);
                    current = value;
                    break;
                }
                scale *= 0.5;
            }
            if !accepted {
                break;
            }
        }
        Logistic { weights: theta[..d].iter().map(|&w| w as f32).collect(), bias: theta[d] as f32 }
    }
}

/// The mean log-loss of probabilities `q` against labels `y` (clamped away
/// from 0 and 1).
pub fn log_loss(q: &[f32], y: &[bool]) -> f64 {
    let total: f64 = q
        .iter()
        .zip(y)
        .map(|(&q, &y)| {
            let q = f64::from(q).clamp(1e-12, 1.0 - 1e-12);
            if y {
                -q.ln()
            } else {
                -(1.0 - q).ln()
            }
        })
        .sum();
    total / q.len().max(1) as f64
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Solves `a x = b` for the symmetric positive definite `a` (`n x n`, row
/// major, lower triangle read), factoring `a` in place; `None` when it is not
/// positive definite.
fn cholesky_solve(a: &mut [f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut diag = a[j * n + j];
        for k in 0..j {
            diag -= a[j * n + k] * a[j * n + k];
        }
        if diag <= 0.0 || !diag.is_finite() {
            return None;
        }
        let diag = diag.sqrt();
        a[j * n + j] = diag;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / diag;
        }
    }
    let mut y = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            y[i] -= a[i * n + k] * y[k];
        }
        y[i] /= a[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            y[i] -= a[k * n + i] * y[k];
        }
        y[i] /= a[i * n + i];
    }
    Some(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system() {
        let mut a = vec![4.0, 0.0, 0.0, 2.0, 5.0, 0.0, -2.0, 1.0, 6.0];
        // Lower triangle of [[4, 2, -2], [2, 5, 1], [-2, 1, 6]]; x = [1, -1, 2].
        let b = [4.0 * 1.0 - 2.0 * 1.0 - 2.0 * 2.0, 2.0 - 5.0 + 2.0, -2.0 - 1.0 + 12.0];
        let x = cholesky_solve(&mut a, &b, 3).unwrap();
        for (g, w) in x.iter().zip([1.0, -1.0, 2.0]) {
            assert!((g - w).abs() < 1e-12, "{x:?}");
        }
        assert!(cholesky_solve(&mut [0.0], &[1.0], 1).is_none());
    }

    #[test]
    fn fit_reaches_the_stationary_point() {
        // Overlapping classes on a line and a noise feature.
        let x: Vec<Vec<f32>> =
            (0..40).map(|i| vec![(i as f32 - 20.0) / 10.0, ((i * 7) % 5) as f32 / 5.0]).collect();
        let y: Vec<bool> = (0..40).map(|i| (i >= 20) ^ (i % 9 == 0)).collect();
        let l2 = 0.5;
        let model = Logistic::fit(&x, &y, l2);
        // The gradient of the objective vanishes at the fit.
        let mut grad = [0f64; 3];
        for (r, &t) in x.iter().zip(&y) {
            let g = f64::from(model.probability(r)) - f64::from(u8::from(t));
            grad[0] += g * f64::from(r[0]);
            grad[1] += g * f64::from(r[1]);
            grad[2] += g;
        }
        grad[0] += l2 * f64::from(model.weights[0]);
        grad[1] += l2 * f64::from(model.weights[1]);
        assert!(grad.iter().all(|g| g.abs() < 1e-4), "{grad:?}");
        assert!(model.weights[0] > 1.0, "{model:?}");
        let q: Vec<f32> = x.iter().map(|r| model.probability(r)).collect();
        assert!(log_loss(&q, &y) < std::f64::consts::LN_2);
    }

    #[test]
    fn separable_data_stays_finite_under_the_penalty() {
        let x: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32]).collect();
        let y: Vec<bool> = (0..10).map(|i| i >= 5).collect();
        let model = Logistic::fit(&x, &y, 1e-3);
        assert!(model.weights[0].is_finite() && model.weights[0] > 0.0);
        assert!(model.probability(&[9.0]) > 0.99 && model.probability(&[0.0]) < 0.01);
    }
}
