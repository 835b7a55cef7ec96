//! The decision logic of the adaptive controller, apart from any actor or clock: one viewer's
//! position on the ladder, moved by the share of what was sent to it that it lost: frames an MJPEG
//! viewer was too slow for, or packets a WebRTC peer's receiver reports lost.
//!
//! Down when more than `down_loss` is lost for `hold_down`; up when at most `up_loss` is lost for
//! `hold_up`. The thresholds differ and up waits longer than down, so a
//! viewer near the edge does not flap; after each move the counts start over.

use std::time::{Duration, Instant};

/// When to move.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub down_loss: f64,
    pub up_loss: f64,
    pub hold_down: Duration,
    pub hold_up: Duration,
}

/// How often the share lost is measured (at least; WebRTC receiver reports come about once a
/// second).
const WINDOW: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct LadderPosition {
    steps: usize,
    step: usize,
    /// Where the last move came from, for `undo`.
    previous: usize,
    t: Thresholds,
    window_start: Option<Instant>,
    total: u64,
    lost: u64,
    bad_since: Option<Instant>,
    good_since: Option<Instant>,
    /// Just moved: the next measurement is discarded.
    settling: bool,
}

impl LadderPosition {
    /// At the top (step 0) of a ladder of `steps` steps.
    pub fn new(steps: usize, t: Thresholds) -> Self {
        Self {
            steps,
            step: 0,
            previous: 0,
            t,
            window_start: None,
            total: 0,
            lost: 0,
            bad_since: None,
            good_since: None,
            settling: false,
        }
    }

    pub fn step(&self) -> usize {
        self.step
    }

    /// Of `total` frames or packets sent up to `now`, `lost` did not reach the viewer. Returns
    /// the new step when the viewer moves.
    pub fn observe(&mut self, now: Instant, lost: u64, total: u64) -> Option<usize> {
        let start = *self.window_start.get_or_insert(now);
        self.total += total;
        self.lost += lost.min(total);
        if now.duration_since(start) < WINDOW || self.total == 0 {
            return None;
        }
        let loss = self.lost as f64 / self.total as f64;
        (self.window_start, self.total, self.lost) = (Some(now), 0, 0);
        if std::mem::take(&mut self.settling) {
            return None;
        }
        if loss > self.t.down_loss {
            self.good_since = None;
            let since = *self.bad_since.get_or_insert(start);
            if now.duration_since(since) >= self.t.hold_down && self.step + 1 < self.steps {
                return Some(self.moved(self.step + 1));
            }
        } else if loss <= self.t.up_loss {
            self.bad_since = None;
            let since = *self.good_since.get_or_insert(start);
            if now.duration_since(since) >= self.t.hold_up && self.step > 0 {
                return Some(self.moved(self.step - 1));
            }
        } else {
            (self.bad_since, self.good_since) = (None, None);
        }
        None
    }

    /// The last move could not be made: back to the step before it (the counts start over).
    pub fn undo(&mut self) {
        self.step = self.previous;
    }

    fn moved(&mut self, step: usize) -> usize {
        self.previous = self.step;
        self.step = step;
        (self.bad_since, self.good_since) = (None, None);
        self.settling = true;
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            down_loss: 0.2,
            up_loss: 0.02,
            hold_down: Duration::from_secs(1),
            hold_up: Duration::from_secs(3),
        }
    }

    /// Feeds `seconds` of frames at `fps` delivered, each after `missed` misses; returns the moves
    /// with the time they happened (seconds from `t0`).
    fn run(
        p: &mut LadderPosition,
        t0: Instant,
        from: f64,
        seconds: f64,
        fps: f64,
        missed: u64,
    ) -> Vec<(f64, usize)> {
        let mut moves = Vec::new();
        let n = (seconds * fps) as usize;
        for i in 0..n {
            let t = from + i as f64 / fps;
            if let Some(step) = p.observe(t0 + Duration::from_secs_f64(t), missed, missed + 1) {
                moves.push(((t * 10.0).round() / 10.0, step));
            }
        }
        moves
    }

    #[test]
    fn a_slow_viewer_steps_down_after_the_hold_and_back_up_slower() {
        let t0 = Instant::now();
        let mut p = LadderPosition::new(4, thresholds());
        assert_eq!(
            run(&mut p, t0, 0.0, 2.0, 30.0, 0),
            vec![],
            "a good viewer stays on top"
        );
        // Now it gets 10 of 30 frames (misses 2 before each): down a step after 1 s of loss, then
        // one every ~2 s (the half second after a move is not counted).
        let down = run(&mut p, t0, 2.0, 5.0, 10.0, 2);
        assert_eq!(down.iter().map(|m| m.1).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(down[0].0 >= 3.0 && down[0].0 <= 3.6, "{down:?}");
        assert!(
            down[1].0 - down[0].0 >= 1.5 && down[2].0 - down[1].0 >= 1.5,
            "{down:?}"
        );
        assert_eq!(
            run(&mut p, t0, 7.0, 2.0, 10.0, 2),
            vec![],
            "the bottom is the bottom"
        );
        // Fast again: up one step per ~3 s of clean delivery.
        let up = run(&mut p, t0, 9.0, 12.0, 30.0, 0);
        assert_eq!(up.iter().map(|m| m.1).collect::<Vec<_>>(), vec![2, 1, 0]);
        assert!(up[0].0 - 9.0 >= 3.0 && up[1].0 - up[0].0 >= 3.0, "{up:?}");
    }

    #[test]
    fn receiver_reports_about_once_a_second_move_a_peer_a_step_per_two_reports() {
        let t0 = Instant::now();
        let mut p = LadderPosition::new(3, thresholds());
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        // A report: of 300 packets since the last, 90 lost (30 %), then clean ones.
        assert_eq!(
            p.observe(at(1.0), 90, 300),
            None,
            "the first report opens the window"
        );
        assert_eq!(p.observe(at(2.0), 90, 300), Some(1));
        assert_eq!(
            p.observe(at(3.0), 90, 300),
            None,
            "the report after a move still counts the old step's packets: discarded"
        );
        assert_eq!(p.observe(at(4.0), 90, 300), Some(2));
        assert_eq!(
            p.observe(at(5.0), 0, 0),
            None,
            "an empty report says nothing"
        );
        let ups: Vec<_> = (6..=14)
            .filter_map(|s| p.observe(at(s as f64), 0, 300).map(|step| (s, step)))
            .collect();
        assert_eq!(ups, vec![(9, 1), (13, 0)], "up after 3 s of clean reports");
    }

    #[test]
    fn loss_between_the_thresholds_holds_the_step() {
        let t0 = Instant::now();
        let mut p = LadderPosition::new(3, thresholds());
        // 1 missed per 10 delivered: 9 %, between 2 % and 20 %.
        let mut moves = Vec::new();
        for i in 0..300 {
            let missed = u64::from(i % 10 == 0);
            if let Some(s) = p.observe(t0 + Duration::from_millis(i * 33), missed, missed + 1) {
                moves.push(s);
            }
        }
        assert!(moves.is_empty(), "{moves:?}");
    }
}
