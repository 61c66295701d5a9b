//! The memory store's final entries in the order they became final: eviction takes the oldest,
//! and a re-send takes one out from anywhere, each in logarithmic time (a queue searched for the
//! re-sent entry made `resend_matching` quadratic in the number of re-sent deliveries).

use std::collections::BTreeMap;

use crate::delivery::FastMap;

/// Final entries (by insertion sequence), oldest final first.
#[derive(Debug, Default)]
pub(super) struct FinishedQueue {
    /// When each entry became final (a counter) → its sequence.
    by_turn: BTreeMap<u64, u64>,
    /// Each entry's turn, to take it out of `by_turn`.
    turn_of: FastMap<u64, u64>,
    next_turn: u64,
}

impl FinishedQueue {
    /// Entry `seq` became final (again, after a re-send: it moves to the back).
    pub(super) fn push(&mut self, seq: u64) {
        self.remove(seq);
        self.next_turn += 1;
        self.by_turn.insert(self.next_turn, seq);
        self.turn_of.insert(seq, self.next_turn);
    }

    /// Takes out the entry that became final first.
    pub(super) fn pop_oldest(&mut self) -> Option<u64> {
        let (_, seq) = self.by_turn.pop_first()?;
        self.turn_of.remove(&seq);
        Some(seq)
    }

    /// Takes out entry `seq`; `false` when it is not here.
    pub(super) fn remove(&mut self, seq: u64) -> bool {
        match self.turn_of.remove(&seq) {
            Some(turn) => self.by_turn.remove(&turn).is_some(),
            None => false,
        }
    }

    /// The entries, oldest final first.
    pub(super) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_turn.values().copied()
    }

    pub(super) fn len(&self) -> usize {
        self.by_turn.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_turn.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_final_first_and_a_resent_entry_leaves_from_anywhere() {
        let mut queue = FinishedQueue::default();
        for seq in [5, 3, 9] {
            queue.push(seq);
        }
        assert!(queue.remove(3));
        assert!(!queue.remove(3));
        // Final again after a re-send: it goes to the back.
        queue.push(5);
        assert_eq!(queue.iter().collect::<Vec<_>>(), [9, 5]);
        assert_eq!(queue.pop_oldest(), Some(9));
        assert_eq!(queue.pop_oldest(), Some(5));
        assert_eq!(queue.pop_oldest(), None);
        assert!(queue.is_empty());
        assert_eq!(queue.len(), 0);
    }
}
