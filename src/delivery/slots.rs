//! The engine's global attempt slots, handed out round-robin over owners.
//!
//! A free slot goes to a waiting attempt at once. When none is free, each owner with waiting
//! attempts has its own queue and a released slot goes to the first waiter of the owner whose
//! turn it is; that owner then moves to the back of the turn. An owner with many waiting
//! attempts therefore gets one slot per round like every other, however early its attempts
//! queued (round-robin with an equal cost per attempt: deficit round-robin's special case).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::FastMap;

#[derive(Debug, Default)]
struct State {
    free: usize,
    waiting: FastMap<String, VecDeque<oneshot::Sender<SlotPermit>>>,
    /// Owners with waiting attempts, the next to be served first.
    turn: VecDeque<String>,
}

/// The slots; shared by every attempt of the engine.
#[derive(Debug)]
pub(crate) struct FairSlots {
    total: usize,
    state: Mutex<State>,
}

/// One slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct SlotPermit {
    slots: Option<Arc<FairSlots>>,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release();
        }
    }
}

impl FairSlots {
    pub(crate) fn new(total: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            state: Mutex::new(State {
                free: total,
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Slots taken now.
    pub(crate) fn in_use(&self) -> usize {
        self.total - self.lock().free
    }

    /// A slot for one of `owner`'s attempts, waiting for its turn when none is free; `None`
    /// only when the slots are gone (the engine was dropped).
    pub(crate) async fn acquire(self: &Arc<Self>, owner: &str) -> Option<SlotPermit> {
        let granted = {
            let mut state = self.lock();
            if state.free > 0 {
                state.free -= 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                let queue = state.waiting.entry(owner.to_owned()).or_default();
                if queue.is_empty() {
                    state.turn.push_back(owner.to_owned());
                }
                state
                    .waiting
                    .get_mut(owner)
                    .expect("inserted above")
                    .push_back(tx);
                Some(rx)
            }
        };
        match granted {
            None => Some(SlotPermit {
                slots: Some(self.clone()),
            }),
            Some(rx) => rx.await.ok(),
        }
    }

    /// Gives a slot to the next owner's first waiter still waiting, or frees it.
    fn release(self: Arc<Self>) {
        loop {
            let next = {
                let mut state = self.lock();
                let Some(owner) = state.turn.pop_front() else {
                    state.free += 1;
                    return;
                };
                let queue = state
                    .waiting
                    .get_mut(&owner)
                    .expect("an owner in turn waits");
                let sender = queue.pop_front().expect("an owner in turn has a waiter");
                if queue.is_empty() {
                    state.waiting.remove(&owner);
                } else {
                    state.turn.push_back(owner);
                }
                sender
            };
            // Sent outside the lock; a waiter that gave up hands the slot back here.
            match next.send(SlotPermit {
                slots: Some(self.clone()),
            }) {
                Ok(()) => return,
                Err(mut unclaimed) => {
                    unclaimed.slots = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn released_slots_go_round_robin_over_owners() {
        let slots = FairSlots::new(1);
        let held = slots.acquire("a").await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Owner a queues three attempts before owner b queues one.
        for name in ["a1", "a2", "a3", "b1"] {
            let (waiter, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let permit = waiter.acquire(&name[..1]).await.unwrap();
                order.lock().unwrap().push(name);
                drop(permit);
            }));
            tokio::task::yield_now().await;
            // Each waiter is queued before the next is spawned.
            while slots
                .lock()
                .waiting
                .values()
                .map(VecDeque::len)
                .sum::<usize>()
                < tasks.len()
            {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["a1", "b1", "a2", "a3"]);
        assert_eq!(slots.in_use(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_does_not_keep_the_slot() {
        let slots = FairSlots::new(1);
        let held = slots.acquire("a").await.unwrap();
        let gave_up = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("b").await }
        });
        while slots.lock().turn.is_empty() {
            tokio::task::yield_now().await;
        }
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        assert_eq!(slots.in_use(), 0);
        assert!(slots.acquire("c").await.is_some());
    }
}
