//! Per-request observability of the signature layer: the `webhook.verify` span and the
//! inbound counters of [`telemetry`](crate::telemetry).
//!
//! Lean on purpose: the span is boxed only when a subscriber wants it (a disabled span is
//! a pointer-sized `None` in the response future), and the accepted and duplicate counters'
//! keys are built (and hashed) once per scheme name when the layer is built, so recording
//! them allocates and hashes nothing.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use metrics::{Key, Label, Level, Metadata};
use tracing::field::{display, Empty};
use tracing::Span;

use super::rejection::Rejection;
use crate::scheme::Verified;
use crate::telemetry::{label, INBOUND_ACCEPTED, INBOUND_DUPLICATES, INBOUND_REJECTED};

static METADATA: Metadata<'static> =
    Metadata::new("tower_webhooks::inbound", Level::INFO, Some(module_path!()));

/// A scheme's label and counter keys, made once per scheme name: a thin pointer, as it rides
/// in every response future.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchemeLabel(&'static SchemeKeys);

#[derive(Debug)]
struct SchemeKeys {
    labels: &'static [Label; 1],
    // A key hashes its name and labels when it is made: made here, that is once per scheme.
    accepted: Key,
    duplicates: Key,
}

impl SchemeLabel {
    /// The label of the scheme called `name`.
    pub(crate) fn new(name: &str) -> Self {
        static KEYS: OnceLock<Mutex<HashMap<&'static str, &'static SchemeKeys>>> = OnceLock::new();
        let labels = label("scheme", name);
        let mut keys = KEYS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: one per distinct scheme name, when a layer or verifier is built.
        Self(keys.entry(labels[0].value()).or_insert_with(|| {
            Box::leak(Box::new(SchemeKeys {
                labels,
                accepted: Key::from_static_parts(INBOUND_ACCEPTED, labels),
                duplicates: Key::from_static_parts(INBOUND_DUPLICATES, labels),
            }))
        }))
    }

    fn name(self) -> &'static str {
        self.0.labels[0].value()
    }
}

/// Whether anything could see an INFO span: a `tracing` subscriber that wants INFO, or (with
/// `tracing`'s `log` feature, which axum's default `tower-log` turns on) a `log` logger at
/// INFO or more, which `tracing` writes span records to while no subscriber is set. Read
/// before building the span: two loads instead of its value set, its log-level checks and
/// its drop, on every request of an application that traces nothing.
#[inline]
fn span_observed() -> bool {
    let traced = tracing::level_filters::STATIC_MAX_LEVEL >= tracing::Level::INFO
        && tracing::level_filters::LevelFilter::current() >= tracing::Level::INFO;
    traced || log::max_level() >= log::LevelFilter::Info
}

/// One request's span and scheme label.
pub(crate) struct Telemetry {
    scheme: SchemeLabel,
    span: Option<Box<Span>>,
}

impl Telemetry {
    /// Opens the request's `webhook.verify` span (if a subscriber is interested).
    #[inline]
    pub(crate) fn start(scheme: SchemeLabel) -> Self {
        if !span_observed() {
            return Self { scheme, span: None };
        }
        let span = tracing::info_span!(
            target: "tower_webhooks::inbound",
            "webhook.verify",
            scheme = scheme.name(),
            outcome = Empty,
            message_id = Empty,
        );
        Self {
            scheme,
            span: (!span.is_disabled()).then(|| Box::new(span)),
        }
    }

    /// Enters the span for the duration of one poll.
    #[inline]
    pub(crate) fn enter(&self) -> Option<tracing::span::Entered<'_>> {
        self.span.as_deref().map(Span::enter)
    }

    /// The span, for a future to be instrumented with (a disabled one without a subscriber).
    pub(crate) fn span(&self) -> Span {
        self.span.as_deref().cloned().unwrap_or_else(Span::none)
    }

    /// The request passed verification and is handed to the handler. `verified` is only
    /// called when the span records it (finding it in the extensions is a map lookup).
    #[inline]
    pub(crate) fn accepted<'v>(&self, verified: impl FnOnce() -> Option<&'v Verified>) {
        let key = &self.scheme.0.accepted;
        metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA)).increment(1);
        if self.span.is_some() {
            self.record("accepted", verified());
        }
    }

    /// The request was rejected before the handler.
    pub(crate) fn rejected(&self, rejection: &Rejection) {
        let kind = rejection.kind().slug();
        metrics::counter!(INBOUND_REJECTED, "scheme" => self.scheme.name(), "kind" => kind)
            .increment(1);
        self.record(kind, None);
    }

    /// A duplicate of a processed webhook was answered without the handler (`verified` as
    /// for [`Telemetry::accepted`]).
    pub(crate) fn duplicate<'v>(&self, verified: impl FnOnce() -> Option<&'v Verified>) {
        let key = &self.scheme.0.duplicates;
        metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA)).increment(1);
        if self.span.is_some() {
            self.record("duplicate", verified());
        }
    }

    fn record(&self, outcome: &'static str, verified: Option<&Verified>) {
        let Some(span) = self.span.as_deref() else {
            return;
        };
        span.record("outcome", outcome);
        if let Some(id) = verified.and_then(|verified| verified.message_id.as_ref()) {
            span.record("message_id", display(id));
        }
    }
}
