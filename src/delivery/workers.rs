//! The tasks that run claimed deliveries: a pool that grows on demand, instead of a task
//! spawned per delivery.
//!
//! A claimed delivery goes straight to an idle worker (the one that went idle last, whose
//! memory is warm) over that worker's own channel, or to a new worker when none is idle. The
//! pool never holds a queue: every claim already holds the claim budget (or a parked place),
//! so there are never more workers than the claims the engine may hold at once, the same
//! bound as a task per delivery. A worker idle for [`IDLE`] ends.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::dispatch::run;
use super::engine::Shared;
use super::model::Claim;

/// How long an idle worker waits for a delivery before it ends.
const IDLE: Duration = Duration::from_secs(30);

/// A claimed delivery, its claim budget, and the engine it belongs to.
struct Job {
    shared: Arc<Shared>,
    claim: Claim,
    budget: OwnedSemaphorePermit,
}

/// The idle workers, the last one to go idle at the end.
#[derive(Default)]
pub(super) struct Workers {
    idle: Mutex<Vec<oneshot::Sender<Job>>>,
}

impl Workers {
    fn lock(&self) -> MutexGuard<'_, Vec<oneshot::Sender<Job>>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `claim` on an idle worker, or on a new one.
    pub(super) fn start(
        &self,
        runtime: &tokio::runtime::Handle,
        shared: Arc<Shared>,
        claim: Claim,
        budget: OwnedSemaphorePermit,
    ) {
        let mut job = Job {
            shared,
            claim,
            budget,
        };
        loop {
            let Some(worker) = self.lock().pop() else {
                break;
            };
            // A worker that ended (idle too long) gives the job back.
            match worker.send(job) {
                Ok(()) => return,
                Err(back) => job = back,
            }
        }
        runtime.spawn(work(job));
    }
}

/// A worker: runs its first job, then each job handed to it while idle.
async fn work(first: Job) {
    let mut job = first;
    loop {
        let Job {
            shared,
            claim,
            budget,
        } = job;
        run(shared.clone(), claim, budget).await;
        let (ready, next) = oneshot::channel();
        shared.workers.lock().push(ready);
        // Idle without holding the engine: dropping the engine drops this worker's sender.
        let engine = Arc::downgrade(&shared);
        drop(shared);
        job = match tokio::time::timeout(IDLE, next).await {
            Ok(Ok(job)) => job,
            Ok(Err(_)) => return,
            Err(_idle) => {
                // Its sender (now closed) leaves the idle list with any other ended worker's.
                if let Some(shared) = engine.upgrade() {
                    shared.workers.lock().retain(|worker| !worker.is_closed());
                }
                return;
            }
        };
    }
}
