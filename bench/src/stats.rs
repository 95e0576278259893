//! Median, min, max and mean of a sample, and how sure a ratio of
//! medians is.

use serde::{Deserialize, Serialize};

/// Summary of a non-empty sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// `None` for an empty sample. The median of an even count is the mean
    /// of the two middle values. NaNs are not expected and sort last.
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            n,
            median,
            min: v[0],
            max: v[n - 1],
            mean: v.iter().sum::<f64>() / n as f64,
        })
    }
}

/// `a / b`, or `None` when either is missing or `b` is not positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn median_sorted(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A 95% percentile-bootstrap interval for median(a) / median(b): each of
/// `rounds` resamples draws both samples anew, with replacement. A fixed
/// seed keeps a report reproducible from its samples. `None` when either
/// sample is empty.
pub fn ratio_interval(a: &[f64], b: &[f64], rounds: usize) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() || rounds == 0 {
        return None;
    }
    // xorshift64*: plenty for resampling indices, and no dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    };
    let mut ratios = Vec::with_capacity(rounds);
    let (mut ra, mut rb) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    for _ in 0..rounds {
        ra.iter_mut().for_each(|x| *x = a[next(a.len())]);
        rb.iter_mut().for_each(|x| *x = b[next(b.len())]);
        let d = median_sorted(&mut rb);
        if d > 0.0 {
            ratios.push(median_sorted(&mut ra) / d);
        }
    }
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(|x, y| x.total_cmp(y));
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    Some((at(0.025), at(0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_medians() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!(
            (s.n, s.median, s.min, s.max, s.mean),
            (3, 3.0, 1.0, 5.0, 3.0)
        );
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.mean), (2.5, 1.0, 4.0, 2.5));
        let s = Summary::of(&[7.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (7.0, 7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ratio_interval_brackets_the_ratio_and_narrows_with_more_runs() {
        // Two noisy samples whose medians are 20 and 50.
        let noisy = |center: f64, n: usize| (0..n).map(|i| center + ((i * 7919) % 21) as f64 - 10.0).collect::<Vec<_>>();
        let (lo, hi) = ratio_interval(&noisy(20.0, 40), &noisy(50.0, 40), 2000).unwrap();
        assert!(lo < 0.4 && 0.4 < hi, "{lo}..{hi}");
        let (lo2, hi2) = ratio_interval(&noisy(20.0, 400), &noisy(50.0, 400), 2000).unwrap();
        assert!(lo2 < 0.4 && 0.4 < hi2, "{lo2}..{hi2}");
        assert!(hi2 - lo2 < hi - lo, "more runs, a narrower interval: {lo}..{hi} vs {lo2}..{hi2}");
        // Identical constant samples leave no doubt.
        assert_eq!(ratio_interval(&[2.0; 5], &[4.0; 5], 100), Some((0.5, 0.5)));
        assert_eq!(ratio_interval(&[], &[1.0], 100), None);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }
}
