//! Pure figures: summaries of repeated measurements, quantiles, and quantiles and single
//! samples read from Prometheus text.

use serde::Serialize;

/// Median and spread of repeated measurements of one thing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    /// `None` for no samples: a figure without measurements is not a figure.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            median: quantile(&sorted, 0.5)?,
            min: *sorted.first()?,
            max: *sorted.last()?,
            samples: samples.to_vec(),
        })
    }

    /// The same measurements in another unit (e.g. seconds → MB/s through `bytes / s`).
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Self {
        let samples: Vec<f64> = self.samples.iter().map(|&x| f(x)).collect();
        Self::of(&samples).expect("a summary has samples")
    }
}

/// Linear-interpolated quantile `q` (0..=1) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// Cumulative buckets `(upper bound, count)` of histogram `name` in Prometheus text, `+Inf` last.
pub fn histogram_buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The value of the unlabelled sample `name` in Prometheus text (a histogram's `…_sum` or
/// `…_count`, say).
pub fn sample_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Quantile `q` of the observations between two scrapes of the same histogram (`before` may be
/// empty), interpolated inside the bucket as Prometheus' `histogram_quantile` does. `None` when
/// nothing was observed in between.
pub fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let old = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - old)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, n) in &delta {
        if n >= rank {
            if le.is_infinite() {
                return Some(lower.0); // beyond the last finite bound: its value is all we know
            }
            let inside = n - lower.1;
            let fraction = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * fraction);
        }
        lower = (le, n);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_take_median_and_range() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(s.samples, [3.0, 1.0, 2.0, 10.0]);
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(s.map(|x| 2.0 * x).median, 5.0);
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 0.99), Some(4.96));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    const SCRAPE: &str = "# HELP x_seconds t\n\
        x_seconds_bucket{le=\"0.001\"} 2\n\
        x_seconds_bucket{le=\"0.002\"} 6\n\
        x_seconds_bucket{le=\"0.004\"} 10\n\
        x_seconds_bucket{le=\"+Inf\"} 12\n\
        x_seconds_count 12\n\
        other_bucket{le=\"1\"} 5\n";

    #[test]
    fn histogram_buckets_are_read_from_prometheus_text() {
        assert_eq!(
            histogram_buckets(SCRAPE, "x_seconds"),
            [
                (0.001, 2.0),
                (0.002, 6.0),
                (0.004, 10.0),
                (f64::INFINITY, 12.0)
            ]
        );
    }

    #[test]
    fn unlabelled_samples_are_read_by_their_whole_name() {
        let text = "x_seconds_sum 1.5\nx_seconds_count 12\nx_seconds_count_other 3\n# EOF\n";
        assert_eq!(sample_value(text, "x_seconds_sum"), Some(1.5));
        assert_eq!(sample_value(text, "x_seconds_count"), Some(12.0));
        assert_eq!(sample_value(SCRAPE, "x_seconds_count"), Some(12.0));
        assert_eq!(sample_value(SCRAPE, "x_seconds"), None);
        assert_eq!(sample_value(SCRAPE, "x_seconds_sum"), None);
    }

    fn close(found: Option<f64>, expected: f64) -> bool {
        found.is_some_and(|f| (f - expected).abs() < 1e-12)
    }

    #[test]
    fn histogram_quantiles_cover_only_what_was_observed_in_between() {
        let after = histogram_buckets(SCRAPE, "x_seconds");
        // All 12 observations: the 6th is the top of the (1 ms, 2 ms] bucket.
        assert!(close(histogram_quantile(&[], &after, 0.5), 0.002));
        // Rank 3 of 12 lies a quarter into (1 ms, 2 ms].
        assert!(close(histogram_quantile(&[], &after, 0.25), 0.00125));
        // Beyond the last finite bound only that bound is known.
        assert!(close(histogram_quantile(&[], &after, 0.99), 0.004));
        // Minus an earlier scrape that held the first 6: 4 of the other 6 lie in (2 ms, 4 ms],
        // so the median is three quarters into it.
        let before = [
            (0.001, 2.0),
            (0.002, 6.0),
            (0.004, 6.0),
            (f64::INFINITY, 6.0),
        ];
        assert!(close(histogram_quantile(&before, &after, 0.5), 0.0035));
        assert_eq!(histogram_quantile(&after, &after, 0.5), None);
    }
}
