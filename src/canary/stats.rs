//! The statistics of the judge, pure and allocation-light: the Mann–Whitney (Wilcoxon rank-sum)
//! confidence interval for a location shift with its Hodges–Lehmann estimate, descriptive
//! statistics, R-7 percentiles and Kayenta's IQR outlier fences.
//!
//! # The interval
//!
//! For canary values `x` (m of them) and baseline values `y` (n), the shift `canary − baseline`
//! is estimated by the **Hodges–Lehmann estimator**, the median of the `m·n` pairwise
//! differences `x_i − y_j` (Hollander & Wolfe, *Nonparametric Statistical Methods*, §4.2). Its
//! confidence interval at level `1 − α` is the set of shifts `δ` that the two-sided rank-sum test
//! of `x − δ` against `y` does **not** reject at level `α` (§4.3, "inverting the test"): with
//! `D_(1) ≤ … ≤ D_(mn)` the sorted differences, it is `[D_(K+1), D_(mn−K)]` where
//!
//! ```text
//! K = floor(mn/2 − 1/2 − z_(1−α/2) · σ),
//! σ² = mn/12 · ((N + 1) − Σ(t³ − t) / (N(N − 1))),   N = m + n
//! ```
//!
//! i.e. the test's large-sample normal approximation **with the continuity correction and the
//! tie correction** (`t` runs over the sizes of the groups of tied values within `x` and within
//! `y`: at a shift between two differences those are the only ties), exactly the test that
//! `scipy.stats.mannwhitneyu(x - δ, y, method="asymptotic")` and R's `wilcox.test(correct =
//! TRUE)` run. This is the interval Kayenta's `MannWhitney` (a port of R's asymptotic
//! `wilcox.test(conf.int = TRUE)`) approximates by root finding; here it is computed exactly on
//! the order statistics, without Kayenta's random noise for single-valued sides.
//!
//! When `K < 0` the test cannot reject any shift on that side at this confidence (too few
//! points: at 0.98 that is fewer than 5 per side when the sides are the same size), and the
//! interval is unbounded (`None`). Kayenta instead clamps the interval to the range of the
//! differences, which calls two fully separated samples of 4 points "High" at a confidence they
//! cannot reach; we do not.
//!
//! The `k`-th difference is found without building the `m·n` differences: the differences form
//! a matrix whose rows and columns are sorted, and a randomized selection over per-row candidate
//! ranges (each round counts the candidates below a random pivot with one `O(m + n)` staircase
//! walk) needs `O(log(mn))` rounds in expectation. Every comparison uses the computed
//! difference `x_i − y_j` itself, so the result is bit-for-bit the element a full sort of the
//! differences would give.

use serde::Serialize;

/// Count, mean, median, extremes and sample standard deviation of one side (after NaN and
/// outlier removal). Empty sides have `count: 0` and no other field.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Sample standard deviation (n − 1); absent for fewer than two values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stddev: Option<f64>,
}

/// Summary of `sorted` (ascending, finite).
pub fn summary(sorted: &[f64]) -> Summary {
    let n = sorted.len();
    if n == 0 {
        return Summary::default();
    }
    let mean = mean(sorted);
    let stddev = (n > 1).then(|| {
        let ss: f64 = sorted.iter().map(|v| (v - mean) * (v - mean)).sum();
        (ss / (n - 1) as f64).sqrt()
    });
    Summary {
        count: n,
        mean: Some(mean),
        median: Some(percentile(sorted, 50.0)),
        min: Some(sorted[0]),
        max: Some(sorted[n - 1]),
        stddev,
    }
}

/// Arithmetic mean (NaN for an empty slice).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The `p`-th percentile (0..=100) of `sorted` (ascending, non-empty) by linear interpolation
/// between closest ranks: Hyndman & Fan's definition 7, R's default `quantile` type, numpy's
/// default, and the estimator Kayenta's `DescriptiveStatistics.percentile` uses.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    assert!(n > 0, "percentile of no data");
    let h = (n - 1) as f64 * (p / 100.0);
    let lo = h.floor() as usize;
    if lo + 1 >= n {
        return sorted[n - 1];
    }
    let frac = h - lo as f64;
    sorted[lo] + frac * (sorted[lo + 1] - sorted[lo])
}

/// Kayenta's outlier fences (`IQRDetector` with `reduceSensitivity`, as its ACA judge uses it):
/// Tukey's fences `Q1 − f·IQR` and `Q3 + f·IQR`, widened to the 1st and 99th percentiles when
/// those lie further out, so that at most the extreme 1 % of each tail can go. Values strictly
/// outside `(lower, upper)` are outliers.
pub fn iqr_fences(sorted: &[f64], factor: f64) -> (f64, f64) {
    let q1 = percentile(sorted, 25.0);
    let q3 = percentile(sorted, 75.0);
    let iqr = q3 - q1;
    let lower = percentile(sorted, 1.0).min(q1 - factor * iqr);
    let upper = percentile(sorted, 99.0).max(q3 + factor * iqr);
    (lower, upper)
}

/// `sorted` without its outliers (see [`iqr_fences`]), and how many were removed.
pub fn remove_outliers(sorted: &[f64], factor: f64) -> (Vec<f64>, usize) {
    if sorted.is_empty() {
        return (Vec::new(), 0);
    }
    let (lo, hi) = iqr_fences(sorted, factor);
    let kept: Vec<f64> = sorted
        .iter()
        .copied()
        .filter(|v| *v >= lo && *v <= hi)
        .collect();
    let removed = sorted.len() - kept.len();
    (kept, removed)
}

/// The shift `canary − baseline`: Hodges–Lehmann estimate and the rank-sum confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    pub estimate: f64,
    /// Lower end; `None` when the test rejects no shift below the estimate (unbounded).
    pub lower: Option<f64>,
    /// Upper end; `None` when unbounded.
    pub upper: Option<f64>,
}

/// Σ(t³ − t) over the groups of equal values of `sorted`.
fn tie_term(sorted: &[f64]) -> f64 {
    let mut sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == sorted[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        sum += t * t * t - t;
        i = j;
    }
    sum
}

/// The standard normal quantile `z` with `P(Z ≤ z) = p`.
pub fn normal_quantile(p: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    Normal::standard().inverse_cdf(p)
}

/// `K` of the module docs: how many of the smallest (and largest) differences lie outside the
/// interval; negative when the interval is unbounded. `x`, `y` sorted, both non-empty.
pub fn interval_rank(x: &[f64], y: &[f64], confidence: f64) -> i64 {
    let (m, n) = (x.len() as f64, y.len() as f64);
    let big_n = m + n;
    let ties = tie_term(x) + tie_term(y);
    let var = m * n / 12.0
        * ((big_n + 1.0)
            - if big_n > 1.0 {
                ties / (big_n * (big_n - 1.0))
            } else {
                0.0
            });
    let z = normal_quantile(1.0 - (1.0 - confidence) / 2.0);
    (m * n / 2.0 - 0.5 - z * var.max(0.0).sqrt()).floor() as i64
}

/// Hodges–Lehmann estimate and confidence interval of `x − y` (both sorted ascending, finite,
/// non-empty) at `confidence` (e.g. 0.98). See the module docs for the definition.
pub fn shift(x: &[f64], y: &[f64], confidence: f64) -> Shift {
    assert!(!x.is_empty() && !y.is_empty(), "shift of an empty side");
    let total = x.len() * y.len();
    let estimate = if total % 2 == 1 {
        kth_difference(x, y, total / 2)
    } else {
        let a = kth_difference(x, y, total / 2 - 1);
        let b = kth_difference(x, y, total / 2);
        (a + b) / 2.0
    };
    let k = interval_rank(x, y, confidence);
    let (lower, upper) = if k < 0 {
        (None, None)
    } else {
        let k = k as usize;
        (
            Some(kth_difference(x, y, k)),
            Some(kth_difference(x, y, total - 1 - k)),
        )
    };
    Shift {
        estimate,
        lower,
        upper,
    }
}

/// The `k`-th smallest (0-based) of the `m·n` differences `x[i] − y[j]`, `x` and `y` sorted
/// ascending. Row `i` of the implicit matrix, read at column `c`, is `x[i] − y[n − 1 − c]`:
/// ascending along each row and down each column.
pub fn kth_difference(x: &[f64], y: &[f64], k: usize) -> f64 {
    let (m, n) = (x.len(), y.len());
    assert!(k < m * n, "rank {k} of {} differences", m * n);
    let d = |i: usize, c: usize| x[i] - y[n - 1 - c];
    // Candidate columns of each row: [lo[i], hi[i]).
    let mut lo = vec![0usize; m];
    let mut hi = vec![n; m];
    let mut k = k;
    let mut rng = SplitMix(0x005e_ed0f_ca7a_0057_u64 ^ (k as u64).wrapping_mul(0x9e37_79b9));
    let mut below = vec![0usize; m];
    let mut upto = vec![0usize; m];
    loop {
        let remaining: usize = (0..m).map(|i| hi[i] - lo[i]).sum();
        if remaining <= 4096.max(m + n) {
            let mut rest: Vec<f64> = Vec::with_capacity(remaining);
            for i in 0..m {
                rest.extend((lo[i]..hi[i]).map(|c| d(i, c)));
            }
            let (_, v, _) = rest.select_nth_unstable_by(k, f64::total_cmp);
            return *v;
        }
        // A uniformly random remaining candidate as the pivot.
        let mut r = (rng.next() % remaining as u64) as usize;
        let mut pivot = f64::NAN;
        for i in 0..m {
            let w = hi[i] - lo[i];
            if r < w {
                pivot = d(i, lo[i] + r);
                break;
            }
            r -= w;
        }
        // Per row, how many columns hold a difference < pivot and <= pivot. Both counts only
        // shrink as the row grows (columns are ascending down), so one staircase walk each.
        let (mut c_lt, mut c_le) = (n, n);
        for i in 0..m {
            while c_lt > 0 && d(i, c_lt - 1) >= pivot {
                c_lt -= 1;
            }
            while c_le > 0 && d(i, c_le - 1) > pivot {
                c_le -= 1;
            }
            below[i] = c_lt.clamp(lo[i], hi[i]);
            upto[i] = c_le.clamp(lo[i], hi[i]);
        }
        let n_lt: usize = (0..m).map(|i| below[i] - lo[i]).sum();
        let n_le: usize = (0..m).map(|i| upto[i] - lo[i]).sum();
        if k < n_lt {
            hi.copy_from_slice(&below);
        } else if k < n_le {
            return pivot;
        } else {
            k -= n_le;
            lo.copy_from_slice(&upto);
        }
    }
}

/// SplitMix64: a tiny deterministic generator for pivots (the result does not depend on it).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Round half away from zero to `places` decimals on the shortest decimal representation of
/// `v` (as Apache Commons Math's `Precision.round`, which Kayenta's scorer uses): 66.665 → 66.67.
pub fn round_half_up(v: f64, places: u32) -> f64 {
    if !v.is_finite() {
        return v;
    }
    // `{:e}` prints the shortest representation that reads back as `v`: digits and exponent.
    let s = format!("{:e}", v.abs());
    let (mantissa, exp) = s.split_once('e').expect("exponent");
    let exp: i32 = exp.parse().expect("exponent");
    let digits: Vec<u8> = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    // v = 0.d0 d1 d2 ... × 10^(exp + 1); keep the digits up to 10^-places.
    let keep = exp + 1 + places as i32;
    if keep < 0 {
        return 0.0;
    }
    let keep = keep as usize;
    let mut int: u128 = 0;
    for i in 0..keep {
        int = int * 10 + u128::from(*digits.get(i).unwrap_or(&0));
    }
    if digits.get(keep).is_some_and(|d| *d >= 5) {
        int += 1;
    }
    let r = int as f64 / 10f64.powi(places as i32);
    if v < 0.0 {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(x: &[f64], y: &[f64]) -> Vec<f64> {
        let mut d: Vec<f64> = x
            .iter()
            .flat_map(|a| y.iter().map(move |b| a - b))
            .collect();
        d.sort_by(f64::total_cmp);
        d
    }

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(f64::total_cmp);
        v
    }

    #[test]
    fn kth_difference_is_the_kth_of_the_sorted_differences() {
        let mut rng = SplitMix(7);
        for case in 0..60 {
            let m = 1 + (rng.next() % 90) as usize;
            let n = 1 + (rng.next() % 90) as usize;
            // Every third case on a coarse grid: many tied values and tied differences.
            let coarse = case % 3 == 0;
            let mut gen = |len: usize, shift: f64| {
                sorted(
                    (0..len)
                        .map(|_| {
                            let u = (rng.next() % 10_000) as f64 / 100.0;
                            if coarse {
                                (u / 10.0).floor() + shift
                            } else {
                                u + shift
                            }
                        })
                        .collect(),
                )
            };
            let x = gen(m, 3.0);
            let y = gen(n, 0.0);
            let all = brute(&x, &y);
            for k in [0, all.len() / 3, all.len() / 2, all.len() - 1] {
                assert_eq!(kth_difference(&x, &y, k), all[k], "m={m} n={n} k={k}");
            }
        }
        // Large enough to take the selection path (more than 4096 candidates).
        let x: Vec<f64> = (0..300).map(|i| ((i * 37) % 101) as f64).collect();
        let y: Vec<f64> = (0..200).map(|i| ((i * 53) % 89) as f64 * 1.5).collect();
        let (x, y) = (sorted(x), sorted(y));
        let all = brute(&x, &y);
        for k in [
            0,
            1,
            777,
            30_000,
            all.len() / 2,
            all.len() - 2,
            all.len() - 1,
        ] {
            assert_eq!(kth_difference(&x, &y, k), all[k], "k={k}");
        }
    }

    #[test]
    fn hodges_lehmann_is_the_median_difference() {
        let x = [1.0, 2.0, 4.0];
        let y = [0.0, 1.0];
        // differences: 1 2 4 0 1 3 -> sorted 0 1 1 2 3 4 -> median (1 + 2) / 2
        assert_eq!(shift(&x, &y, 0.98).estimate, 1.5);
        assert_eq!(shift(&[5.0], &[2.0], 0.98).estimate, 3.0);
    }

    #[test]
    fn small_samples_give_an_unbounded_interval_at_98_percent() {
        // Four fully separated points a side: the exact two-sided p is 2/70 = 0.029 > 0.02.
        let x = [10.0, 11.0, 12.0, 13.0];
        let y = [1.0, 2.0, 3.0, 4.0];
        let s = shift(&x, &y, 0.98);
        assert_eq!((s.lower, s.upper), (None, None));
        // Five a side can be told apart.
        let s = shift(
            &[10.0, 11.0, 12.0, 13.0, 14.0],
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            0.98,
        );
        assert!(s.lower.unwrap() > 0.0, "{s:?}");
    }

    #[test]
    fn interval_rank_matches_the_formula() {
        // m = n = 10, no ties: sigma = sqrt(100 * 21 / 12) = 13.2288; z(0.99) = 2.3263.
        let x: Vec<f64> = (0..10).map(f64::from).collect();
        let y: Vec<f64> = (0..10).map(|i| f64::from(i) + 0.5).collect();
        assert_eq!(
            interval_rank(&x, &y, 0.98),
            (50.0f64 - 0.5 - 2.3263 * 13.2288).floor() as i64
        );
        // Ties shrink sigma, so K grows.
        let tied = vec![1.0; 10];
        assert!(interval_rank(&tied, &y, 0.98) >= interval_rank(&x, &y, 0.98));
    }

    #[test]
    fn percentiles_follow_r7() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 25.0), 1.75);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&[7.0], 1.0), 7.0);
    }

    #[test]
    fn outlier_fences_remove_only_far_values() {
        let mut v: Vec<f64> = (0..200).map(|i| f64::from(i % 10)).collect();
        v.push(1000.0);
        let v = sorted(v);
        let (kept, removed) = remove_outliers(&v, 3.0);
        assert_eq!(removed, 1);
        assert_eq!(kept.len(), 200);
        // Nothing to remove in a tight sample.
        assert_eq!(remove_outliers(&sorted(vec![1.0, 2.0, 3.0]), 3.0).1, 0);
    }

    #[test]
    fn rounding_is_half_up_on_the_decimal_representation() {
        assert_eq!(round_half_up(66.665, 2), 66.67);
        assert_eq!(round_half_up(66.664999, 2), 66.66);
        assert_eq!(round_half_up(100.0, 2), 100.0);
        assert_eq!(round_half_up(0.0, 2), 0.0);
        assert_eq!(round_half_up(33.333333333333336, 2), 33.33);
        assert_eq!(round_half_up(0.005, 2), 0.01);
        assert_eq!(round_half_up(0.004, 2), 0.0);
        assert_eq!(round_half_up(-1.005, 2), -1.01);
        assert_eq!(round_half_up(1e-9, 2), 0.0);
    }

    #[test]
    fn summary_of_a_side() {
        let s = summary(&[1.0, 2.0, 3.0, 10.0]);
        assert_eq!(s.count, 4);
        assert_eq!(s.mean, Some(4.0));
        assert_eq!(s.median, Some(2.5));
        assert_eq!((s.min, s.max), (Some(1.0), Some(10.0)));
        assert_eq!(summary(&[]), Summary::default());
        assert_eq!(summary(&[3.0]).stddev, None);
    }
}
