//! The tasks that run claimed deliveries: long-lived workers fed through a queue, so a claim
//! costs a queue push and a wake-up instead of a task spawned (and allocated) for each
//! delivery. A claim never waits for another claim's attempt: when no worker is idle, a new
//! one starts with it. Workers are kept (at most as many as ever ran at once, which the claim
//! budget and the parking room bound) and end with their engine.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{select, Either};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tracing::Instrument;

use super::attempt::display_endpoint;
use super::engine::{lock, Shared};
use super::model::Claim;

/// A claimed delivery on its way to a worker.
struct Job {
    shared: Arc<Shared>,
    claim: Claim,
    budget: OwnedSemaphorePermit,
}

/// The engine's workers and the claims waiting for one.
#[derive(Default)]
pub(super) struct WorkerPool {
    jobs: Mutex<VecDeque<Job>>,
    /// Workers waiting for a job that no claim has been promised to yet.
    idle: AtomicUsize,
    ready: Notify,
    /// Workers started so far.
    started: AtomicUsize,
}

impl WorkerPool {
    /// Runs `claim` on an idle worker, or on a new one when none is idle. Called inside the
    /// engine's runtime.
    pub(super) fn start(
        self: &Arc<Self>,
        shared: Arc<Shared>,
        claim: Claim,
        budget: OwnedSemaphorePermit,
    ) {
        let job = Job {
            shared,
            claim,
            budget,
        };
        let promised = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |idle| {
                idle.checked_sub(1)
            })
            .is_ok();
        if promised {
            lock(&self.jobs).push_back(job);
            self.ready.notify_one();
        } else {
            let stop = job.shared.stop.subscribe();
            self.started.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(work(self.clone(), stop, job));
        }
    }
}

#[cfg(test)]
impl WorkerPool {
    /// Workers started so far.
    pub(super) fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }
}

/// One worker: runs its first job, then whatever the queue holds, and waits for more until
/// its engine is gone (the engine's stop sender dropped).
async fn work(pool: Arc<WorkerPool>, mut stop: watch::Receiver<bool>, first: Job) {
    let mut idle = IdleGuard {
        pool: &pool,
        counted: false,
    };
    let mut job = Some(first);
    loop {
        if let Some(Job {
            shared,
            claim,
            budget,
        }) = job.take()
        {
            run(shared, claim, budget).await;
        }
        // Registered as a waiter before the queue is read: a job pushed after the read wakes
        // this worker. A notification it receives but does not wait for (it found a job in
        // the queue) goes to another waiter when `ready` is dropped.
        let mut ready = pin!(pool.ready.notified());
        ready.as_mut().enable();
        job = lock(&pool.jobs).pop_front();
        if job.is_some() {
            continue;
        }
        pool.idle.fetch_add(1, Ordering::AcqRel);
        idle.counted = true;
        let engine_gone = pin!(async {
            // A stop (shutdown) leaves the worker waiting: re-sent deliveries may still come.
            while stop.changed().await.is_ok() {}
        });
        match select(ready, engine_gone).await {
            // The claim that promised itself this worker took it off the idle count.
            Either::Left(_) => {
                idle.counted = false;
                job = lock(&pool.jobs).pop_front();
            }
            Either::Right(_) => return,
        }
    }
}

/// Takes a worker that stops while counted idle (its runtime shut down, or its engine is
/// gone) off the idle count, so that no claim is promised to it. When a claim was promised
/// to it already, that claim waits in the queue for the next worker, which reads the queue
/// after its first job.
struct IdleGuard<'a> {
    pool: &'a WorkerPool,
    counted: bool,
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        if self.counted {
            let _ = self
                .pool
                .idle
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |idle| {
                    idle.checked_sub(1)
                });
        }
    }
}

/// A claimed delivery's run on a worker.
async fn run(shared: Arc<Shared>, claim: Claim, budget: OwnedSemaphorePermit) {
    let Claim { delivery, lease } = claim;
    let span = tracing::info_span!(
        "webhook.delivery",
        id = %delivery.id,
        endpoint = %display_endpoint(&delivery.endpoint),
        attempt = delivery.attempts + 1,
    );
    shared
        .run_claim(delivery, lease, budget)
        .instrument(span)
        .await;
    // Its claim budget is free again: the dispatcher is woken if it stopped for want of it
    // (a retry wakes it from `conclude`, for its due time). Not waking it after every
    // delivery spares the store a claim and a `next_due` query per finished attempt.
    if shared.starved.swap(false, Ordering::SeqCst) {
        shared.wake.notify_one();
    }
}
