//! One forwarded run: what the layer knows about it, how its result becomes a delivery body.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;

use super::layer::Config;
use super::BodyMode;
use crate::delivery::{display_endpoint, CapacitySlot, DeliveryEngine, EnqueueError};
use crate::delivery::{Delivery, SigningSpec, Source};

/// A run whose result will be delivered.
pub(crate) struct Job {
    pub(crate) engine: DeliveryEngine,
    /// The capacity slot, until the delivery (or its placeholder) is stored.
    pub(crate) reservation: Option<CapacitySlot>,
    /// Whether a placeholder is stored (async mode): the result completes it.
    pub(crate) held: bool,
    pub(crate) run_id: String,
    pub(crate) endpoint: String,
    pub(crate) signing: Option<SigningSpec>,
    pub(crate) source: Source,
    pub(crate) body_mode: BodyMode,
    pub(crate) capture_limit: usize,
    pub(crate) started: Instant,
}

/// The inner service's result, as captured.
pub(crate) struct RunResult {
    pub(crate) status: StatusCode,
    pub(crate) json: bool,
    pub(crate) body: Bytes,
    /// Why the body is missing or incomplete (a panic, an error, the capture limit, …).
    pub(crate) error: Option<String>,
}

impl RunResult {
    pub(crate) fn failed(status: StatusCode, error: String) -> Self {
        Self {
            status,
            json: false,
            body: Bytes::new(),
            error: Some(error),
        }
    }
}

/// Whether a response's content type is JSON (or absent, when the body may still be JSON).
pub(crate) fn may_be_json(headers: &HeaderMap) -> bool {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(value) => {
            let essence = value.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence
                    .rsplit_once('+')
                    .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    run_id: &'a str,
    run_time_ms: f64,
    status_code: u16,
    timestamp: i64,
    result: EnvelopeResult<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EnvelopeResult<'a> {
    Json(&'a RawValue),
    Text(Cow<'a, str>),
    Null(Option<()>),
}

impl Job {
    /// A run through `config`'s engine, holding `reservation` until its delivery is stored.
    pub(super) fn new(
        config: &Config,
        reservation: CapacitySlot,
        run_id: String,
        endpoint: String,
        signing: Option<SigningSpec>,
        source: Source,
    ) -> Self {
        Self {
            engine: config.engine.clone(),
            reservation: Some(reservation),
            held: false,
            run_id,
            endpoint,
            signing,
            source,
            body_mode: config.body_mode,
            capture_limit: config.capture_limit,
            started: Instant::now(),
        }
    }

    /// The delivery body for `result`: the envelope, or the raw body when asked for and the run
    /// succeeded (a failure has no body of its own to send).
    pub(crate) fn body(&self, result: &RunResult) -> Bytes {
        if self.body_mode == BodyMode::Raw && result.error.is_none() {
            return result.body.clone();
        }
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let raw = if result.json && result.error.is_none() {
            serde_json::from_slice::<&RawValue>(&result.body).ok()
        } else {
            None
        };
        let value = match raw {
            Some(raw) => EnvelopeResult::Json(raw),
            None if result.error.is_some() && result.body.is_empty() => EnvelopeResult::Null(None),
            None => EnvelopeResult::Text(String::from_utf8_lossy(&result.body)),
        };
        let envelope = Envelope {
            run_id: &self.run_id,
            run_time_ms: (elapsed * 100.0).round() / 100.0,
            status_code: result.status.as_u16(),
            timestamp,
            result: value,
            error: result.error.as_deref(),
        };
        // Sized once for the result and the envelope's fields (about 110 bytes), so the
        // buffer does not grow by doubling. A struct of strings, numbers and already-valid
        // JSON always serialises.
        let mut buffer = Vec::with_capacity(result.body.len() + self.run_id.len() + 128);
        match serde_json::to_writer(&mut buffer, &envelope) {
            Ok(()) => Bytes::from(buffer),
            Err(_) => Bytes::new(),
        }
    }

    /// The delivery of `body`.
    fn delivery(&self, body: Bytes) -> Delivery {
        let mut delivery = Delivery::new(self.run_id.clone(), self.endpoint.clone(), body)
            .with_source(self.source.clone());
        if let Some(signing) = &self.signing {
            delivery = delivery.with_signing(signing.clone());
        }
        delivery
    }

    /// Async mode: stores a placeholder before the caller is answered, so an accepted run is
    /// delivered even if the process dies during it (as an interrupted run, status 500).
    pub(crate) async fn hold(&mut self) -> Result<(), EnqueueError> {
        let Some(reservation) = self.reservation.take() else {
            return Ok(());
        };
        let interrupted = RunResult::failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the run was interrupted before it finished (the server stopped)".into(),
        );
        let placeholder = self.delivery(self.body(&interrupted));
        self.engine.hold(reservation, placeholder).await?;
        self.held = true;
        Ok(())
    }

    /// Turns the result into a delivery and hands it to the engine (awaits the store).
    pub(crate) async fn deliver(mut self, result: RunResult) {
        if let Some(error) = &result.error {
            tracing::warn!(run_id = %self.run_id, error = %error, "forwarded run failed; delivering the error");
        }
        let body = self.body(&result);
        if self.held {
            if let Err(err) = self.engine.complete_held(&self.run_id, body).await {
                tracing::error!(run_id = %self.run_id, endpoint = %display_endpoint(&self.endpoint), error = %err, "webhook delivery could not be completed");
            }
            return;
        }
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        // The run's strings move into the delivery; the log line of a refusal reads them back.
        let mut delivery = Delivery::new(self.run_id, self.endpoint, body).with_source(self.source);
        if let Some(signing) = self.signing {
            delivery = delivery.with_signing(signing);
        }
        let (run_id, endpoint) = (delivery.id.clone(), delivery.endpoint.clone());
        if let Err(err) = self.engine.enqueue(reservation, delivery).await {
            tracing::error!(run_id = %run_id, endpoint = %display_endpoint(&endpoint), error = %err, "webhook delivery could not be queued");
        }
    }

    /// [`deliver`](Self::deliver) as a [`PendingStore`] that its waiter drives.
    pub(crate) fn into_store(self, result: RunResult) -> PendingStore {
        PendingStore(Some(Box::pin(self.deliver(result))))
    }

    /// [`deliver`](Self::deliver) in a background task (the service failed: nobody waits).
    pub(crate) fn deliver_in_background(self, result: RunResult) {
        drop(self.into_store(result));
    }
}

/// A delivery being handed to the engine, driven by the poll that waits for it (the response
/// body's last frame, or the response future of an empty body): no task is spawned per
/// response. Dropped before it is done (the caller went away), it finishes in a background
/// task, so an accepted run is never lost with its caller.
#[must_use = "dropping it moves the store write to a background task"]
pub(crate) struct PendingStore(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Future for PendingStore {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(store) = self.0.as_mut() {
            ready!(store.as_mut().poll(cx));
            self.0 = None;
        }
        Poll::Ready(())
    }
}

impl Drop for PendingStore {
    fn drop(&mut self) {
        let Some(store) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(store);
            }
            Err(_) => tracing::error!(
                "webhook delivery dropped: the response finished outside a Tokio runtime"
            ),
        }
    }
}

/// The copy of a sync-mode response body made while it streams to the caller.
pub(crate) struct Capture {
    job: Job,
    status: StatusCode,
    json: bool,
    chunks: Vec<Bytes>,
    size: usize,
    overflow: bool,
}

impl Capture {
    pub(crate) fn new(job: Job, status: StatusCode, headers: &HeaderMap) -> Self {
        Self {
            status,
            json: may_be_json(headers),
            chunks: Vec::new(),
            size: 0,
            overflow: false,
            job,
        }
    }

    pub(crate) fn push(&mut self, data: &Bytes) {
        if self.overflow {
            return;
        }
        if self.size + data.len() > self.job.capture_limit {
            self.overflow = true;
            self.chunks = Vec::new();
            return;
        }
        self.size += data.len();
        self.chunks.push(data.clone());
    }

    /// Hands the captured result to the engine in the background; `note` says why it is
    /// incomplete.
    pub(crate) fn finish(self: Box<Self>, note: Option<String>) {
        drop(self.into_store(note));
    }

    /// The captured result's delivery, stored once the returned future completes.
    pub(crate) fn into_store(self: Box<Self>, note: Option<String>) -> PendingStore {
        let Capture {
            job,
            status,
            json,
            chunks,
            size,
            overflow,
        } = *self;
        let error = if overflow {
            Some(format!(
                "the response body is larger than the capture limit of {} bytes",
                job.capture_limit
            ))
        } else {
            note
        };
        let body = match chunks.len() {
            _ if error.is_some() => Bytes::new(),
            0 => Bytes::new(),
            1 => chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut buf = BytesMut::with_capacity(size);
                for chunk in chunks {
                    buf.extend_from_slice(&chunk);
                }
                buf.freeze()
            }
        };
        job.into_store(RunResult {
            status,
            json,
            body,
            error,
        })
    }
}

/// An `X-Request-Id` header value for a run id (uuids always fit).
pub(crate) fn request_id_value(run_id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(run_id).ok()
}
