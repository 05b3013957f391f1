//! Per-node speed learnt from finished attempts, for the placement policy's estimates.
//!
//! Placement estimates how long a job takes on a node as its cost (sampler steps × pixels)
//! divided by the node's speed in cost units per second. GPUs differ several-fold and the
//! configuration does not say how fast each one is, so the coordinator learns it: every attempt
//! that succeeds gives one sample, `cost / execution seconds`, and the node's speed is an
//! exponentially weighted moving average of the samples (recent ones count more, so a node that
//! slows down, e.g. thermal throttling or a second tenant, is noticed within a few jobs).
//!
//! Samples are cleaned before use: the model-load time is subtracted when known (a cold start
//! says nothing about sampling speed), and a sample whose cost or time is zero, negative or not
//! finite is ignored. One odd sample (a long pause, a swap to system RAM) cannot move the
//! estimate by more than `max_step` times in either direction. The module is pure: the caller
//! keeps the current value (`NodeStatus::speed`) and passes it back in.

/// One finished attempt as the estimator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeedSample {
    /// Estimated work of the job in cost units (the scheduler's `JobView::cost`).
    pub cost: u64,
    /// Seconds from the node starting the prompt to its end.
    pub execution_secs: f64,
    /// Seconds of that spent loading a checkpoint, when known; subtracted from the time.
    pub model_load_secs: Option<f64>,
}

/// Settings of the moving average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeedEstimator {
    /// Weight of a new sample, in (0, 1]: 0.3 means the last ~3 jobs dominate.
    pub alpha: f64,
    /// Samples shorter than this many seconds are ignored: timer and event noise dominate.
    pub min_secs: f64,
    /// Most a single sample may multiply or divide the estimate by (≥ 1).
    pub max_step: f64,
}

impl Default for SpeedEstimator {
    fn default() -> Self {
        Self {
            alpha: 0.3,
            min_secs: 0.005,
            max_step: 4.0,
        }
    }
}

impl SpeedEstimator {
    /// Returns the speed (cost units per second) one sample shows, or `None` when the sample
    /// says nothing usable.
    pub fn sample_speed(&self, sample: &SpeedSample) -> Option<f64> {
        let load = sample
            .model_load_secs
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(0.0);
        let secs = sample.execution_secs - load;
        if sample.cost == 0 || !secs.is_finite() || secs < self.min_secs {
            return None;
        }
        // Precision loss above 2^53 cost units is irrelevant for an estimate.
        #[allow(clippy::cast_precision_loss)]
        let speed = sample.cost as f64 / secs;
        (speed.is_finite() && speed > 0.0).then_some(speed)
    }

    /// Returns the new estimate after `sample`, given the current one (`None` before the first
    /// usable sample). An unusable sample leaves the estimate unchanged.
    pub fn update(&self, current: Option<f64>, sample: &SpeedSample) -> Option<f64> {
        let current = current.filter(|s| s.is_finite() && *s > 0.0);
        let Some(observed) = self.sample_speed(sample) else {
            return current;
        };
        let Some(previous) = current else {
            return Some(observed);
        };
        let step = if self.max_step.is_finite() && self.max_step >= 1.0 {
            self.max_step
        } else {
            1.0
        };
        let observed = observed.clamp(previous / step, previous * step);
        let alpha = if self.alpha.is_finite() {
            self.alpha.clamp(f64::EPSILON, 1.0)
        } else {
            1.0
        };
        Some(previous + alpha * (observed - previous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cost: u64, secs: f64) -> SpeedSample {
        SpeedSample {
            cost,
            execution_secs: secs,
            model_load_secs: None,
        }
    }

    #[test]
    fn first_sample_sets_the_speed_then_the_average_moves_towards_new_samples() {
        let est = SpeedEstimator::default();
        let first = est.update(None, &sample(1_000, 2.0));
        assert_eq!(first, Some(500.0));
        let second = est.update(first, &sample(1_000, 1.0)).expect("usable");
        // 500 + 0.3 × (1000 − 500)
        assert!((second - 650.0).abs() < 1e-9, "{second}");
    }

    #[test]
    fn converges_to_a_steady_node_speed() {
        let est = SpeedEstimator::default();
        let mut speed = est.update(None, &sample(1_000, 10.0));
        for _ in 0..40 {
            speed = est.update(speed, &sample(4_000, 1.0));
        }
        let speed = speed.expect("usable");
        assert!((speed - 4_000.0).abs() < 1.0, "{speed}");
    }

    #[test]
    fn model_load_time_is_excluded() {
        let est = SpeedEstimator::default();
        let cold = SpeedSample {
            cost: 1_000,
            execution_secs: 7.0,
            model_load_secs: Some(6.0),
        };
        assert_eq!(est.sample_speed(&cold), Some(1_000.0));
    }

    #[test]
    fn unusable_samples_leave_the_estimate_alone() {
        let est = SpeedEstimator::default();
        for bad in [
            sample(0, 1.0),
            sample(1_000, 0.0),
            sample(1_000, -1.0),
            sample(1_000, f64::NAN),
            sample(1_000, f64::INFINITY),
            SpeedSample {
                cost: 1_000,
                execution_secs: 2.0,
                model_load_secs: Some(2.0),
            },
        ] {
            assert_eq!(est.update(Some(42.0), &bad), Some(42.0), "{bad:?}");
            assert_eq!(est.update(None, &bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_outlier_moves_the_estimate_by_at_most_max_step() {
        let est = SpeedEstimator {
            alpha: 1.0,
            ..SpeedEstimator::default()
        };
        // A sample 1000× slower is clamped to 4× slower.
        assert_eq!(est.update(Some(1_000.0), &sample(1, 1.0)), Some(250.0));
        assert_eq!(
            est.update(Some(1_000.0), &sample(1_000_000, 1.0)),
            Some(4_000.0)
        );
    }

    #[test]
    fn a_corrupt_current_value_is_replaced_by_the_sample() {
        let est = SpeedEstimator::default();
        assert_eq!(est.update(Some(f64::NAN), &sample(100, 1.0)), Some(100.0));
    }
}
