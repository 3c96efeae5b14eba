//! Channel counts a runtime runs fast. ONNX Runtime's CPU convolutions
//! block channels (8 or 16 to a vector): a conv left with 62 input channels
//! ran 2× slower than one with 64 (docs/notebook/latency.md). With a latency target
//! the budget removes channels in chunks that leave each gate at a width
//! the latency table timed, so every prediction is a measured point.

/// The chunks, in order, that take a gate from its alive factors to each
/// narrower allowed width in turn. `order`: the alive factors, least
/// important first; `allowed`: the widths that may remain, ascending. The
/// first chunk also takes off what APG's zeros left between two widths.
/// A gate is never emptied (a branch goes through its block gate).
pub fn chunks(order: &[usize], allowed: &[usize]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut alive = order.len();
    let mut next = 0;
    for &w in allowed.iter().rev() {
        if w == 0 || w >= alive {
            continue;
        }
        out.push(order[next..next + (alive - w)].to_vec());
        next += alive - w;
        alive = w;
    }
    out
}

/// The widest allowed width at most `k` (`None`: narrower than any).
pub fn align_down(k: usize, allowed: &[usize]) -> Option<usize> {
    allowed.iter().rev().copied().find(|&w| w <= k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_step_through_the_allowed_widths() {
        let order: Vec<usize> = (0..16).rev().collect();
        let c = chunks(&order, &[4, 8, 12, 16]);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0], vec![15, 14, 13, 12]);
        assert_eq!(c[2], vec![7, 6, 5, 4]);
        // APG zeroed 3 of 16: the first chunk realigns (13 → 12)
        let c = chunks(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], &[4, 8, 12, 16]);
        assert_eq!(c[0], vec![0]);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 4, 4]);
        // narrower than every width: nothing to take
        assert!(chunks(&[0, 1, 2], &[4, 8]).is_empty());
    }

    #[test]
    fn align_down_finds_the_widest_width_below() {
        assert_eq!(align_down(13, &[4, 8, 12, 16]), Some(12));
        assert_eq!(align_down(16, &[4, 8, 12, 16]), Some(16));
        assert_eq!(align_down(3, &[4, 8]), None);
    }
}
