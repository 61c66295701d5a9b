//! [`ResponseFuture`]: lookup → collect + verify → replay check → inner call → record.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body::Body as HttpBody;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::VerifiedBody;
use super::collect::{BoxError, Buffer};
use super::key::SecretSource;
use super::rejection::{render, Rejection, RejectionResponse};
use super::telemetry::{SchemeLabel, Telemetry};
use super::verifier::{Rejections, WebhookVerifier};
use crate::replay::{Outcome, ReplayFuture, ReplayRecord, ReplayStore, Reservation};
use crate::scheme::{RequestHead, Scheme, Verified};
use crate::secret::SecretSet;
use crate::time::Clock;

/// Marks a response the layer answered for a duplicate of an already processed delivery
/// (inserted into the response extensions), with the duplicate's verification metadata.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Duplicate {
    /// The duplicate request's verification metadata (its `replay_key` is the one seen
    /// before).
    pub verified: Verified,
}

pin_project! {
    /// Response future of [`WebhookSignature`](super::WebhookSignature).
    ///
    /// A state machine: (secret lookup) → collect and verify the body → (replay reservation)
    /// → inner service → (replay record). A rejection never reaches the inner service.
    pub struct ResponseFuture<S, B, Sc, K, R>
    where
        S: Service<Request<VerifiedBody>>,
        Sc: Scheme,
        K: SecretSource,
    {
        // What a step needs lives in its variant, so that the request head and the body
        // buffer share their space with the inner service's future: a router boxes this
        // future, and its size is copied.
        #[pin]
        state: StateOf<S, B, Sc, K>,
        // A clone of the verifier only when a step after `call` needs it (an asynchronous
        // secret lookup, a replay store): cloning it costs reference-count updates.
        verifier: Option<WebhookVerifier<Sc, K>>,
        rejections: Rejections,
        rejection: R,
        now: i64,
        guard: Option<Box<ReplayGuard>>,
        telemetry: Telemetry,
    }
}

/// The request head and the inner service, until the inner service is called.
pub(crate) struct Pending<S> {
    pub(crate) parts: RequestHead,
    pub(crate) inner: S,
    /// The request's secrets, kept only with a replay store: its keys are scoped by the
    /// one that matched.
    pub(crate) secrets: Option<SecretSet>,
}

pin_project! {
    #[project = StateProj]
    enum State<B, V, S, L, F, T, E> {
        Lookup { #[pin] lookup: L, body: Option<B>, pending: Option<Pending<S>> },
        Collect {
            #[pin]
            body: B,
            verification: Option<V>,
            buffer: Buffer,
            pending: Option<Pending<S>>,
            // The body read deadline, armed the first time the body is not there yet: boxed,
            // so that the usual request, whose body is there at once, carries only a pointer.
            timer: Option<Pin<Box<tokio::time::Sleep>>>,
        },
        Reserve {
            reserve: ReplayFuture<Reservation>,
            body: Option<Bytes>,
            pending: Option<Pending<S>>,
        },
        Call { #[pin] future: F },
        Record { record: ReplayFuture<()>, result: Option<Result<T, E>> },
        Local { response: Option<axum::response::Response> },
    }
}

type StateOf<S, B, Sc, K> = State<
    B,
    <Sc as Scheme>::Verification,
    S,
    <K as SecretSource>::Future,
    <S as Service<Request<VerifiedBody>>>::Future,
    <S as Service<Request<VerifiedBody>>>::Response,
    <S as Service<Request<VerifiedBody>>>::Error,
>;

impl<S, B, Sc, K, R> fmt::Debug for ResponseFuture<S, B, Sc, K, R>
where
    S: Service<Request<VerifiedBody>>,
    Sc: Scheme,
    K: SecretSource,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Lookup { .. } => "Lookup",
            State::Collect { .. } => "Collect",
            State::Reserve { .. } => "Reserve",
            State::Call { .. } => "Call",
            State::Record { .. } => "Record",
            State::Local { .. } => "Local",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, B, Sc, K, R> ResponseFuture<S, B, Sc, K, R>
where
    S: Service<Request<VerifiedBody>>,
    Sc: Scheme,
    K: SecretSource,
    R: RejectionResponse,
{
    /// Waits for an asynchronous secret lookup first.
    pub(crate) fn lookup(
        lookup: K::Future,
        body: B,
        pending: Pending<S>,
        verifier: WebhookVerifier<Sc, K>,
        rejection: R,
        now: i64,
        scheme: SchemeLabel,
    ) -> Self {
        Self {
            state: State::Lookup {
                lookup,
                body: Some(body),
                pending: Some(pending),
            },
            rejections: verifier.rejections(),
            verifier: Some(verifier),
            rejection,
            now,
            guard: None,
            telemetry: Telemetry::start(scheme),
        }
    }

    /// Starts by collecting the body (the secrets were available at once), or with a
    /// rejection found before reading it.
    #[inline]
    pub(crate) fn collect(
        started: Result<(Sc::Verification, Buffer), Rejection>,
        body: B,
        pending: Pending<S>,
        verifier: &WebhookVerifier<Sc, K>,
        rejection: R,
        now: i64,
        scheme: SchemeLabel,
    ) -> Self {
        let telemetry = Telemetry::start(scheme);
        let verifier_kept = (verifier.replay.is_some() || verifier.shared.scheme.has_admission())
            .then(|| verifier.clone());
        let rejections = verifier.rejections();
        // Each outcome is built as one value where it is returned: a state built apart and
        // then moved into the future is copied whole (the request head is most of it).
        match started {
            Ok((verification, buffer)) => Self {
                state: State::Collect {
                    body,
                    verification: Some(verification),
                    buffer,
                    pending: Some(pending),
                    timer: None,
                },
                verifier: verifier_kept,
                rejections,
                rejection,
                now,
                guard: None,
                telemetry,
            },
            Err(error) => Self {
                state: State::Local {
                    response: Some(reject(&rejection, &telemetry, error)),
                },
                verifier: verifier_kept,
                rejections,
                rejection,
                now,
                guard: None,
                telemetry,
            },
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "`inbound::ResponseFuture` polled after completion";
const LOOKUP_KEEPS_THE_VERIFIER: &str = "a future waiting for a lookup holds the verifier";
const REPLAY_KEEPS_THE_VERIFIER: &str = "a future with a replay store holds the verifier";

impl<S, B, Sc, K, R, ResBody> Future for ResponseFuture<S, B, Sc, K, R>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    B: HttpBody,
    B::Error: Into<BoxError>,
    Sc: Scheme,
    K: SecretSource,
    R: RejectionResponse,
{
    type Output = Result<Response<Body>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _span = this.telemetry.enter();
        loop {
            match this.state.as_mut().project() {
                StateProj::Lookup {
                    lookup,
                    body,
                    pending,
                } => {
                    let secrets = ready!(lookup.poll(cx));
                    let body = body.take().expect(POLLED_AFTER_COMPLETION);
                    let mut pending = pending.take().expect(POLLED_AFTER_COMPLETION);
                    let hint = body.size_hint();
                    let verifier = this.verifier.as_ref().expect(LOOKUP_KEEPS_THE_VERIFIER);
                    let started = match secrets {
                        Some(secrets) => {
                            let started =
                                verifier.start(&pending.parts, &secrets, *this.now, &hint);
                            if verifier.replay.is_some() {
                                pending.secrets = Some(secrets);
                            }
                            started
                        }
                        None => Err(this.rejections.no_secret()),
                    };
                    match started {
                        Ok((verification, buffer)) => this.state.set(State::Collect {
                            body,
                            verification: Some(verification),
                            buffer,
                            pending: Some(pending),
                            timer: None,
                        }),
                        Err(error) => this.state.set(State::Local {
                            response: Some(reject(this.rejection, this.telemetry, error)),
                        }),
                    }
                }
                StateProj::Collect {
                    body,
                    verification,
                    buffer,
                    pending,
                    timer,
                } => {
                    let extensions = &mut pending
                        .as_mut()
                        .expect(POLLED_AFTER_COMPLETION)
                        .parts
                        .extensions;
                    let collected = match buffer.poll_collect(body, verification, extensions, cx) {
                        Poll::Ready(collected) => collected,
                        Poll::Pending => {
                            let Some(deadline) = this.rejections.deadline else {
                                return Poll::Pending;
                            };
                            if timer.is_none() {
                                // Outside a tokio runtime there is no timer to arm.
                                if tokio::runtime::Handle::try_current().is_err() {
                                    return Poll::Pending;
                                }
                                *timer = Some(Box::pin(tokio::time::sleep(deadline)));
                            }
                            let expired = timer
                                .as_mut()
                                .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
                            if !expired {
                                return Poll::Pending;
                            }
                            this.state.set(State::Local {
                                response: Some(reject(
                                    this.rejection,
                                    this.telemetry,
                                    Rejection::body_timeout(deadline),
                                )),
                            });
                            continue;
                        }
                    };
                    let bytes = match collected {
                        Ok(bytes) => bytes,
                        Err(error) => {
                            let error = this.rejections.collect(error);
                            this.state.set(State::Local {
                                response: Some(reject(this.rejection, this.telemetry, error)),
                            });
                            continue;
                        }
                    };
                    let pending = pending.take().expect(POLLED_AFTER_COMPLETION);
                    let Some(verifier) = this.verifier.as_ref() else {
                        let Pending {
                            parts, mut inner, ..
                        } = pending;
                        this.telemetry
                            .accepted(|| parts.extensions.get::<Verified>());
                        let request = Request::from_parts(parts, VerifiedBody::new(bytes));
                        this.state.set(State::Call {
                            future: inner.call(request),
                        });
                        continue;
                    };
                    let verified = pending.parts.extensions.get::<Verified>();
                    let replay = verified.and_then(|verified| {
                        verifier
                            .replay_target(verified, pending.secrets.as_ref())
                            .map(|(store, key)| (store, key, verified.run_id))
                    });
                    match replay {
                        Some((store, key, run_id)) => {
                            let reserve = store.reserve(&key, *this.now, verifier.replay_ttl);
                            *this.guard =
                                Some(Box::new(ReplayGuard::new(store, key, verifier, run_id)));
                            this.state.set(State::Reserve {
                                reserve,
                                body: Some(bytes),
                                pending: Some(pending),
                            });
                        }
                        None => {
                            // Without a replay key every request is new: charged at once.
                            let admitted = match verified {
                                Some(verified) => admit(verifier, verified, *this.now),
                                None => Ok(()),
                            };
                            let Pending {
                                parts, mut inner, ..
                            } = pending;
                            match admitted {
                                Ok(()) => {
                                    this.telemetry
                                        .accepted(|| parts.extensions.get::<Verified>());
                                    let request =
                                        Request::from_parts(parts, VerifiedBody::new(bytes));
                                    this.state.set(State::Call {
                                        future: inner.call(request),
                                    });
                                }
                                Err(error) => this.state.set(State::Local {
                                    response: Some(reject(this.rejection, this.telemetry, error)),
                                }),
                            }
                        }
                    }
                }
                StateProj::Reserve {
                    reserve,
                    body,
                    pending,
                } => {
                    let reservation = ready!(reserve.as_mut().poll(cx));
                    let Pending {
                        parts, mut inner, ..
                    } = pending.take().expect(POLLED_AFTER_COMPLETION);
                    let body = body.take().expect(POLLED_AFTER_COMPLETION);
                    let mut request = Request::from_parts(parts, VerifiedBody::new(body));
                    match reservation {
                        Ok(Reservation::Fresh) => {
                            if let Some(guard) = this.guard.as_mut() {
                                guard.arm();
                            }
                            let verifier = this.verifier.as_ref().expect(REPLAY_KEEPS_THE_VERIFIER);
                            let admitted = match request.extensions().get::<Verified>() {
                                Some(verified) => admit(verifier, verified, *this.now),
                                None => Ok(()),
                            };
                            match admitted {
                                Ok(()) => {
                                    this.telemetry
                                        .accepted(|| request.extensions().get::<Verified>());
                                    this.state.set(State::Call {
                                        future: inner.call(request),
                                    });
                                }
                                Err(error) => {
                                    // Dropping the armed guard releases the reservation.
                                    *this.guard = None;
                                    this.state.set(State::Local {
                                        response: Some(reject(
                                            this.rejection,
                                            this.telemetry,
                                            error,
                                        )),
                                    });
                                }
                            }
                        }
                        Ok(Reservation::InFlight) => {
                            *this.guard = None;
                            this.state.set(State::Local {
                                response: Some(reject(
                                    this.rejection,
                                    this.telemetry,
                                    Rejection::in_flight(),
                                )),
                            });
                        }
                        Ok(Reservation::Done(record)) => {
                            *this.guard = None;
                            // The duplicate is answered as the original was.
                            if let Some(verified) = request.extensions_mut().get_mut::<Verified>() {
                                verified.run_id = record.run_id;
                            }
                            this.telemetry
                                .duplicate(|| request.extensions().get::<Verified>());
                            let verifier = this.verifier.as_ref().expect(REPLAY_KEEPS_THE_VERIFIER);
                            let response = duplicate_response(verifier.scheme(), request);
                            this.state.set(State::Local {
                                response: Some(response),
                            });
                        }
                        Err(error) => {
                            *this.guard = None;
                            tracing::warn!(
                                target: "tower_webhooks::inbound",
                                %error,
                                "replay store unavailable"
                            );
                            this.state.set(State::Local {
                                response: Some(reject(
                                    this.rejection,
                                    this.telemetry,
                                    Rejection::replay_store_unavailable(),
                                )),
                            });
                        }
                    }
                }
                StateProj::Call { future } => {
                    let result = ready!(future.poll(cx));
                    let Some(guard) = this.guard.take() else {
                        return Poll::Ready(result.map(|response| response.map(Body::new)));
                    };
                    let outcome = match &result {
                        Ok(response) if response.status().is_success() => {
                            Outcome::Processed(guard.record)
                        }
                        _ => Outcome::Failed,
                    };
                    this.state.set(State::Record {
                        record: guard.finish(outcome),
                        result: Some(result),
                    });
                }
                StateProj::Record { record, result } => {
                    if let Err(error) = ready!(record.as_mut().poll(cx)) {
                        tracing::warn!(
                            target: "tower_webhooks::inbound",
                            %error,
                            "failed to record a processed webhook in the replay store"
                        );
                    }
                    let result = result.take().expect(POLLED_AFTER_COMPLETION);
                    return Poll::Ready(result.map(|response| response.map(Body::new)));
                }
                StateProj::Local { response } => {
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

/// Counts and traces a rejection, then renders it.
fn reject<R: RejectionResponse>(
    renderer: &R,
    telemetry: &Telemetry,
    rejection: Rejection,
) -> axum::response::Response {
    telemetry.rejected(&rejection);
    render(renderer, rejection)
}

/// Charges the scheme's quotas for a request known not to be a duplicate.
pub(crate) fn admit<Sc: Scheme, K>(
    verifier: &WebhookVerifier<Sc, K>,
    verified: &Verified,
    now: i64,
) -> Result<(), Rejection> {
    if !verifier.scheme().has_admission() {
        return Ok(());
    }
    verifier.scheme().admit(verified, now).map_err(|error| {
        Rejection::from_verify(error, verifier.scheme().uniform_rejection_status())
    })
}

/// The `2xx` answer to a duplicate of a processed delivery: the scheme's own success
/// response if it defines one (Valohai's `ok`), else `{"status":"duplicate"}`.
fn duplicate_response<Sc: Scheme>(
    scheme: &Sc,
    request: Request<VerifiedBody>,
) -> axum::response::Response {
    let (mut parts, _body) = request.into_parts();
    let verified = parts.extensions.remove::<Verified>();
    let success = verified.as_ref().and_then(|verified| {
        let mut run_id = uuid::Uuid::encode_buffer();
        scheme.success_response(verified.run_id.hyphenated().encode_lower(&mut run_id))
    });
    let mut response = match success {
        Some(success) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(success.content_type),
            )],
            success.body,
        )
            .into_response(),
        None => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Bytes::from_static(br#"{"status":"duplicate"}"#),
        )
            .into_response(),
    };
    if let Some(verified) = verified {
        tracing::debug!(
            target: "tower_webhooks::inbound",
            scheme = %verified.scheme,
            message_id = ?verified.message_id,
            "duplicate webhook acknowledged without calling the handler"
        );
        response.extensions_mut().insert(Duplicate { verified });
    }
    response
}

/// Releases a reservation when the response future is dropped while the handler runs.
pub(crate) struct ReplayGuard {
    store: std::sync::Arc<dyn ReplayStore>,
    key: String,
    ttl: Duration,
    clock: Clock,
    /// What a duplicate is answered from, once the handler succeeded.
    record: ReplayRecord,
    armed: bool,
}

impl ReplayGuard {
    /// A guard for `key` in `store`, not armed yet: [`ReplayGuard::arm`] it once the
    /// reservation is fresh.
    pub(crate) fn new<Sc, K>(
        store: std::sync::Arc<dyn ReplayStore>,
        key: String,
        verifier: &WebhookVerifier<Sc, K>,
        run_id: uuid::Uuid,
    ) -> Self {
        Self {
            store,
            key,
            ttl: verifier.replay_ttl,
            clock: verifier.clock.clone(),
            record: ReplayRecord::new(run_id),
            armed: false,
        }
    }

    /// From now on, dropping the guard releases the reservation.
    pub(crate) fn arm(&mut self) {
        self.armed = true;
    }

    /// Records the delivery as processed (its duplicates are answered from the record).
    pub(crate) fn processed(self) -> ReplayFuture<()> {
        let record = self.record;
        self.finish(Outcome::Processed(record))
    }

    /// Releases the key, so the sender's retry is processed.
    pub(crate) fn failed(self) -> ReplayFuture<()> {
        self.finish(Outcome::Failed)
    }

    fn finish(mut self, outcome: Outcome) -> ReplayFuture<()> {
        self.armed = false;
        self.store
            .complete(&self.key, outcome, self.clock.unix_seconds(), self.ttl)
    }
}

impl Drop for ReplayGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let release = self.store.complete(
            &self.key,
            Outcome::Failed,
            self.clock.unix_seconds(),
            self.ttl,
        );
        // The in-memory store has already done the work; a remote store needs its future run.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(release);
        }
    }
}
