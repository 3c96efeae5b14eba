//! A guard against slow divergence: the loss climbing far above where it
//! stood, without (yet) turning NaN. Seen on BN-folded nets right after the
//! MAC budget deleted several blocks and the learning rate came back up: a
//! run at 76 % training accuracy fell to 20 % within 20 steps and never
//! recovered. The guard watches the mean loss over windows of steps; when a
//! window's mean exceeds twice the best window since the last reference
//! point (and by more than `MIN_RISE`), it asks the trainer to rewind to the
//! last healthy snapshot and halve the learning rate.

/// Steps per window.
pub const WINDOW: usize = 10;
/// An absolute floor on the rise that counts, so a near-zero loss going
/// from 0.01 to 0.03 is not "divergence".
const MIN_RISE: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// A healthy window ended: take a snapshot now.
    Healthy,
    /// The loss ran away: restore the snapshot, halve the learning rate.
    Rewind,
}

#[derive(Debug, Default)]
pub struct Guard {
    sum: f64,
    n: usize,
    best: Option<f64>,
    /// Learning-rate factor after the rewinds so far (1, ½, ¼, …).
    pub lr_scale: f64,
    pub rewinds: usize,
}

impl Guard {
    pub fn new() -> Self {
        Guard {
            lr_scale: 1.0,
            ..Default::default()
        }
    }

    /// Forgets the reference: the loss legitimately jumps after a budget
    /// step or the lock, and the first window after it sets the new one.
    pub fn restart(&mut self) {
        self.sum = 0.0;
        self.n = 0;
        self.best = None;
    }

    /// One step's loss; a verdict at the end of each window.
    pub fn observe(&mut self, loss: f64) -> Option<Verdict> {
        self.sum += loss;
        self.n += 1;
        if self.n < WINDOW {
            return None;
        }
        let mean = self.sum / self.n as f64;
        self.sum = 0.0;
        self.n = 0;
        match self.best {
            Some(b) if mean > 2.0 * b && mean > b + MIN_RISE => {
                self.lr_scale *= 0.5;
                self.rewinds += 1;
                Some(Verdict::Rewind)
            }
            Some(b) => {
                self.best = Some(b.min(mean));
                Some(Verdict::Healthy)
            }
            None => {
                self.best = Some(mean);
                Some(Verdict::Healthy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(g: &mut Guard, loss: f64) -> Option<Verdict> {
        let mut v = None;
        for _ in 0..WINDOW {
            v = g.observe(loss);
        }
        v
    }

    #[test]
    fn a_runaway_loss_rewinds_and_halves_the_rate() {
        let mut g = Guard::new();
        assert_eq!(g.observe(0.6), None);
        let mut g = Guard::new();
        assert_eq!(window(&mut g, 0.64), Some(Verdict::Healthy));
        assert_eq!(window(&mut g, 0.70), Some(Verdict::Healthy)); // noise
        assert_eq!(window(&mut g, 1.20), Some(Verdict::Healthy)); // < 2×
        assert_eq!(window(&mut g, 2.66), Some(Verdict::Rewind));
        assert_eq!((g.lr_scale, g.rewinds), (0.5, 1));
        // the best stays the reference after a rewind
        assert_eq!(window(&mut g, 1.4), Some(Verdict::Rewind));
        assert_eq!(g.lr_scale, 0.25);
    }

    #[test]
    fn small_losses_and_restarts_do_not_trigger_it() {
        let mut g = Guard::new();
        window(&mut g, 0.01);
        assert_eq!(window(&mut g, 0.05), Some(Verdict::Healthy));
        // after a budget step the loss may jump: a new reference
        g.restart();
        assert_eq!(window(&mut g, 1.5), Some(Verdict::Healthy));
        assert_eq!(window(&mut g, 1.1), Some(Verdict::Healthy));
        assert_eq!(g.rewinds, 0);
    }
}
