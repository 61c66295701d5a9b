//! The memory store's maintenance: manual re-sends, giving up pending deliveries (a `410
//! Gone`, a deleted endpoint), retention's purge and a held delivery's update. Each goes
//! through the store's indexes, so its cost follows what it changes, not the table.

use std::time::SystemTime;

use bytes::Bytes;

use super::{Inner, MemoryStore};
use crate::delivery::model::{ConversationQuery, DeliveryState, SigningSpec};
use crate::store::StoreError;

impl MemoryStore {
    /// Moves one final entry back to the queue for a manual attempt.
    pub(super) fn resend_entry(
        inner: &mut Inner,
        id: &str,
        signing: Option<SigningSpec>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let entry = inner
            .entries
            .get_mut(id)
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        if !entry.delivery.state.is_final() {
            return Err(StoreError::NotFinal(id.to_owned()));
        }
        let seq = entry.seq;
        inner
            .index
            .set_state(&mut entry.delivery, seq, DeliveryState::Pending);
        entry.delivery.manual = true;
        entry.delivery.next_attempt_at = now;
        entry.delivery.updated_at = now;
        entry.delivery.last_error = None;
        if let Some(signing) = signing {
            entry.delivery.signing = Some(signing);
        }
        let size = entry.size;
        inner.due.insert((now, seq));
        inner.unfinished += 1;
        if inner.finished.remove(seq) {
            inner.finished_bytes = inner.finished_bytes.saturating_sub(size);
        }
        Ok(())
    }

    pub(super) fn resend_now(
        &self,
        id: &str,
        signing: Option<SigningSpec>,
    ) -> Result<(), StoreError> {
        Self::resend_entry(&mut self.lock(), id, signing, SystemTime::now())
    }

    pub(super) fn resend_matching_now(
        &self,
        query: &ConversationQuery,
        signing: Option<SigningSpec>,
    ) -> Result<usize, StoreError> {
        let state = query.state.unwrap_or(DeliveryState::Failed);
        if !state.is_final() {
            return Err(StoreError::NotFinal(format!("deliveries in state {state}")));
        }
        let query = ConversationQuery {
            state: Some(state),
            ..query.clone()
        };
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let mut inner = self.lock();
        // Newest first, as the SQL stores; through the query's most selective index (its state
        // is set, so there is always one): re-sending one endpoint's deliveries reads only its
        // entries.
        let ids: Vec<String> = inner
            .index
            .candidates(&query)
            .into_iter()
            .flat_map(|seqs| seqs.iter().rev())
            .filter_map(|seq| inner.order.get(seq))
            .filter(|id| {
                inner
                    .entries
                    .get(*id)
                    .is_some_and(|e| query.matches(&e.delivery))
            })
            .take(limit)
            .cloned()
            .collect();
        let now = SystemTime::now();
        for id in &ids {
            Self::resend_entry(&mut inner, id, signing.clone(), now)?;
        }
        Ok(ids.len())
    }

    /// Fails at most `limit` pending deliveries matching `filter` (an endpoint or an endpoint
    /// id) with `reason`. (An in-flight delivery is never abandoned in one process: see
    /// `claim_now`.)
    pub(super) fn give_up_pending(
        &self,
        filter: ConversationQuery,
        reason: &str,
        limit: usize,
    ) -> Vec<String> {
        let pending = filter.state(DeliveryState::Pending);
        let mut guard = self.lock();
        let inner = &mut *guard;
        // Through the endpoint's (or the pending state's) index: a `410 Gone` gives up its
        // endpoint's queue in batches, and a batch must not read every pending delivery. A
        // pending entry's due key is its `next_attempt_at`, as `update_pending_now` relies on.
        let due: Vec<(SystemTime, u64, String)> = inner
            .index
            .candidates(&pending)
            .into_iter()
            .flatten()
            .filter_map(|&seq| {
                let id = inner.order.get(&seq)?;
                let entry = inner.entries.get(id)?;
                pending
                    .matches(&entry.delivery)
                    .then(|| (entry.delivery.next_attempt_at, seq, id.clone()))
            })
            .take(limit)
            .collect();
        let now = SystemTime::now();
        let mut ids = Vec::with_capacity(due.len());
        for (at, seq, id) in due {
            inner.due.remove(&(at, seq));
            if let Some(entry) = inner.entries.get_mut(&id) {
                inner
                    .index
                    .set_state(&mut entry.delivery, seq, DeliveryState::Failed);
                entry.delivery.last_error = Some(reason.to_owned());
                entry.delivery.manual = false;
                entry.delivery.updated_at = now;
                inner.unfinished -= 1;
                inner.finished.push(seq);
                inner.finished_bytes += entry.size;
            }
            ids.push(id);
        }
        self.evict(inner);
        ids
    }

    pub(super) fn purge_now(
        &self,
        state: DeliveryState,
        before: SystemTime,
        limit: usize,
    ) -> usize {
        if !state.is_final() {
            return 0;
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        // Oldest final first; the scan stops at `limit`, so each retention batch reads only
        // what it purges and what it keeps before that.
        let old: Vec<u64> = inner
            .finished
            .iter()
            .filter(|seq| {
                inner
                    .order
                    .get(seq)
                    .and_then(|id| inner.entries.get(id))
                    .is_some_and(|e| e.delivery.state == state && e.delivery.updated_at < before)
            })
            .take(limit)
            .collect();
        for &seq in &old {
            inner.finished.remove(seq);
            Self::remove_entry(inner, seq);
        }
        old.len()
    }

    pub(super) fn update_pending_now(
        &self,
        id: &str,
        body: Option<Bytes>,
        due: SystemTime,
    ) -> Result<(), StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let entry = inner
            .entries
            .get_mut(id)
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        if entry.delivery.state != DeliveryState::Pending || entry.delivery.attempts > 0 {
            return Err(StoreError::LeaseLost(id.to_owned()));
        }
        inner
            .due
            .remove(&(entry.delivery.next_attempt_at, entry.seq));
        inner.due.insert((due, entry.seq));
        entry.delivery.next_attempt_at = due;
        entry.delivery.updated_at = SystemTime::now();
        if let Some(body) = body {
            entry.delivery.body = body;
            entry.size = entry.delivery.approx_size();
        }
        Ok(())
    }
}
