//! The outcome of a batch of deliveries: how many ended in each state, how many attempts they
//! took, and the attempts' latency percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tower_webhooks::delivery::{Conversation, DeliveryState};

/// Counts and latencies of finished (or still pending) deliveries.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    states: BTreeMap<&'static str, usize>,
    attempts: u64,
    latencies: Vec<Duration>,
    /// Deliveries the store no longer holds.
    pub(crate) lost: usize,
}

impl Summary {
    /// Adds one delivery and all its attempts.
    pub(crate) fn add(&mut self, conversation: &Conversation) {
        self.add_attempts(conversation, conversation.attempts.len());
    }

    /// Adds one delivery and only its last `new` attempts (those of a re-send, not the
    /// history before it).
    pub(crate) fn add_attempts(&mut self, conversation: &Conversation, new: usize) {
        *self
            .states
            .entry(conversation.delivery.state.as_str())
            .or_default() += 1;
        let attempts = &conversation.attempts;
        let new = &attempts[attempts.len().saturating_sub(new)..];
        self.attempts += new.len() as u64;
        self.latencies
            .extend(new.iter().map(|attempt| attempt.latency));
    }

    /// How many deliveries are in `state`.
    pub(crate) fn count(&self, state: DeliveryState) -> usize {
        self.states.get(state.as_str()).copied().unwrap_or(0)
    }

    /// The latency below which `percent` % of the attempts answered (nearest rank).
    fn percentile(&self, percent: usize) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = (sorted.len() * percent).div_ceil(100).max(1);
        sorted.get(rank - 1).copied()
    }

    /// The rows shown by [`Summary::table`] and [`Summary::to_json`]: every final state, and
    /// pending (still retrying) when there is any.
    fn rows(&self) -> Vec<(&'static str, usize)> {
        let mut rows = vec![
            ("delivered", self.count(DeliveryState::Delivered)),
            ("failed", self.count(DeliveryState::Failed)),
            ("refused", self.count(DeliveryState::Refused)),
        ];
        let pending = self.count(DeliveryState::Pending) + self.count(DeliveryState::InFlight);
        if pending > 0 {
            rows.push(("pending", pending));
        }
        if self.lost > 0 {
            rows.push(("unknown", self.lost));
        }
        rows
    }

    /// A two-column table.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        for (label, count) in self.rows() {
            out.push_str(&format!("  {label:<12} {count:>8}\n"));
        }
        out.push_str(&format!("  {:<12} {:>8}\n", "attempts", self.attempts));
        for (label, percent) in [("latency p50", 50), ("latency p99", 99)] {
            let shown = self
                .percentile(percent)
                .map_or("-".to_owned(), |latency| format!("{:.1?}", latency));
            out.push_str(&format!("  {label:<12} {shown:>8}\n"));
        }
        out
    }

    /// The same figures as one JSON object (latencies in milliseconds).
    pub(crate) fn to_json(&self) -> Value {
        let mut output = json!({
            "attempts": self.attempts,
            "latency_ms": {
                "p50": self.percentile(50).map(|d| d.as_secs_f64() * 1e3),
                "p99": self.percentile(99).map(|d| d.as_secs_f64() * 1e3),
            },
        });
        for (label, count) in self.rows() {
            output[label] = json!(count);
        }
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut summary = Summary {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..Summary::default()
        };
        assert_eq!(summary.percentile(50), Some(Duration::from_millis(50)));
        assert_eq!(summary.percentile(99), Some(Duration::from_millis(99)));
        summary.latencies = vec![Duration::from_millis(7)];
        assert_eq!(summary.percentile(99), Some(Duration::from_millis(7)));
        assert_eq!(Summary::default().percentile(50), None);
    }
}
