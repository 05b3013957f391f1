//! Model-load time per checkpoint, learnt from the gap between a prompt's start and its first
//! sampler step.
//!
//! Before its sampler runs, a prompt loads what it needs and encodes its text. When the
//! checkpoint was already in VRAM that gap is the encoding alone; when it had to be loaded the
//! gap holds the load too. Placement charges a job the load time of its own checkpoint (an SD 1.5
//! file loads in a fraction of a Flux one's time), so the coordinator keeps, per checkpoint, a
//! moving average of both gaps and takes their difference.
//!
//! Cold and warm are told apart by the coordinator's guess of what each node holds (its
//! [`scheduler::ResidentSet`]). A guess can be wrong either way (another client's prompt loaded
//! the checkpoint, or ComfyUI freed memory), and a wrong sample moves the average by at most
//! [`ALPHA`] of its error; a few correct ones undo it.
//!
//! NOTE: the figure is fleet-wide. A node on a slower disk loads more slowly than this says;
//! learning per node and checkpoint would need many more cold starts before it says anything.
//! The module is pure: the job manager owns the table and feeds it finished attempts.

use std::collections::HashMap;

/// Weight of a new sample in the moving averages: the last few cold starts dominate.
pub const ALPHA: f64 = 0.3;

/// Gaps longer than this are not a model load but a stall (a node paused, swapping); ignored.
const MAX_GAP_SECS: f64 = 600.0;

/// The learnt gaps of one checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Gaps {
    cold: Option<f64>,
    warm: Option<f64>,
}

/// Learnt model-load times, by checkpoint file name.
#[derive(Debug, Clone, Default)]
pub struct LoadTimes {
    by_checkpoint: HashMap<String, Gaps>,
}

impl LoadTimes {
    /// Creates an empty table: nothing learnt, placement uses its configured load time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one finished attempt of a job that uses `checkpoint`: `gap_secs` from the
    /// node starting the prompt to its first sampler step, `cold` when the checkpoint was not
    /// believed resident at dispatch. A gap that is negative, not finite or implausibly long
    /// is ignored.
    pub fn record(&mut self, checkpoint: &str, cold: bool, gap_secs: f64) {
        if !(gap_secs.is_finite() && (0.0..=MAX_GAP_SECS).contains(&gap_secs)) {
            return;
        }
        let gaps = match self.by_checkpoint.get_mut(checkpoint) {
            Some(gaps) => gaps,
            None => self.by_checkpoint.entry(checkpoint.to_owned()).or_default(),
        };
        let slot = if cold { &mut gaps.cold } else { &mut gaps.warm };
        *slot = Some(match *slot {
            Some(average) => average + ALPHA * (gap_secs - average),
            None => gap_secs,
        });
    }

    /// Seconds a load of `checkpoint` adds, once a cold start of it has been seen: the cold
    /// gap less the warm one (0 while no warm start was seen), never below 0.
    pub fn load_secs(&self, checkpoint: &str) -> Option<f64> {
        let gaps = self.by_checkpoint.get(checkpoint)?;
        let cold = gaps.cold?;
        Some((cold - gaps.warm.unwrap_or(0.0)).max(0.0))
    }

    /// How many checkpoints have a learnt figure.
    pub fn len(&self) -> usize {
        self.by_checkpoint
            .values()
            .filter(|gaps| gaps.cold.is_some())
            .count()
    }

    /// Whether no checkpoint has a learnt figure.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn nothing_is_known_before_a_cold_start() {
        let mut times = LoadTimes::new();
        assert_eq!(times.load_secs("flux"), None);
        times.record("flux", false, 0.2);
        assert_eq!(
            times.load_secs("flux"),
            None,
            "warm starts alone say nothing"
        );
        assert!(times.is_empty());
    }

    #[test]
    fn the_load_is_the_cold_gap_less_the_warm_one() {
        let mut times = LoadTimes::new();
        times.record("flux", true, 9.0);
        assert_eq!(times.load_secs("flux"), Some(9.0));
        times.record("flux", false, 1.0);
        assert_eq!(times.load_secs("flux"), Some(8.0));
        times.record("sd15", true, 1.5);
        times.record("sd15", false, 1.0);
        assert_eq!(times.load_secs("sd15"), Some(0.5));
        assert_eq!(times.len(), 2);
    }

    #[test]
    fn samples_are_averaged_with_recent_ones_counting_more() {
        let mut times = LoadTimes::new();
        times.record("xl", true, 10.0);
        times.record("xl", true, 20.0);
        assert!(close(times.load_secs("xl").unwrap(), 10.0 + ALPHA * 10.0));
    }

    #[test]
    fn a_cold_start_that_was_really_warm_never_gives_a_negative_load() {
        let mut times = LoadTimes::new();
        times.record("xl", false, 2.0);
        times.record("xl", true, 0.5);
        assert_eq!(times.load_secs("xl"), Some(0.0));
    }

    #[test]
    fn unusable_gaps_are_ignored() {
        let mut times = LoadTimes::new();
        for gap in [f64::NAN, f64::INFINITY, -1.0, 3_600.0] {
            times.record("xl", true, gap);
        }
        assert_eq!(times.load_secs("xl"), None);
    }
}
