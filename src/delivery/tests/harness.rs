//! The engine tests' harness: a [`ManualClock`] the engine reads instead of the system time,
//! an [`Endpoint`] made with `tower::service_fn` that answers each delivery from a script, and
//! a [`Harness`] that puts them together with a [`FakeStore`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::sync::{mpsc, Notify};

use super::fake_store::{Call, FakeStore};
use crate::delivery::engine::lock;
use crate::delivery::{
    BoxError, Delivery, DeliveryClient, DeliveryEngine, DeliveryReport, EngineBuilder, Policy,
};
use crate::time::Clock;

pub(super) const URL: &str = "http://hooks.example.com/in";

/// A Standard Webhooks secret (base64 after the prefix).
pub(super) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The tests' wall-clock start: years from the system time, so an engine that read the system
/// clock would show it (and deliveries made with [`Delivery::new`] are due at once).
pub(super) fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(2_000_000_000)
}

/// A wall clock that stands still until the test moves it.
#[derive(Clone)]
pub(super) struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    pub(super) fn new() -> Self {
        Self(Arc::new(Mutex::new(t0())))
    }

    pub(super) fn advance(&self, by: Duration) {
        *lock(&self.0) += by;
    }

    pub(super) fn clock(&self) -> Clock {
        let time = self.0.clone();
        Clock::new(move || *lock(&time))
    }
}

/// Waits until `ready` holds, checking it each time `changed` is notified; fails the test
/// after an hour of (paused, so instant) tokio time.
pub(super) async fn wait_until(changed: &Notify, what: &str, ready: impl Fn() -> bool) {
    let wait = async {
        loop {
            let mut notified = pin!(changed.notified());
            notified.as_mut().enable();
            if ready() {
                return;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(3600), wait)
        .await
        .is_err()
    {
        panic!("{what} never reached the expected state");
    }
}

/// What the endpoint answers to one request.
pub(super) enum Answer {
    Status(u16),
    RetryAfter(u16, String),
    /// Never answers (the attempt times out).
    Hang,
    /// Fails as a transport does: an error whose source is this I/O error.
    Fail(io::ErrorKind),
}

/// A transport failure as hyper reports it: the I/O error is the source, not the error.
#[derive(Debug)]
pub(super) struct Transport(io::Error);

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("transport error")
    }
}

impl std::error::Error for Transport {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// One request the endpoint received.
#[derive(Clone)]
pub(super) struct Seen {
    pub(super) id: String,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// The receiving end, as a `service_fn` client: answers each delivery (by its
/// `X-Request-Id`) from its script, `200` once the script is spent, and keeps every request.
#[derive(Clone, Default)]
pub(super) struct Endpoint {
    pub(super) answers: Arc<Mutex<HashMap<String, VecDeque<Answer>>>>,
    pub(super) seen: Arc<Mutex<Vec<Seen>>>,
    pub(super) arrived: Arc<Notify>,
}

impl Endpoint {
    pub(super) fn answer(self, id: &str, answers: impl IntoIterator<Item = Answer>) -> Self {
        lock(&self.answers)
            .entry(id.to_owned())
            .or_default()
            .extend(answers);
        self
    }

    pub(super) fn client(&self) -> DeliveryClient {
        let endpoint = self.clone();
        DeliveryClient::from_service(tower::service_fn(move |request: Request<Full<Bytes>>| {
            let endpoint = endpoint.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await?.to_bytes();
                let id = parts.headers["x-request-id"].to_str()?.to_owned();
                let answer = lock(&endpoint.answers)
                    .get_mut(&id)
                    .and_then(VecDeque::pop_front);
                lock(&endpoint.seen).push(Seen {
                    id,
                    headers: parts.headers,
                    body,
                });
                endpoint.arrived.notify_waiters();
                let (status, retry_after) = match answer.unwrap_or(Answer::Status(200)) {
                    Answer::Status(status) => (status, None),
                    Answer::RetryAfter(status, value) => (status, Some(value)),
                    Answer::Hang => std::future::pending().await,
                    Answer::Fail(kind) => return Err(BoxError::from(Transport(kind.into()))),
                };
                let mut response = Response::builder().status(status);
                if let Some(value) = retry_after {
                    response = response.header(RETRY_AFTER, value);
                }
                Ok::<_, BoxError>(response.body(Full::new(Bytes::from_static(b"ok")))?)
            }
        }))
    }

    pub(super) fn requests(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    pub(super) fn requests_for(&self, id: &str) -> usize {
        lock(&self.seen).iter().filter(|seen| seen.id == id).count()
    }

    pub(super) async fn wait_for_requests(&self, count: usize) {
        wait_until(&self.arrived, "the endpoint", || {
            lock(&self.seen).len() >= count
        })
        .await;
    }
}

/// An engine on a manual clock, a fake store and a scripted endpoint, reporting every
/// finished delivery.
pub(super) struct Harness {
    pub(super) engine: DeliveryEngine,
    pub(super) store: Arc<FakeStore>,
    pub(super) clock: ManualClock,
    pub(super) endpoint: Endpoint,
    pub(super) finished: mpsc::UnboundedReceiver<DeliveryReport>,
}

pub(super) fn harness(
    endpoint: Endpoint,
    policy: Policy,
    configure: impl FnOnce(EngineBuilder) -> EngineBuilder,
) -> Harness {
    let clock = ManualClock::new();
    let store = Arc::new(FakeStore::new(clock.clock()));
    let (report, finished) = mpsc::unbounded_channel();
    let builder = DeliveryEngine::builder()
        .clock(clock.clock())
        .shared_store(store.clone())
        .client(endpoint.client())
        .policy(policy)
        .metrics_interval(None)
        .retain_delivered(None)
        .retain_failed(None)
        .on_finished(move |finished| {
            let _ = report.send(finished.clone());
        });
    Harness {
        engine: configure(builder).build(),
        store,
        clock,
        endpoint,
        finished,
    }
}

impl Harness {
    pub(super) async fn submit(&self, id: &str) {
        self.engine
            .submit(Delivery::new(id, URL, format!(r#"{{"id":"{id}"}}"#)))
            .await
            .expect("the engine accepts it");
    }

    /// The next delivery to reach a final state.
    pub(super) async fn finished(&mut self) -> DeliveryReport {
        tokio::time::timeout(Duration::from_secs(3600), self.finished.recv())
            .await
            .expect("a delivery reaches a final state")
            .expect("the engine is alive")
    }

    /// The next `count` finished deliveries, by id.
    pub(super) async fn finished_all(&mut self, count: usize) -> HashMap<String, DeliveryReport> {
        let mut reports = HashMap::new();
        for _ in 0..count {
            let report = self.finished().await;
            reports.insert(report.id.clone(), report);
        }
        reports
    }

    pub(super) async fn wait_for_records(&self, id: &str, count: usize) {
        self.store
            .wait_for_calls(|calls| records(calls, id) >= count)
            .await;
    }

    pub(super) async fn outstanding(&self) -> usize {
        self.engine.stats().await.expect("stats").outstanding
    }
}

/// How many times the engine recorded an attempt of `id` (failed calls included).
pub(super) fn records(calls: &[Call], id: &str) -> usize {
    calls
        .iter()
        .filter(|call| matches!(call, Call::Record { id: recorded, .. } if recorded == id))
        .count()
}
