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
