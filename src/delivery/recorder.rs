//! Attempt records written in batches (group commit): the attempts that finish while a write
//! is under way are written together by the next one, in one
//! [`record_attempts`](crate::store::DeliveryStore::record_attempts) call.
//!
//! There is no writer task: the first worker to arrive with nothing being written writes
//! (its own record and whatever queued meanwhile); workers that arrive during a write queue
//! their record and wait. When a write ends with records queued, the first of their workers is
//! told to write next. An idle engine therefore writes each record at once, without a hop to
//! another task, and a busy one with a slow store writes one batch per round trip. Each worker
//! waits for its own record's answer, so a delivery is never reported final before its record
//! is stored.

use std::collections::VecDeque;
use std::mem;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::model::AttemptRecord;
use crate::store::{DeliveryStore, StoreError};

/// The answer a waiting worker gets.
enum Reply {
    /// Its record was written (or not).
    Done(Result<(), StoreError>),
    /// Nobody writes: it writes the next batch, starting with its record (handed back).
    Write(Box<AttemptRecord>),
}

type Queued = (AttemptRecord, oneshot::Sender<Reply>);

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// A worker is writing a batch (or was told to).
    writing: bool,
}

/// The engine's queue of attempt records waiting for a write.
#[derive(Default)]
pub(super) struct Recorder {
    state: Mutex<State>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `record` in `store`, in a batch with the records that queued meanwhile.
    pub(super) async fn record(
        &self,
        store: &dyn DeliveryStore,
        record: AttemptRecord,
    ) -> Result<(), StoreError> {
        let (reply, mut answer) = oneshot::channel();
        let write = {
            let mut state = self.lock();
            state.queue.push_back((record, reply));
            !mem::replace(&mut state.writing, true)
        };
        if !write {
            match answer.await {
                Ok(Reply::Done(result)) => return result,
                Ok(Reply::Write(record)) => {
                    let (reply, own) = oneshot::channel();
                    self.lock().queue.push_front((*record, reply));
                    answer = own;
                }
                Err(_) => return Err(interrupted()),
            }
        }
        Writer { recorder: self }.write_batch(store).await;
        match answer.await {
            Ok(Reply::Done(result)) => result,
            Ok(Reply::Write(_)) | Err(_) => Err(interrupted()),
        }
    }
}

/// The worker writing a batch. When it is done (or dropped mid-write, as the runtime shuts
/// down), the first queued worker still waiting writes next, so nobody waits for a writer
/// that is gone.
struct Writer<'a> {
    recorder: &'a Recorder,
}

impl Writer<'_> {
    async fn write_batch(self, store: &dyn DeliveryStore) {
        let batch = mem::take(&mut self.recorder.lock().queue);
        let (records, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let count = records.len();
        let results = match store.record_attempts(records).await {
            Ok(results) if results.len() == count => results,
            Ok(_) => vec![
                Err(StoreError::Backend(
                    "the store answered a batch of attempt records with another count".into()
                ));
                count
            ],
            Err(err) => vec![Err(err); count],
        };
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(Reply::Done(result));
        }
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        let mut state = self.recorder.lock();
        while let Some((record, reply)) = state.queue.pop_front() {
            // A worker that went away meanwhile passes the turn on (its record is dropped:
            // the delivery stays leased and is attempted again when the lease expires).
            if reply.send(Reply::Write(Box::new(record))).is_ok() {
                return;
            }
        }
        state.writing = false;
    }
}

fn interrupted() -> StoreError {
    StoreError::Backend("recording the attempt was interrupted".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use tokio::sync::Semaphore;

    use super::*;
    use crate::delivery::model::{
        Attempt, AttemptOutcome, Claim, Conversation, ConversationQuery, Delivery, DeliveryState,
        Lease, Next,
    };
    use crate::store::{MemoryStore, StoreFuture, StoreStats};

    /// A memory store whose batch writes wait for a gate and are counted.
    struct Gated {
        inner: MemoryStore,
        gate: Arc<Semaphore>,
        batches: Mutex<Vec<usize>>,
    }

    impl DeliveryStore for Gated {
        fn enqueue(&self, delivery: Delivery) -> StoreFuture<'_, ()> {
            self.inner.enqueue(delivery)
        }
        fn enqueue_claimed(
            &self,
            delivery: Delivery,
            until: SystemTime,
        ) -> StoreFuture<'_, Option<Claim>> {
            self.inner.enqueue_claimed(delivery, until)
        }
        fn claim_due(
            &self,
            now: SystemTime,
            limit: usize,
            lease_for: Duration,
        ) -> StoreFuture<'_, Vec<Claim>> {
            self.inner.claim_due(now, limit, lease_for)
        }
        fn record_attempt<'a>(
            &'a self,
            id: &'a str,
            lease: Lease,
            attempt: Attempt,
            next: Next,
        ) -> StoreFuture<'a, ()> {
            self.inner.record_attempt(id, lease, attempt, next)
        }
        fn record_attempts(
            &self,
            records: Vec<AttemptRecord>,
        ) -> StoreFuture<'_, Vec<Result<(), StoreError>>> {
            Box::pin(async move {
                self.batches.lock().unwrap().push(records.len());
                self.gate.acquire().await.unwrap().forget();
                self.inner.record_attempts(records).await
            })
        }
        fn release<'a>(&'a self, id: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
            self.inner.release(id, lease)
        }
        fn next_due(&self) -> StoreFuture<'_, Option<SystemTime>> {
            self.inner.next_due()
        }
        fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Conversation>> {
            self.inner.get(id)
        }
        fn list<'a>(&'a self, query: &'a ConversationQuery) -> StoreFuture<'a, Vec<Conversation>> {
            self.inner.list(query)
        }
        fn stats(&self) -> StoreFuture<'_, StoreStats> {
            self.inner.stats()
        }
    }

    fn delivered(number: u32) -> (Attempt, Next) {
        let attempt = Attempt::new(number, SystemTime::now(), AttemptOutcome::Status(200));
        let next = Next::Final {
            state: DeliveryState::Delivered,
            reason: None,
        };
        (attempt, next)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_that_arrive_during_a_write_go_in_the_next_batch_and_each_gets_its_answer() {
        let store = Arc::new(Gated {
            inner: MemoryStore::new(),
            gate: Arc::new(Semaphore::new(0)),
            batches: Mutex::new(Vec::new()),
        });
        let recorder = Arc::new(Recorder::default());
        let until = SystemTime::now() + Duration::from_secs(60);
        let mut leases = Vec::new();
        for i in 0..5 {
            let delivery = Delivery::new(format!("d{i}"), "http://example.com/", "{}");
            let claim = store
                .enqueue_claimed(delivery, until)
                .await
                .unwrap()
                .unwrap();
            leases.push(claim.lease);
        }
        let record = |i: usize, lease: Lease| {
            let (store, recorder) = (store.clone(), recorder.clone());
            tokio::spawn(async move {
                let (attempt, next) = delivered(1);
                let record = AttemptRecord::new(format!("d{i}"), lease, attempt, next);
                recorder.record(&*store, record).await
            })
        };
        // The first record is being written (held at the gate) ...
        let first = record(0, leases[0]);
        while store.batches.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // ... while four more arrive; one of them has a stale lease.
        let stale = Lease {
            token: leases[4].token + 100,
            ..leases[4]
        };
        let mut rest = Vec::new();
        for (i, lease) in leases.iter().enumerate().skip(1) {
            rest.push(record(i, if i == 4 { stale } else { *lease }));
        }
        while recorder.lock().queue.len() < 4 {
            tokio::task::yield_now().await;
        }
        store.gate.add_permits(2);
        assert_eq!(first.await.unwrap(), Ok(()));
        let mut answers = Vec::new();
        for task in rest {
            answers.push(task.await.unwrap());
        }
        assert_eq!(*store.batches.lock().unwrap(), [1, 4]);
        assert_eq!(answers[..3], [Ok(()), Ok(()), Ok(())]);
        assert_eq!(answers[3], Err(StoreError::LeaseLost("d4".into())));
        for i in 0..4 {
            let conversation = store.get(&format!("d{i}")).await.unwrap().unwrap();
            assert_eq!(conversation.delivery.state, DeliveryState::Delivered);
            assert_eq!(conversation.attempts.len(), 1);
        }
        assert!(
            !recorder.lock().writing,
            "nobody writes once the queue is empty"
        );
    }
}
