//! Batches for training, made on a background thread so the trainer never
//! waits for loading or augmentation. Order is a seeded shuffle per epoch and
//! augmentation a seeded function of the step, so a resumed run sees the same
//! batches as an uninterrupted one.

use crate::data::{Dataset, Preprocess};
use crate::error::Result;
use ndarray::{s, Array4, ArrayD, Ix4};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Zero-pad by this many pixels, then crop back at a random offset.
    pub crop_pad: usize,
    pub flip: bool,
}

impl Augment {
    pub const NONE: Augment = Augment {
        crop_pad: 0,
        flip: false,
    };
    pub const STANDARD: Augment = Augment {
        crop_pad: 4,
        flip: true,
    };
}

pub struct Batch {
    pub step: usize,
    pub x: ArrayD<f32>,
    pub labels: Vec<u32>,
}

pub struct Feed {
    rx: Receiver<Result<Batch>>,
    _worker: JoinHandle<()>,
}

impl Feed {
    /// The next batch; an error (an image that fails to decode) ends the
    /// feed.
    pub fn recv(&self) -> Option<Result<Batch>> {
        self.rx.recv().ok()
    }
}

pub fn steps_per_epoch(len: usize, batch: usize) -> usize {
    (len / batch.max(1)).max(1)
}

/// The sample order of `epoch`.
pub fn order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    idx.shuffle(&mut rng);
    idx
}

/// Random shift (within ±pad) and horizontal flip of each image.
pub fn augment(x: &mut Array4<f32>, a: Augment, rng: &mut impl Rng) {
    let (n, c, h, w) = x.dim();
    for b in 0..n {
        let p = a.crop_pad as i64;
        let (dy, dx) = if p > 0 {
            (
                rng.random_range(-p..=p) as isize,
                rng.random_range(-p..=p) as isize,
            )
        } else {
            (0, 0)
        };
        let flip = a.flip && rng.random_bool(0.5);
        if dy == 0 && dx == 0 && !flip {
            continue;
        }
        let src = x.slice(s![b, .., .., ..]).to_owned();
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let sy = y as isize + dy;
                    let sx0 = if flip {
                        (w - 1 - xx) as isize
                    } else {
                        xx as isize
                    };
                    let sx = sx0 + dx;
                    x[[b, ch, y, xx]] = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize
                    {
                        src[[ch, sy as usize, sx as usize]]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Starts producing batches `start..total` on a thread (a few ahead).
pub fn spawn(
    ds: Arc<Dataset>,
    prep: Preprocess,
    batch: usize,
    seed: u64,
    start: usize,
    total: usize,
    aug: Augment,
) -> Feed {
    let (tx, rx) = sync_channel(3);
    let worker = std::thread::spawn(move || {
        let spe = steps_per_epoch(ds.len(), batch);
        let mut cached: Option<(usize, Vec<usize>)> = None;
        for step in start..total {
            let epoch = step / spe;
            if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
                cached = Some((epoch, order(ds.len(), seed, epoch)));
            }
            let ord = &cached.as_ref().map(|(_, o)| o).expect("order cached above");
            let k = (step % spe) * batch;
            let idx: Vec<usize> = (k..(k + batch).min(ord.len())).map(|i| ord[i]).collect();
            let mut x = match prep.batch(&ds, &idx) {
                Ok(x) => x,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if aug != Augment::NONE {
                if let Ok(mut x4) = x
                    .view_mut()
                    .into_dimensionality::<Ix4>()
                    .map(|v| v.to_owned())
                {
                    let mut rng =
                        rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(step as u64 * 7919));
                    augment(&mut x4, aug, &mut rng);
                    x = x4.into_dyn();
                }
            }
            let labels = idx.iter().map(|&i| ds.labels[i]).collect();
            if tx.send(Ok(Batch { step, x, labels })).is_err() {
                return; // the trainer stopped
            }
        }
    });
    Feed {
        rx,
        _worker: worker,
    }
}
