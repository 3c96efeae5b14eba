//! The budget: which gate factors to set to 0 so the network's cost meets
//! a target. Pure functions over gate values, importance scores and a cost
//! function, so they are tested on hand-made cases without a model.

use super::Config;
use crate::error::Result;
use crate::train::widths;
use std::collections::HashSet;

/// One gate as the budget sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GateState {
    /// One value per factor (0: deleted).
    pub values: Vec<f32>,
    /// Importance per factor: the least important go first.
    pub scores: Vec<f64>,
    /// The widths (alive factor counts) the gate may be left at; `None`:
    /// any.
    pub widths: Option<Vec<usize>>,
    /// A whole-block gate (deleted first when `blocks_first`).
    pub block: bool,
    /// What one factor costs (ties go to the dearer structure).
    pub cost: f64,
}

/// How a budget step cuts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CutRule {
    /// The cost ratio aimed at; the step stops within 2 % above it and
    /// never takes a unit that lands more than 5 % below it.
    pub target: f64,
    /// Whole blocks before channels and groups.
    pub blocks_first: bool,
    /// The cost is a timing model: a unit whose deletion does not lower
    /// it is put back.
    pub timed: bool,
}

/// Zeroes the least important factors, one unit at a time (a factor, or
/// with allowed widths a chunk that steps to the next narrower width),
/// skipping any unit whose removal would undershoot the band, until
/// `ratio_of` reaches the target. `None` when the gates already meet it
/// (nothing changed); else how many factors were zeroed.
pub fn cut(
    gates: &mut [GateState],
    rule: CutRule,
    mut ratio_of: impl FnMut(&[GateState]) -> Result<f64>,
) -> Result<Option<usize>> {
    let target = rule.target;
    let mut ratio = ratio_of(gates)?;
    if ratio <= target * 1.02 {
        return Ok(None);
    }
    // candidates: (score, gate index, factors), least important first
    let mut units: Vec<(f64, usize, Vec<usize>)> = Vec::new();
    for (gi, gs) in gates.iter().enumerate() {
        let f = &gs.values;
        let mut order: Vec<usize> = (0..f.len()).filter(|&k| f[k] != 0.0).collect();
        match &gs.widths {
            Some(w) => {
                order.sort_by(|&a, &b| gs.scores[a].total_cmp(&gs.scores[b]));
                for c in widths::chunks(&order, w) {
                    let mean = c.iter().map(|&k| gs.scores[k]).sum::<f64>() / c.len() as f64;
                    units.push((mean, gi, c));
                }
            }
            None => units.extend(order.into_iter().map(|k| (gs.scores[k], gi, vec![k]))),
        }
    }
    // blocks first when asked: a deleted block shortens the graph, while
    // thinner inner convs barely speed a CPU runtime up. Ties (a branch
    // whose every part scores 0) go to the bigger structure: one block
    // gate rather than its channels one by one
    let first = |gi: usize| !(rule.blocks_first && gates[gi].block);
    units.sort_by(|a, b| {
        first(a.1)
            .cmp(&first(b.1))
            .then_with(|| a.0.total_cmp(&b.0))
            .then_with(|| gates[b.1].cost.total_cmp(&gates[a.1].cost))
    });
    let mut alive: Vec<usize> = gates
        .iter()
        .map(|g| g.values.iter().filter(|&&v| v != 0.0).count())
        .collect();
    // a chunk skipped leaves the gate's later chunks misaligned
    let mut blocked: HashSet<usize> = HashSet::new();
    let mut zeroed = 0;
    for (_, gi, ks) in units {
        if ratio <= target * 1.02 {
            break;
        }
        // a branch goes only through its block gate: emptying a conv via
        // its channel gates leaves the next conv's bias as a constant
        // offset the rest of the network was not trained with
        if blocked.contains(&gi) || (gates[gi].values.len() > 1 && alive[gi] <= ks.len()) {
            continue;
        }
        let old: Vec<f32> = ks.iter().map(|&k| gates[gi].values[k]).collect();
        for &k in &ks {
            gates[gi].values[k] = 0.0;
        }
        let r = ratio_of(gates)?;
        // too much at once (a whole block), or, timed, no faster
        if r < target * 0.95 || (rule.timed && r >= ratio) {
            for (&k, &v) in ks.iter().zip(&old) {
                gates[gi].values[k] = v;
            }
            if gates[gi].widths.is_some() {
                blocked.insert(gi);
            }
            continue;
        }
        ratio = r;
        alive[gi] -= ks.len();
        zeroed += ks.len();
    }
    Ok(Some(zeroed))
}

/// Zeroes, in a gate with allowed widths whose alive count lies between
/// two, its least important factors down to the narrower. Returns how
/// many.
pub fn align(gate: &mut GateState) -> usize {
    let Some(w) = &gate.widths else {
        return 0;
    };
    let f = &mut gate.values;
    let mut order: Vec<usize> = (0..f.len()).filter(|&k| f[k] != 0.0).collect();
    let Some(keep) = widths::align_down(order.len(), w) else {
        return 0;
    };
    if keep == order.len() {
        return 0;
    }
    order.sort_by(|&a, &b| gate.scores[a].total_cmp(&gate.scores[b]));
    for &k in &order[..order.len() - keep] {
        f[k] = 0.0;
    }
    order.len() - keep
}

/// Step at which the zero pattern is due to lock (two-phase runs).
pub fn lock_step(cfg: &Config) -> Option<usize> {
    cfg.lock_at
        .map(|f| ((f * cfg.steps as f64).round() as usize).clamp(1, cfg.steps))
}

/// Whether budget step `cuts + 1` (of `budget_steps`) is due after `step`,
/// and the cost ratio it aims at. The steps are spread evenly over the
/// first phase, the last at the lock, and the aims follow a cubic (most of
/// the cut early, while the net is most redundant; finer ones later), as
/// in gradual magnitude pruning (Zhu & Gupta 2017).
pub fn aim(cfg: &Config, cuts: usize, step: usize) -> Option<f64> {
    let target = cfg.target_macs?;
    let lock = lock_step(cfg)?;
    let k_all = cfg.budget_steps.max(1);
    let k = cuts + 1;
    if k > k_all || step + 1 < (lock * k).div_ceil(k_all) {
        return None;
    }
    let frac = k as f64 / k_all as f64;
    Some(1.0 - (1.0 - target) * (1.0 - (1.0 - frac).powi(3)))
}

#[cfg(test)]
mod tests {
    use super::super::config::test_config as cfg;
    use super::*;

    #[test]
    fn budget_steps_are_spread_over_the_first_phase_with_cubic_aims() {
        let c = cfg(Some(0.4));
        // four steps at 10, 20, 30, 40 (1-based step counts)
        assert_eq!(aim(&c, 0, 8), None);
        let a1 = aim(&c, 0, 9).unwrap();
        // 1 − 0.4·(1 − 0.75³) = 0.76875
        assert!((a1 - 0.76875).abs() < 1e-12, "{a1}");
        assert_eq!(aim(&c, 1, 18), None);
        let a2 = aim(&c, 1, 19).unwrap();
        assert!((a2 - (1.0 - 0.4 * (1.0 - 0.125))).abs() < 1e-12);
        let a4 = aim(&c, 3, 39).unwrap();
        assert!((a4 - 0.6).abs() < 1e-12);
        assert_eq!(aim(&c, 4, 99), None);
        // without a target there is no budget
        let mut n = cfg(Some(0.4));
        n.target_macs = None;
        assert_eq!(aim(&n, 0, 50), None);
    }

    fn gate(values: &[f32], scores: &[f64], cost: f64) -> GateState {
        GateState {
            values: values.to_vec(),
            scores: scores.to_vec(),
            widths: None,
            block: false,
            cost,
        }
    }

    /// A cost where every alive factor of gate i costs `unit[i]`, over the
    /// full cost.
    fn linear(unit: Vec<f64>) -> impl FnMut(&[GateState]) -> Result<f64> {
        move |gs: &[GateState]| {
            let full: f64 = gs
                .iter()
                .zip(&unit)
                .map(|(g, u)| g.values.len() as f64 * u)
                .sum();
            let now: f64 = gs
                .iter()
                .zip(&unit)
                .map(|(g, u)| g.values.iter().filter(|&&v| v != 0.0).count() as f64 * u)
                .sum();
            Ok(now / full)
        }
    }

    const RULE: CutRule = CutRule {
        target: 0.5,
        blocks_first: false,
        timed: false,
    };

    #[test]
    fn a_met_target_changes_nothing() {
        let mut gs = vec![gate(&[1.0, 0.0], &[1.0, 0.0], 1.0)];
        let before = gs.clone();
        assert_eq!(cut(&mut gs, RULE, linear(vec![1.0])).unwrap(), None);
        assert_eq!(gs, before);
    }

    #[test]
    fn the_least_important_factors_go_first_until_the_band() {
        // 8 factors of equal cost, scores 8..1: the four lowest go
        let scores: Vec<f64> = (1..=8).rev().map(f64::from).collect();
        let mut gs = vec![gate(&[1.0; 8], &scores, 1.0)];
        assert_eq!(cut(&mut gs, RULE, linear(vec![1.0])).unwrap(), Some(4));
        assert_eq!(gs[0].values, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn a_unit_that_undershoots_the_band_is_skipped() {
        // gate 0: one factor worth 60 % of the cost, least important;
        // gate 1: four factors of 10 % each. Taking gate 0's factor would
        // land at 0.4 < 0.95 · 0.5, so it is put back and gate 1's go
        // instead; a gate is never emptied by its channels, so gate 1
        // keeps its last factor and the step ends at 0.7, short of the
        // target, after three.
        let mut gs = vec![
            gate(&[1.0], &[0.0], 6.0),
            gate(&[1.0; 4], &[1.0, 2.0, 3.0, 4.0], 1.0),
        ];
        let got = cut(&mut gs, RULE, linear(vec![6.0, 1.0])).unwrap();
        assert_eq!(gs[0].values, vec![1.0]);
        assert_eq!(gs[1].values, vec![0.0, 0.0, 0.0, 1.0]);
        assert_eq!(got, Some(3));
    }

    #[test]
    fn blocks_first_and_ties_to_the_dearer_structure() {
        // a block gate (one factor, 50 % of the cost) scored above every
        // channel still goes first when blocks come first
        let mut b = gate(&[1.0], &[9.0], 5.0);
        b.block = true;
        let mut gs = vec![b.clone(), gate(&[1.0; 5], &[0.0; 5], 1.0)];
        let rule = CutRule {
            blocks_first: true,
            ..RULE
        };
        assert_eq!(cut(&mut gs, rule, linear(vec![5.0, 1.0])).unwrap(), Some(1));
        assert_eq!(gs[0].values, vec![0.0]);
        assert_eq!(gs[1].values, vec![1.0; 5]);
        // without blocks first, equal scores: the dearer unit goes first
        let mut b0 = b.clone();
        b0.scores = vec![0.0];
        let mut gs = vec![gate(&[1.0; 5], &[0.0; 5], 1.0), b0];
        assert_eq!(cut(&mut gs, RULE, linear(vec![1.0, 5.0])).unwrap(), Some(1));
        assert_eq!(gs[1].values, vec![0.0]);
    }

    #[test]
    fn widths_cut_in_chunks_and_a_timed_cost_refuses_no_gain() {
        // 16 factors allowed at 8, 12, 16: chunks of 4
        let mut g = gate(&[1.0; 16], &(0..16).map(f64::from).collect::<Vec<_>>(), 1.0);
        g.widths = Some(vec![8, 12, 16]);
        let mut gs = vec![g.clone()];
        let rule = CutRule {
            target: 0.75,
            ..RULE
        };
        assert_eq!(cut(&mut gs, rule, linear(vec![1.0])).unwrap(), Some(4));
        assert_eq!(gs[0].values.iter().filter(|&&v| v == 0.0).count(), 4);
        assert!(gs[0].values[..4].iter().all(|&v| v == 0.0));
        // a timing model that gains nothing from any deletion: all put back
        let mut gs = vec![g];
        let timed = CutRule {
            timed: true,
            ..rule
        };
        let flat = |_: &[GateState]| Ok(1.0);
        assert_eq!(cut(&mut gs, timed, flat).unwrap(), Some(0));
        assert!(gs[0].values.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn align_takes_the_least_important_down_to_an_allowed_width() {
        let mut g = gate(
            &[1.0, 0.0, 1.0, 1.0, 1.0, 1.0],
            &[5.0, 0.0, 1.0, 4.0, 2.0, 3.0],
            1.0,
        );
        g.widths = Some(vec![2, 4, 6]);
        // 5 alive, allowed 4: the lowest score (index 2) goes
        assert_eq!(align(&mut g), 1);
        assert_eq!(g.values, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(align(&mut g), 0);
        // no widths: untouched
        let mut free = gate(&[1.0, 0.0, 1.0], &[1.0; 3], 1.0);
        assert_eq!(align(&mut free), 0);
    }
}
