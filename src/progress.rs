//! How a long run tells its caller what it is doing: the CLI prints it on
//! stderr, a library user may log it elsewhere or ignore it.

use serde::Serialize;

/// Receives a run's progress. Every method has a default that does
/// nothing, so an implementation picks what it wants.
pub trait Progress {
    /// Stage `index` of `of` begins.
    fn stage(&mut self, _index: usize, _of: usize, _name: &str) {}
    /// A line worth telling the user (a choice made, a figure measured).
    fn note(&mut self, _text: &str) {}
    /// One training log step; `eta`: the time left, as text.
    fn record(&mut self, _r: &Record, _eta: &str) {}
}

/// Says nothing.
pub struct Quiet;

impl Progress for Quiet {}

/// Everything on stderr, as the command line shows it.
pub struct Stderr;

impl Progress for Stderr {
    fn stage(&mut self, index: usize, of: usize, name: &str) {
        eprintln!("[{index}/{of}] {name}");
    }
    fn note(&mut self, text: &str) {
        eprintln!("{text}");
    }
    fn record(&mut self, r: &Record, eta: &str) {
        eprintln!("{}", line(r, Some(eta)));
    }
}

/// One progress line; `eta` (time left) when the run's length is known.
pub fn line(r: &Record, eta: Option<&str>) -> String {
    let mut s = format!(
        "step {:>6} ep {:>5.2}  loss {:.4}  acc {:>5.1}%  lr {:.4}  γ {:.3e}  zero gates {}/{}  MACs {:>5.1}%  {:.0} img/s",
        r.step,
        r.epoch,
        r.loss,
        r.accuracy * 100.0,
        r.lr,
        r.gamma,
        r.zero_gates,
        r.gates,
        r.macs_ratio * 100.0,
        r.images_per_s,
    );
    if let Some(l) = r.latency_ratio {
        s += &format!("  latency {:>5.1}% (predicted)", l * 100.0);
    }
    if let Some(e) = eta {
        s += &format!("  ETA {e}");
    }
    if r.locked {
        s += "  [locked: fine-tuning]";
    }
    if r.rewinds > 0 {
        s += &format!("  [loss ran away {}×: rewound, lr halved]", r.rewinds);
    }
    s
}

/// One line of the training curve.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub step: usize,
    pub epoch: f64,
    pub loss: f64,
    pub accuracy: f64,
    pub lr: f64,
    pub gamma: f64,
    pub zero_gates: usize,
    pub gates: usize,
    /// MACs the current zero pattern implies, over the original MACs.
    pub macs_ratio: f64,
    /// The latency it implies over the original's, when a latency table
    /// steers the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ratio: Option<f64>,
    pub images_per_s: f64,
    /// Whether the zero pattern is locked (fine-tuning phase).
    pub locked: bool,
    /// Rewinds so far (the loss ran away; back to the last healthy state at
    /// half the learning rate).
    pub rewinds: usize,
}
