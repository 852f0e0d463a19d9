//! Is the run healthy? Counts of applied and rolled-back updates, and divergence alarms from
//! the metrics (rewards, KL) and the adapters' weights. The driver reports each alarm once, as
//! a warning, and in the run's final message; a run that rolled back every update it tried does
//! not end as completed.
use cahl_sessions::records::MetricsRecord;

/// Steps per window of the reward-collapse test.
pub const WINDOW: usize = 5;
/// Per-token KL to the reference (nats) that counts as far from it.
pub const KL_ALARM: f64 = 1.0;
/// Consecutive steps above [`KL_ALARM`] that make an alarm.
pub const KL_STEPS: u32 = 3;
/// Largest absolute adapter weight that counts as blown up. LoRA weights start below 1 (B at
/// zero, A at about 1/sqrt(fan-in)) and AdamW moves each by about `lr` per step, so a healthy
/// run (lr <= 1e-3, thousands of steps) stays well below this.
pub const WEIGHT_ALARM: f64 = 100.0;

/// Update counts of one run (this process: a resumed run counts from its resume).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateCounts {
    /// Optimizer steps taken.
    pub applied: u64,
    /// Updates skipped because the loss, the gradient or the new weights were not finite.
    pub rejected: u64,
}

/// The two policies' names, in the order of the arrays below.
const POLICIES: [&str; 2] = ["planner", "executor"];

/// Watches the metrics of a run for divergence.
#[derive(Debug, Default)]
pub struct Health {
    rewards: [Vec<f64>; 2],
    kl_streak: [u32; 2],
    /// Alarm kinds raised so far ("planner reward", "executor KL", ...), each once.
    raised: Vec<String>,
    /// The alarms' texts, in order.
    alarms: Vec<String>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Look at one step's metrics and the adapters' largest absolute weights (planner,
    /// executor); returns the alarms this step raised for the first time.
    pub fn observe(&mut self, m: &MetricsRecord, max_abs: [f64; 2]) -> Vec<String> {
        let mut new = Vec::new();
        let rewards = [m.planner_reward, m.executor_reward];
        let kls = [m.planner.kl, m.executor.kl];
        for i in 0..2 {
            let name = POLICIES[i];
            if rewards[i].is_finite() {
                self.rewards[i].push(rewards[i]);
            }
            if let Some(text) = reward_collapse(&self.rewards[i]) {
                self.raise(&mut new, format!("{name} reward"), format!("{name} {text}"));
            }
            self.kl_streak[i] = if kls[i].is_finite() && kls[i] > KL_ALARM {
                self.kl_streak[i] + 1
            } else {
                0
            };
            if self.kl_streak[i] >= KL_STEPS {
                self.raise(
                    &mut new,
                    format!("{name} KL"),
                    format!(
                        "{name} KL to the reference above {KL_ALARM} for {KL_STEPS} steps \
                         (now {:.3})",
                        kls[i]
                    ),
                );
            }
            if max_abs[i].is_nan() || max_abs[i] > WEIGHT_ALARM {
                self.raise(
                    &mut new,
                    format!("{name} weights"),
                    format!(
                        "{name} adapter weights reach |x| = {:.4} (above {WEIGHT_ALARM})",
                        max_abs[i]
                    ),
                );
            }
        }
        new
    }

    fn raise(&mut self, new: &mut Vec<String>, kind: String, text: String) {
        if !self.raised.contains(&kind) {
            self.raised.push(kind);
            self.alarms.push(text.clone());
            new.push(text);
        }
    }

    /// Every alarm raised so far.
    pub fn alarms(&self) -> &[String] {
        &self.alarms
    }
}

/// `Some(reason)` when a run that ran steps must not end as completed: a policy (planner,
/// executor) applied no update and rolled at least one back (non-finite loss, gradient or
/// weights).
pub fn not_completed_reason(steps_run: u64, counts: [UpdateCounts; 2]) -> Option<String> {
    let bad: Vec<String> = POLICIES
        .iter()
        .zip(counts)
        .filter(|(_, c)| c.applied == 0 && c.rejected > 0)
        .map(|(name, c)| format!("{name}: all {} rolled back", c.rejected))
        .collect();
    (steps_run > 0 && !bad.is_empty()).then(|| {
        format!(
            "no update applied in {} ({}; non-finite loss, gradient or weights)",
            steps(steps_run),
            bad.join(", ")
        )
    })
}

/// `Some(note)` when a run ran steps and applied no update at all without rolling any back: no
/// group carried a learning signal (equal rewards within every group). Said, but not a failure.
pub fn no_signal_note(steps_run: u64, counts: [UpdateCounts; 2]) -> Option<String> {
    let applied: u64 = counts.iter().map(|c| c.applied).sum();
    let rejected: u64 = counts.iter().map(|c| c.rejected).sum();
    (steps_run > 0 && applied == 0 && rejected == 0).then(|| {
        format!(
            "no update applied in {}: no group carried a learning signal (equal rewards \
             within every group)",
            steps(steps_run)
        )
    })
}

fn steps(n: u64) -> String {
    if n == 1 {
        "1 step".into()
    } else {
        format!("{n} steps")
    }
}

/// A reward collapse: the mean of the last [`WINDOW`] steps is below the best earlier window
/// mean by more than half of that mean's magnitude and by more than three standard errors of
/// the difference (the steps' own spread), so noise alone does not raise it.
fn reward_collapse(r: &[f64]) -> Option<String> {
    let w = WINDOW;
    if r.len() < 2 * w {
        return None;
    }
    let last = &r[r.len() - w..];
    let (best_start, best) = (0..=r.len() - 2 * w)
        .map(|s| (s, mean(&r[s..s + w])))
        .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
    let now = mean(last);
    let drop = best - now;
    let pooled = ((var(&r[best_start..best_start + w]) + var(last)) / 2.0).sqrt();
    let noise = 3.0 * pooled * (2.0 / w as f64).sqrt();
    (drop > 0.5 * best.abs() && drop > noise && drop > 0.0).then(|| {
        format!(
            "reward collapsed: {best:.3} (mean of steps {}-{}) to {now:.3} (last {w} steps)",
            best_start + 1,
            best_start + w
        )
    })
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

fn var(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use cahl_sessions::records::PolicyStats;

    fn metrics(planner: f64, executor: f64, kl: f64) -> MetricsRecord {
        MetricsRecord {
            planner_reward: planner,
            executor_reward: executor,
            planner: PolicyStats {
                kl,
                ..PolicyStats::default()
            },
            ..MetricsRecord::default()
        }
    }

    #[test]
    fn a_collapsing_reward_raises_one_alarm() {
        let mut h = Health::new();
        let mut raised = Vec::new();
        // 2.42 falling to 0.20 over 30 steps, as measured with lr = 1e3.
        for i in 0..30 {
            let r = 2.42 - (2.22 * i as f64 / 29.0);
            raised.extend(h.observe(&metrics(r, 0.5, 0.0), [0.5, 0.5]));
        }
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert!(
            raised[0].starts_with("planner reward collapsed"),
            "{raised:?}"
        );
    }

    #[test]
    fn a_noisy_flat_or_rising_reward_raises_nothing() {
        let mut h = Health::new();
        // Deterministic noise of +-40 % around a slowly rising mean.
        for i in 0..60 {
            let noise = [0.4, -0.4, 0.1, -0.2, 0.3, -0.3, 0.0][i % 7];
            let r = 1.0 + 0.01 * i as f64 + noise;
            let e = 0.2 + [0.1, -0.1, 0.05][i % 3];
            assert!(h.observe(&metrics(r, e, 0.05), [0.3, 0.3]).is_empty());
        }
        assert!(h.alarms().is_empty());
    }

    #[test]
    fn a_high_kl_streak_and_blown_up_weights_are_reported() {
        let mut h = Health::new();
        assert!(h.observe(&metrics(1.0, 1.0, 2.0), [0.1, 0.1]).is_empty());
        assert!(h.observe(&metrics(1.0, 1.0, 2.0), [0.1, 0.1]).is_empty());
        let a = h.observe(&metrics(1.0, 1.0, 2.0), [0.1, 5076.0]);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(a[0].contains("planner KL"), "{a:?}");
        assert!(
            a[1].contains("executor adapter weights reach |x| = 5076"),
            "{a:?}"
        );
        // Raised once each.
        assert!(h.observe(&metrics(1.0, 1.0, 2.0), [0.1, 6000.0]).is_empty());
        assert_eq!(h.alarms().len(), 2);
    }

    #[test]
    fn a_run_that_applied_no_update_is_not_completed() {
        let none = [UpdateCounts::default(); 2];
        assert!(not_completed_reason(0, none).is_none());
        let rolled = UpdateCounts {
            applied: 0,
            rejected: 6,
        };
        let ok = UpdateCounts {
            applied: 4,
            rejected: 0,
        };
        let r = not_completed_reason(3, [rolled, rolled]).unwrap();
        assert!(r.contains("planner: all 6 rolled back"), "{r}");
        // One policy rolling back everything is enough, whatever the other did.
        let r = not_completed_reason(3, [ok, rolled]).unwrap();
        assert!(
            r.contains("executor: all 6 rolled back") && !r.contains("planner"),
            "{r}"
        );
        assert!(not_completed_reason(3, none).is_none());
        assert!(no_signal_note(3, none).unwrap().contains("learning signal"));
        assert!(not_completed_reason(3, [ok, ok]).is_none());
        assert!(no_signal_note(3, [ok, none[1]]).is_none());
    }
}
