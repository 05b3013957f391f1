//! Summaries of latency samples: count, mean, percentiles, maximum.
//!
//! Percentiles use the nearest-rank definition (the smallest sample with at least p% of
//! samples at or below it), which never invents a value that was not measured.

use std::time::Duration;

use serde::Serialize;

/// A summary of samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// The nearest-rank percentile `p` (0..=100) of sorted samples; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises samples given in milliseconds.
pub fn summarize_ms(samples: &[f64]) -> Summary {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return Summary::default();
    }
    Summary {
        count: sorted.len(),
        mean_ms: sorted.iter().sum::<f64>() / sorted.len() as f64,
        p50_ms: percentile(&sorted, 50.0),
        p90_ms: percentile(&sorted, 90.0),
        p95_ms: percentile(&sorted, 95.0),
        p99_ms: percentile(&sorted, 99.0),
        max_ms: sorted[sorted.len() - 1],
    }
}

/// Summarises durations.
pub fn summarize(samples: &[Duration]) -> Summary {
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    summarize_ms(&ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize_ms(&samples);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert!((s.mean_ms - 50.5).abs() < 1e-9);
    }

    #[test]
    fn small_and_empty_sets() {
        assert_eq!(summarize_ms(&[]).count, 0);
        let one = summarize_ms(&[7.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        let unsorted = summarize_ms(&[3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!(unsorted.count, 3);
        assert_eq!(unsorted.p50_ms, 2.0);
    }
}
