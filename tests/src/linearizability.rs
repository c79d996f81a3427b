//! A small linearizability checker for a single register (Wing & Gong's search with the
//! memoization of Lowe / porcupine): is there an order of the operations, consistent with
//! real time, in which every read returns the value of the latest write before it?
//!
//! An operation that failed (its outcome is unknown: the request may or may not have been
//! applied) is recorded with `ret = None`: a write may then take effect at any time after its
//! call, or never; a failed read is left out of the history by the caller.

use std::collections::HashSet;
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// Set the register to the value.
    Write(u64),
    /// Read it: `None` when it was never written.
    Read(Option<u64>),
}

#[derive(Clone, Debug)]
pub struct Event {
    pub op: RegOp,
    pub call: Instant,
    /// When the answer came back; None if the outcome is unknown (writes only).
    pub ret: Option<Instant>,
}

/// Whether `history` (from any number of clients) is linearizable for a register that starts
/// empty. Exponential in the worst case; fine for a few hundred operations with little
/// concurrency.
pub fn check_register(history: &[Event]) -> bool {
    let mut ops: Vec<Event> = history.to_vec();
    ops.sort_by_key(|e| e.call);
    let n = ops.len();
    let required: usize = ops.iter().filter(|e| e.ret.is_some()).count();
    let mut done = vec![false; n];
    let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    search(&ops, &mut done, 0, required, None, &mut seen)
}

fn bits(done: &[bool]) -> Vec<u64> {
    let mut out = vec![0u64; done.len().div_ceil(64)];
    for (i, d) in done.iter().enumerate() {
        if *d {
            out[i / 64] |= 1 << (i % 64);
        }
    }
    out
}

fn search(
    ops: &[Event],
    done: &mut [bool],
    done_required: usize,
    required: usize,
    state: Option<u64>,
    seen: &mut HashSet<(Vec<u64>, Option<u64>)>,
) -> bool {
    if done_required == required {
        // Every completed operation is placed; pending writes may simply never take effect.
        return true;
    }
    if !seen.insert((bits(done), state)) {
        return false;
    }
    // The earliest return among the operations not yet placed: an operation called after it
    // cannot come first.
    let horizon = ops
        .iter()
        .zip(done.iter())
        .filter(|(_, d)| !**d)
        .filter_map(|(e, _)| e.ret)
        .min();
    for i in 0..ops.len() {
        if done[i] {
            continue;
        }
        if horizon.is_some_and(|h| ops[i].call > h) {
            break; // sorted by call: the rest are later still
        }
        let next = match &ops[i].op {
            RegOp::Write(v) => Some(*v),
            RegOp::Read(v) => {
                if *v != state {
                    continue;
                }
                state
            }
        };
        done[i] = true;
        let req = usize::from(ops[i].ret.is_some());
        if search(ops, done, done_required + req, required, next, seen) {
            return true;
        }
        done[i] = false;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn ev(base: Instant, op: RegOp, call: u64, ret: Option<u64>) -> Event {
        Event {
            op,
            call: at(base, call),
            ret: ret.map(|r| at(base, r)),
        }
    }

    #[test]
    fn sequential_and_concurrent_histories() {
        let b = Instant::now();
        // w1 then r1: fine.
        assert!(check_register(&[
            ev(b, RegOp::Write(1), 0, Some(10)),
            ev(b, RegOp::Read(Some(1)), 20, Some(30)),
        ]));
        // A read after the write completed cannot see the old (empty) value.
        assert!(!check_register(&[
            ev(b, RegOp::Write(1), 0, Some(10)),
            ev(b, RegOp::Read(None), 20, Some(30)),
        ]));
        // Concurrent with the write: either value.
        assert!(check_register(&[
            ev(b, RegOp::Write(1), 0, Some(50)),
            ev(b, RegOp::Read(None), 10, Some(20)),
            ev(b, RegOp::Read(Some(1)), 30, Some(40)),
        ]));
        // Once a read saw the new value, a later read cannot see the old one.
        assert!(!check_register(&[
            ev(b, RegOp::Write(1), 0, Some(100)),
            ev(b, RegOp::Read(Some(1)), 10, Some(20)),
            ev(b, RegOp::Read(None), 30, Some(40)),
        ]));
        // A write with an unknown outcome may have happened...
        assert!(check_register(&[
            ev(b, RegOp::Write(7), 0, None),
            ev(b, RegOp::Read(Some(7)), 30, Some(40)),
        ]));
        // ...or not.
        assert!(check_register(&[
            ev(b, RegOp::Write(7), 0, None),
            ev(b, RegOp::Read(None), 30, Some(40)),
        ]));
        // A value nobody wrote is never linearizable.
        assert!(!check_register(&[
            ev(b, RegOp::Write(1), 0, Some(10)),
            ev(b, RegOp::Read(Some(2)), 20, Some(30)),
        ]));
        // Stale read after two completed writes.
        assert!(!check_register(&[
            ev(b, RegOp::Write(1), 0, Some(10)),
            ev(b, RegOp::Write(2), 20, Some(30)),
            ev(b, RegOp::Read(Some(1)), 40, Some(50)),
        ]));
    }
}
