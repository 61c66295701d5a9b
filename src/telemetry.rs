//! The metrics the crate records through the [`metrics`] facade, described once.
//!
//! [`METRICS`] is the one list of every metric: its name (Prometheus conventions: counters
//! end in `_total`, units in the name), type, labels and help text. [`describe_metrics`]
//! hands it to the installed recorder; the delivery engine and every webhook verifier call it
//! when they are built, so a recorder installed first gets the help texts without more
//! code. `docs/metrics.md` is the same table, checked against this one by a test.
//!
//! Labels are bounded: a scheme's name, a rejection kind, an attempt outcome class, a
//! delivery state and an engine's name, never a URL or an id.
//!
//! ```
//! // With a recorder installed (e.g. `metrics-exporter-prometheus`), once at start-up:
//! tower_webhooks::telemetry::describe_metrics();
//! assert!(tower_webhooks::telemetry::METRICS
//!     .iter()
//!     .any(|metric| metric.name == "webhook_inbound_accepted_total"));
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use metrics::Label;

/// What kind of metric a [`MetricDescription`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricKind {
    /// Only grows; its name ends in `_total`.
    Counter,
    /// A current value, set again on every refresh.
    Gauge,
    /// A distribution of observations (seconds, here).
    Histogram,
}

impl MetricKind {
    /// The Prometheus type name: `counter`, `gauge` or `histogram`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One metric the crate records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricDescription {
    /// The metric's name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The names of its labels (each with a bounded set of values).
    pub labels: &'static [&'static str],
    /// The help text.
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDescription {
    MetricDescription {
        name,
        kind,
        labels,
        help,
    }
}

/// Inbound webhooks verified and handed to the handler.
pub(crate) const INBOUND_ACCEPTED: &str = "webhook_inbound_accepted_total";
/// Inbound webhooks rejected before the handler.
pub(crate) const INBOUND_REJECTED: &str = "webhook_inbound_rejected_total";
/// Inbound duplicates answered without the handler.
pub(crate) const INBOUND_DUPLICATES: &str = "webhook_inbound_duplicates_total";
/// Delivery attempts by outcome class.
pub(crate) const ATTEMPTS: &str = "webhook_attempts_total";
/// How long one attempt took.
pub(crate) const ATTEMPT_DURATION: &str = "webhook_attempt_duration_seconds";
/// Deliveries that reached a final state.
pub(crate) const DELIVERIES_FINISHED: &str = "webhook_deliveries_finished_total";
/// Creation to final state.
pub(crate) const DELIVERY_LATENCY: &str = "webhook_delivery_latency_seconds";
/// Deliveries removed by retention.
pub(crate) const DELIVERIES_PURGED: &str = "webhook_deliveries_purged_total";
/// Unfinished deliveries not claimed.
pub(crate) const QUEUE_DEPTH: &str = "webhook_queue_depth";
/// Deliveries claimed in the store.
pub(crate) const IN_FLIGHT: &str = "webhook_in_flight";
/// Attempts this process is running.
pub(crate) const ATTEMPTS_RUNNING: &str = "webhook_attempts_running";
/// Age of the oldest due delivery.
pub(crate) const OLDEST_DUE_AGE: &str = "webhook_oldest_due_age_seconds";

/// Every metric the crate records (`docs/metrics.md` is this table).
pub const METRICS: &[MetricDescription] = &[
    metric(
        INBOUND_ACCEPTED,
        MetricKind::Counter,
        &["scheme"],
        "Inbound webhooks whose signature verified and that were handed to the handler.",
    ),
    metric(
        INBOUND_REJECTED,
        MetricKind::Counter,
        &["scheme", "kind"],
        "Inbound webhooks rejected before the handler, by rejection kind (the problem type slug).",
    ),
    metric(
        INBOUND_DUPLICATES,
        MetricKind::Counter,
        &["scheme"],
        "Inbound duplicates of processed webhooks, acknowledged without calling the handler.",
    ),
    metric(
        ATTEMPTS,
        MetricKind::Counter,
        &["engine", "outcome"],
        "Delivery attempts, by outcome (status class, timeout, connect, network, refused, sign_failed).",
    ),
    metric(
        ATTEMPT_DURATION,
        MetricKind::Histogram,
        &["engine", "outcome"],
        "Duration of one delivery attempt, in seconds.",
    ),
    metric(
        DELIVERIES_FINISHED,
        MetricKind::Counter,
        &["engine", "state"],
        "Deliveries that reached a final state (delivered, failed, refused).",
    ),
    metric(
        DELIVERY_LATENCY,
        MetricKind::Histogram,
        &["engine", "state"],
        "Seconds from a delivery's creation to its final state.",
    ),
    metric(
        DELIVERIES_PURGED,
        MetricKind::Counter,
        &["engine", "state"],
        "Finished deliveries removed from the store by retention.",
    ),
    metric(
        QUEUE_DEPTH,
        MetricKind::Gauge,
        &["engine"],
        "Unfinished deliveries in the store that no worker has claimed.",
    ),
    metric(
        IN_FLIGHT,
        MetricKind::Gauge,
        &["engine"],
        "Deliveries claimed (leased) in the store, by any replica.",
    ),
    metric(
        ATTEMPTS_RUNNING,
        MetricKind::Gauge,
        &["engine"],
        "Delivery attempts this process is running now.",
    ),
    metric(
        OLDEST_DUE_AGE,
        MetricKind::Gauge,
        &["engine"],
        "Seconds the oldest due, unclaimed delivery has been waiting.",
    ),
];

/// Describes every metric of [`METRICS`] (help text, unit) to the installed recorder.
///
/// Called when a `DeliveryEngine` or a [`WebhookVerifier`](crate::inbound::WebhookVerifier)
/// (every signature layer has one) is built; call it yourself after installing a recorder
/// late.
pub fn describe_metrics() {
    for metric in METRICS {
        let unit = metric
            .name
            .ends_with("_seconds")
            .then_some(metrics::Unit::Seconds);
        match (metric.kind, unit) {
            (MetricKind::Counter, _) => metrics::describe_counter!(metric.name, metric.help),
            (MetricKind::Gauge, Some(unit)) => {
                metrics::describe_gauge!(metric.name, unit, metric.help)
            }
            (MetricKind::Gauge, None) => metrics::describe_gauge!(metric.name, metric.help),
            (MetricKind::Histogram, Some(unit)) => {
                metrics::describe_histogram!(metric.name, unit, metric.help)
            }
            (MetricKind::Histogram, None) => {
                metrics::describe_histogram!(metric.name, metric.help)
            }
        }
    }
}

/// A label value that lives as long as the program: one copy per distinct value, so that
/// a label taken from a name given at start-up (a scheme's, an engine's) costs no allocation
/// when a metric is recorded.
pub(crate) fn interned(value: &str) -> &'static str {
    static VALUES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut values = VALUES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(value) = values.get(value) {
        return value;
    }
    // Bounded: one per distinct scheme or engine name, set up when a layer or an engine is
    // built, never per request.
    let value: &'static str = Box::leak(value.to_owned().into_boxed_str());
    values.insert(value);
    value
}

/// The one-label set `key = value`, made once per distinct pair (see [`interned`]), so
/// that a metric key built from it is static.
pub(crate) fn label(key: &'static str, value: &str) -> &'static [Label; 1] {
    type Labels = HashMap<(&'static str, &'static str), &'static [Label; 1]>;
    static LABELS: OnceLock<Mutex<Labels>> = OnceLock::new();
    let value = interned(value);
    let mut labels = LABELS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    labels
        .entry((key, value))
        .or_insert_with(|| Box::leak(Box::new([Label::from_static_parts(key, value)])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_and_only_counters_do() {
        for metric in METRICS {
            assert_eq!(
                metric.name.ends_with("_total"),
                metric.kind == MetricKind::Counter,
                "{}",
                metric.name
            );
            assert!(metric.name.starts_with("webhook_"), "{}", metric.name);
            assert!(!metric.help.is_empty());
        }
    }

    #[test]
    fn labels_are_bounded() {
        for metric in METRICS {
            for label in metric.labels {
                assert!(
                    ["scheme", "kind", "engine", "outcome", "state"].contains(label),
                    "{}: unbounded label {label}",
                    metric.name
                );
            }
        }
    }

    #[test]
    fn interned_values_are_shared() {
        let a = interned(&String::from("engine-a"));
        let b = interned("engine-a");
        assert!(std::ptr::eq(a, b));
        assert!(std::ptr::eq(
            label("scheme", "x"),
            label("scheme", &String::from("x"))
        ));
    }
}
