//! The secondary indexes of [`MemoryStore`](super::MemoryStore): for each filter of a
//! [`ConversationQuery`] that names one value (an endpoint URL, an endpoint id, a state), the
//! insertion sequences of the entries with that value, so a filtered `list` walks the entries
//! of that value newest first instead of every entry.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::hash::Hash;

use crate::delivery::model::{ConversationQuery, Delivery, DeliveryState};
use crate::delivery::FastMap;

/// The set of a value no entry has.
static NONE: BTreeSet<u64> = BTreeSet::new();

/// Insertion sequences by the value of one field.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SeqIndex<K: Hash + Eq> {
    by_value: FastMap<K, BTreeSet<u64>>,
}

impl<K: Hash + Eq> Default for SeqIndex<K> {
    fn default() -> Self {
        Self {
            by_value: FastMap::default(),
        }
    }
}

impl<K: Hash + Eq> SeqIndex<K> {
    fn insert<Q>(&mut self, value: &Q, seq: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        // Looked up first: the key is cloned only for a value not seen yet.
        match self.by_value.get_mut(value) {
            Some(seqs) => {
                seqs.insert(seq);
            }
            None => {
                self.by_value
                    .insert(value.to_owned(), BTreeSet::from([seq]));
            }
        }
    }

    fn remove<Q>(&mut self, value: &Q, seq: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(seqs) = self.by_value.get_mut(value) {
            seqs.remove(&seq);
            // An endpoint whose last delivery is purged leaves no empty set behind.
            if seqs.is_empty() {
                self.by_value.remove(value);
            }
        }
    }

    /// The sequences of the entries with `value`, oldest first.
    fn of<Q>(&self, value: &Q) -> &BTreeSet<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.by_value.get(value).unwrap_or(&NONE)
    }
}

/// Every secondary index of the store's entries.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Indexes {
    endpoint: SeqIndex<String>,
    endpoint_id: SeqIndex<String>,
    state: SeqIndex<DeliveryState>,
}

impl Indexes {
    /// Indexes a new entry.
    pub(super) fn add(&mut self, delivery: &Delivery, seq: u64) {
        self.endpoint.insert(delivery.endpoint.as_str(), seq);
        if let Some(endpoint_id) = &delivery.endpoint_id {
            self.endpoint_id.insert(endpoint_id.as_str(), seq);
        }
        self.state.insert(&delivery.state, seq);
    }

    /// Forgets a removed entry (evicted or purged).
    pub(super) fn remove(&mut self, delivery: &Delivery, seq: u64) {
        self.endpoint.remove(delivery.endpoint.as_str(), seq);
        if let Some(endpoint_id) = &delivery.endpoint_id {
            self.endpoint_id.remove(endpoint_id.as_str(), seq);
        }
        self.state.remove(&delivery.state, seq);
    }

    /// Moves entry `seq` of `delivery` to `state`: the one way the store changes a state, so
    /// the state index never lags behind it.
    pub(super) fn set_state(&mut self, delivery: &mut Delivery, seq: u64, state: DeliveryState) {
        if delivery.state != state {
            self.state.remove(&delivery.state, seq);
            self.state.insert(&state, seq);
            delivery.state = state;
        }
    }

    /// The sequences `query` has to look at: those of its most selective indexed filter (the
    /// one with the fewest entries), or `None` when it has no indexed filter.
    pub(super) fn candidates(&self, query: &ConversationQuery) -> Option<&BTreeSet<u64>> {
        let endpoint = query.endpoint.as_deref().map(|e| self.endpoint.of(e));
        let endpoint_id = query
            .endpoint_id
            .as_deref()
            .map(|id| self.endpoint_id.of(id));
        let state = query.state.map(|state| self.state.of(&state));
        [endpoint, endpoint_id, state]
            .into_iter()
            .flatten()
            .min_by_key(|seqs| seqs.len())
    }
}
