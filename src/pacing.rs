//! Thinning a stream to a target rate, evenly spaced: a viewer's `?fps=` uses it. Pure logic over
//! capture times, so it is tested without sleeping.

use std::time::{Duration, SystemTime};

/// Admits frames at most `fps` times per second, judged by their capture time.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    interval: Duration,
    next_due: Option<SystemTime>,
}

impl RateLimiter {
    pub fn new(fps: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / fps),
            next_due: None,
        }
    }

    /// Whether the frame captured at `t` should pass. A frame a quarter interval early still passes,
    /// so that capture jitter does not turn 10 of 30 fps into 7.5.
    pub fn admit(&mut self, t: SystemTime) -> bool {
        let Some(due) = self.next_due else {
            self.next_due = Some(t + self.interval);
            return true;
        };
        if t + self.interval / 4 < due {
            return false;
        }
        // On time: keep the grid. Far behind (a gap in the input): restart the grid at this frame.
        self.next_due = Some(if t > due + self.interval {
            t + self.interval
        } else {
            due + self.interval
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn admitted(input_fps: f64, target: f64, seconds: f64, jitter_ms: f64) -> Vec<f64> {
        let mut limiter = RateLimiter::new(target);
        let n = (input_fps * seconds) as usize;
        (0..n)
            .filter_map(|i| {
                let jitter = if i % 2 == 0 { jitter_ms } else { -jitter_ms } / 1000.0;
                let t = i as f64 / input_fps + 1.0 + jitter;
                limiter
                    .admit(UNIX_EPOCH + Duration::from_secs_f64(t))
                    .then_some(t)
            })
            .collect()
    }

    #[test]
    fn thirty_in_ten_out_evenly_spaced_even_with_jitter() {
        let times = admitted(30.0, 10.0, 10.0, 2.0);
        assert_eq!(times.len(), 100);
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!((0.095..=0.105).contains(&gap), "gap {gap}");
        }
    }

    #[test]
    fn a_target_above_the_input_passes_everything() {
        assert_eq!(admitted(30.0, 60.0, 2.0, 1.0).len(), 60);
    }

    #[test]
    fn a_gap_in_the_input_does_not_cause_a_burst() {
        let mut limiter = RateLimiter::new(10.0);
        let at = |s: f64| UNIX_EPOCH + Duration::from_secs_f64(s);
        assert!(limiter.admit(at(1.0)));
        assert!(limiter.admit(at(5.0)));
        assert!(!limiter.admit(at(5.03)));
        assert!(!limiter.admit(at(5.06)));
        assert!(limiter.admit(at(5.1)));
    }
}
