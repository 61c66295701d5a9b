//! What the SQL replay stores share: the table's states and the opportunistic purge.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{ReplayError, ReplayRecord, Reservation};

/// A reserved key's `state` column.
pub(super) const IN_FLIGHT: &str = "inflight";
/// A processed key's `state` column (its `run_id` column holds the record).
pub(super) const DONE: &str = "done";

/// Expired rows deleted by one purge: bounded, so no reservation waits on a long delete.
pub(super) const PURGE_BATCH: i64 = 256;

/// One reservation in this many also purges a batch of expired rows.
const PURGE_EVERY: u64 = 64;

/// How often `reserve` tries again when the row it lost to vanished before it could read it
/// (released by a failed delivery in between).
pub(super) const RESERVE_ATTEMPTS: usize = 3;

/// Decides when a reservation also purges.
#[derive(Debug, Default)]
pub(super) struct PurgeTicker(AtomicU64);

impl PurgeTicker {
    pub(super) fn tick(&self) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1
    }
}

/// The reservation an existing, unexpired row stands for.
pub(super) fn existing(state: &str, run_id: Option<&str>) -> Result<Reservation, ReplayError> {
    match state {
        IN_FLIGHT => Ok(Reservation::InFlight),
        DONE => {
            let run_id = run_id
                .ok_or_else(|| ReplayError::new("a processed replay record has no run id"))?;
            let run_id = uuid::Uuid::parse_str(run_id).map_err(ReplayError::new)?;
            Ok(Reservation::Done(ReplayRecord::new(run_id)))
        }
        other => Err(ReplayError::new(format!(
            "unknown replay record state `{other}`"
        ))),
    }
}

pub(super) fn backend(error: sqlx::Error) -> ReplayError {
    ReplayError::new(error)
}
