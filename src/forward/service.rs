//! [`WebhookForward`]: finds the trigger, reserves a delivery slot, runs the inner service in
//! sync or async mode.

use std::collections::VecDeque;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde::Serialize;
use tower_service::Service;

use super::body::{RequestBody, ResponseBody};
use super::future::ResponseFuture;
use super::job::{may_be_json, request_id_value, Capture, Job, RunResult};
use super::layer::{Config, WebhookForwardLayer, MAX_ENDPOINT_LEN};
use super::{ForwardTo, RunId};
use crate::delivery::{endpoint_host, BoxError, DeliveryEngine, EnqueueError, RefusalKind};
use crate::problem::Problem;
use crate::secret::{Secret, SecretSet};

/// What a forwarded delivery's conversation names as its [`Source`]: a response forwarded in
/// sync mode, a result delivered in async mode, and one for the legacy body field.
const FORWARD: Source = Source::Origin(std::borrow::Cow::Borrowed("forward"));
const FORWARD_ASYNC: Source = Source::Origin(std::borrow::Cow::Borrowed("forward_async"));
const FORWARD_LEGACY: Source = Source::Origin(std::borrow::Cow::Borrowed("forward_legacy"));
use crate::delivery::{SigningSpec, Source};

const SECRET_HEADER: &str = "x-webhook-secret";
const LEGACY_FIELD: &[u8] = b"webhook_endpoint";
const LEGACY_MESSAGE: &str =
    "We will return the output to the endpoint provided when the task is complete.";

/// The service produced by [`WebhookForwardLayer`].
pub struct WebhookForward<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: Clone> Clone for WebhookForward<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for WebhookForward<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookForward")
            .field("inner", &self.inner)
            .field("engine", &self.config.engine)
            .finish_non_exhaustive()
    }
}

impl<S> WebhookForward<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// A layer forwarding through `engine` ([`WebhookForwardLayer::new`]).
    pub fn layer(engine: DeliveryEngine) -> WebhookForwardLayer {
        WebhookForwardLayer::new(engine)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Which async answer the caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AsyncStyle {
    /// `202 {"run_id"}` (`?async=true`, programmatic async).
    V4,
    /// `200 {"run_id", "webhook_endpoint", "message"}` (the `webhook_endpoint` body field).
    Legacy,
}

/// A trigger found on the request.
struct Trigger {
    endpoint: String,
    secret: Option<Secret>,
    asynchronous: bool,
}

fn problem(
    status: StatusCode,
    slug: &str,
    title: &'static str,
    detail: impl Into<String>,
) -> Problem {
    Problem::new(status, slug, title).with_detail(detail.into())
}

fn invalid_endpoint(detail: impl Into<String>) -> Problem {
    problem(
        StatusCode::BAD_REQUEST,
        "webhook-endpoint-invalid",
        "Invalid webhook endpoint",
        detail,
    )
}

fn unavailable(err: &EnqueueError) -> Problem {
    Problem::from(err.clone())
}

impl Config {
    /// The trigger from the query string, a request extension or the endpoint function.
    fn find_trigger(&self, parts: &http::request::Parts) -> Option<Trigger> {
        if let Some(query) = parts.uri.query() {
            if query.contains(self.query_param.as_str()) {
                let mut endpoint = None;
                let mut asynchronous = false;
                for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                    if key == self.query_param.as_str() {
                        endpoint = Some(value.into_owned());
                    } else if key == "async" {
                        asynchronous = value.eq_ignore_ascii_case("true") || value == "1";
                    }
                }
                if let Some(endpoint) = endpoint {
                    return Some(Trigger {
                        endpoint,
                        secret: None,
                        asynchronous,
                    });
                }
            }
        }
        let forward = parts
            .extensions
            .get::<ForwardTo>()
            .cloned()
            .or_else(|| self.endpoint_fn.as_ref().and_then(|f| f(parts)))?;
        Some(Trigger {
            endpoint: forward.endpoint,
            secret: forward.secret,
            asynchronous: forward.asynchronous,
        })
    }

    /// Checks an endpoint's syntax (always a `400` when wrong) and, for async mode, its
    /// literal address (`400` when refused). Sync mode leaves the address to the engine,
    /// which records a refusal.
    fn validate(&self, endpoint: &str, asynchronous: bool) -> Result<Uri, Problem> {
        if endpoint.trim().is_empty() {
            return Err(invalid_endpoint("the webhook endpoint is empty"));
        }
        if endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(invalid_endpoint(format!(
                "the webhook endpoint is longer than {MAX_ENDPOINT_LEN} characters"
            )));
        }
        let uri: Uri = endpoint
            .parse()
            .map_err(|_| invalid_endpoint("the webhook endpoint is not a valid absolute URL"))?;
        match self.engine.guard().check_uri(&uri) {
            Ok(()) => Ok(uri),
            Err(refusal)
                if matches!(
                    refusal.kind(),
                    RefusalKind::Scheme | RefusalKind::InvalidUrl
                ) =>
            {
                Err(invalid_endpoint(refusal.detail().to_owned()))
            }
            Err(refusal) if asynchronous => Err(refused(refusal.detail())),
            Err(_) => Ok(uri),
        }
    }

    /// Resolves an async endpoint's host now, so a refused one is a `400` for the caller.
    async fn check_resolved(&self, uri: &Uri) -> Result<(), Problem> {
        if !self.check_on_accept {
            return Ok(());
        }
        let Some(host) = uri.host() else {
            return Ok(());
        };
        let guard = self.engine.guard();
        if !guard.is_enabled()
            || guard.is_host_allowed(host)
            || crate::delivery::ssrf::literal_ip(host).is_some()
        {
            return Ok(());
        }
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        match tokio::time::timeout(self.dns_timeout, guard.resolve(host, port)).await {
            Ok(Err(err)) => match crate::delivery::Refusal::find(&*err) {
                Some(refusal) => Err(refused(refusal.detail())),
                // Resolution failures are transient: the engine retries them.
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn signing(
        &self,
        trigger_secret: Option<Secret>,
        header_secret: Option<Secret>,
    ) -> Option<SigningSpec> {
        let secrets = match trigger_secret.or(header_secret) {
            Some(secret) => SecretSet::from(secret),
            None => self.default_secret.clone()?,
        };
        Some(SigningSpec::new(self.scheme.clone(), secrets))
    }

    fn job(
        &self,
        reservation: crate::delivery::Reservation,
        run_id: String,
        endpoint: String,
        signing: Option<SigningSpec>,
        source: Source,
    ) -> Job {
        Job {
            engine: self.engine.clone(),
            reservation: Some(reservation),
            held: false,
            run_id,
            endpoint,
            signing,
            source,
            body_mode: self.body_mode,
            capture_limit: self.capture_limit,
            started: Instant::now(),
        }
    }
}

fn refused(detail: &str) -> Problem {
    problem(
        StatusCode::BAD_REQUEST,
        "webhook-endpoint-refused",
        "Webhook endpoint refused",
        format!("{detail}; webhook endpoints must be public http(s) URLs"),
    )
}

/// Removes `X-Webhook-Secret` (every occurrence) and returns the first non-empty value.
fn take_secret(headers: &mut http::HeaderMap) -> Option<Secret> {
    let http::header::Entry::Occupied(entry) = headers.entry(SECRET_HEADER) else {
        return None;
    };
    let (_, values) = entry.remove_entry_mult();
    let mut secret = None;
    for value in values {
        if secret.is_none() && !value.is_empty() {
            secret = Some(Secret::new(value.as_bytes()));
        }
    }
    secret
}

/// A time-ordered UUID (v7): unique and unguessable enough, and a durable store's id index
/// grows at its end instead of taking random writes.
fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn json_response<B>(
    status: StatusCode,
    body: &impl Serialize,
    run_id: &str,
) -> Response<ResponseBody<B>> {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let mut response = Response::new(ResponseBody::full(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = request_id_value(run_id) {
        headers.insert("x-request-id", value);
    }
    response
}

fn accepted<B>(style: AsyncStyle, run_id: &str, endpoint: &str) -> Response<ResponseBody<B>> {
    #[derive(Serialize)]
    struct V4<'a> {
        run_id: &'a str,
    }
    #[derive(Serialize)]
    struct Legacy<'a> {
        run_id: &'a str,
        webhook_endpoint: &'a str,
        message: &'a str,
    }
    match style {
        AsyncStyle::V4 => json_response(StatusCode::ACCEPTED, &V4 { run_id }, run_id),
        AsyncStyle::Legacy => json_response(
            StatusCode::OK,
            &Legacy {
                run_id,
                webhook_endpoint: endpoint,
                message: LEGACY_MESSAGE,
            },
            run_id,
        ),
    }
}

/// Wraps a sync-mode response: adds `X-Request-Id` and captures the body for `job`.
pub(crate) fn wrap_response<B>(response: Response<B>, job: Option<Job>) -> Response<ResponseBody<B>>
where
    B: Body,
{
    let (mut parts, body) = response.into_parts();
    let capture = job.map(|job| {
        if let Some(value) = request_id_value(&job.run_id) {
            parts.headers.insert("x-request-id", value);
        }
        Box::new(Capture::new(job, parts.status, &parts.headers))
    });
    Response::from_parts(parts, ResponseBody::inner(body, capture))
}

/// For responses without a request trigger: a handler may still ask for forwarding with a
/// [`ForwardTo`] response extension. When the engine cannot take the delivery the caller gets
/// the problem instead of the response, so the delivery is never dropped silently.
pub(crate) fn response_trigger<B>(
    config: &Config,
    secret: Option<Secret>,
    response: &Response<B>,
) -> Result<Option<Job>, Problem> {
    let Some(forward) = response.extensions().get::<ForwardTo>() else {
        return Ok(None);
    };
    let endpoint = match config.validate(&forward.endpoint, false) {
        Ok(_) => forward.endpoint.clone(),
        Err(problem) => {
            tracing::warn!(problem = %problem, "invalid ForwardTo response extension ignored");
            return Ok(None);
        }
    };
    let reservation = match config.engine.try_reserve_for(&endpoint_host(&endpoint)) {
        Ok(reservation) => reservation,
        Err(err) => {
            tracing::warn!(error = %err, "ForwardTo delivery refused: answered with a problem");
            return Err(unavailable(&err));
        }
    };
    let signing = config.signing(forward.secret.clone(), secret);
    Ok(Some(config.job(
        reservation,
        new_run_id(),
        endpoint,
        signing,
        FORWARD,
    )))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WebhookForward<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: fmt::Display,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let header_secret = take_secret(&mut parts.headers);
        let config = self.config.clone();

        let Some(trigger) = config.find_trigger(&parts) else {
            if config.legacy_body_field && may_carry_legacy_field(&parts, config.legacy_body_limit)
            {
                let inner = self.take_ready_inner();
                return ResponseFuture::boxed(Box::pin(legacy(
                    config,
                    inner,
                    parts,
                    body,
                    header_secret,
                )));
            }
            let future = self
                .inner
                .call(Request::from_parts(parts, RequestBody::stream(body)));
            return ResponseFuture::passthrough(future, config, header_secret);
        };

        let uri = match config.validate(&trigger.endpoint, trigger.asynchronous) {
            Ok(uri) => uri,
            Err(problem) => return ResponseFuture::ready(problem.into_response_with()),
        };
        let reservation = match config
            .engine
            .try_reserve_for(&endpoint_host(&trigger.endpoint))
        {
            Ok(reservation) => reservation,
            Err(err) => return ResponseFuture::ready(unavailable(&err).into_response_with()),
        };
        let run_id = new_run_id();
        parts.extensions.insert(RunId(run_id.clone()));
        let signing = config.signing(trigger.secret, header_secret);
        let source = if trigger.asynchronous {
            FORWARD_ASYNC
        } else {
            FORWARD
        };
        let job = config.job(reservation, run_id, trigger.endpoint, signing, source);
        let request = Request::from_parts(parts, RequestBody::stream(body));

        if trigger.asynchronous {
            let inner = self.take_ready_inner();
            return ResponseFuture::boxed(Box::pin(async move {
                Ok(accept_async(&config, inner, request, job, &uri, AsyncStyle::V4).await)
            }));
        }
        ResponseFuture::forward(self.inner.call(request), job)
    }
}

impl<S: Clone> WebhookForward<S> {
    /// The service that was polled ready, leaving a fresh clone in its place.
    fn take_ready_inner(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

/// Whether a request may carry the legacy `webhook_endpoint` JSON field worth buffering for.
fn may_carry_legacy_field(parts: &http::request::Parts, limit: usize) -> bool {
    if !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        return false;
    }
    if !parts.headers.contains_key(header::CONTENT_TYPE) || !may_be_json(&parts.headers) {
        return false;
    }
    let too_long = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > limit as u64);
    !too_long
}

/// Answers an async-mode request at once and runs the inner service in the background.
async fn accept_async<S, ReqBody, ResBody>(
    config: &Config,
    inner: S,
    request: Request<RequestBody<ReqBody>>,
    job: Job,
    uri: &Uri,
    style: AsyncStyle,
) -> Response<ResponseBody<ResBody>>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: fmt::Display,
{
    if let Err(problem) = config.check_resolved(uri).await {
        return problem.into_response_with();
    }
    // The answer means the delivery is stored (on disk with a durable store).
    let mut job = job;
    if let Err(err) = job.hold().await {
        return unavailable(&err).into_response_with();
    }
    let response = accepted(style, &job.run_id, &job.endpoint);
    let span = tracing::info_span!("webhook.run", run_id = %job.run_id);
    tokio::spawn(tracing::Instrument::instrument(
        run_in_background(inner, request, job),
        span,
    ));
    response
}

/// Runs the inner service to completion (panics caught) and delivers whatever it produced.
async fn run_in_background<S, ReqBody, ResBody>(
    mut inner: S,
    request: Request<RequestBody<ReqBody>>,
    job: Job,
) where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    S::Error: fmt::Display,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: fmt::Display,
{
    let limit = job.capture_limit;
    // The placeholder stays held while the run goes on.
    let (engine, run_id) = (job.engine.clone(), job.run_id.clone());
    let keep_held = async move {
        loop {
            tokio::time::sleep(engine.keep_held_every()).await;
            if let Err(err) = engine.keep_held(&run_id).await {
                tracing::warn!(error = %err, "webhook delivery: the held placeholder was not postponed");
            }
        }
    };
    let run = AssertUnwindSafe(async move {
        match inner.call(request).await {
            Ok(response) => collect(response, limit).await,
            Err(err) => RunResult::failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the service failed: {err}"),
            ),
        }
    });
    let run = std::pin::pin!(run.catch_unwind());
    let keep_held = std::pin::pin!(keep_held);
    let outcome = match futures_util::future::select(run, keep_held).await {
        futures_util::future::Either::Left((outcome, _)) => outcome,
        futures_util::future::Either::Right((never, _)) => never,
    };
    let result = outcome.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        RunResult::failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the service panicked: {message}"),
        )
    });
    job.deliver(result).await;
}

/// Reads a response body up to `limit` bytes.
async fn collect<B>(response: Response<B>, limit: usize) -> RunResult
where
    B: Body<Data = Bytes>,
    B::Error: fmt::Display,
{
    let (parts, body) = response.into_parts();
    let json = may_be_json(&parts.headers);
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    let mut error = None;
    while let Some(frame) = body.as_mut().frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        error = Some(format!(
                            "the response body is larger than the capture limit of {limit} bytes"
                        ));
                        buf.clear();
                        break;
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Err(err) => {
                error = Some(format!("the response body failed: {err}"));
                buf.clear();
                break;
            }
        }
    }
    RunResult {
        status: parts.status,
        json,
        body: buf.freeze(),
        error,
    }
}

/// Buffers a JSON request body (up to the limit) and looks for `webhook_endpoint`.
async fn legacy<S, ReqBody, ResBody>(
    config: Arc<Config>,
    mut inner: S,
    mut parts: http::request::Parts,
    body: ReqBody,
    header_secret: Option<Secret>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: fmt::Display + Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: fmt::Display,
{
    let (frames, rest, complete) = match buffer(body, config.legacy_body_limit).await {
        Ok(buffered) => buffered,
        Err(err) => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                "request-body-unreadable",
                "Request body unreadable",
                format!("the request body could not be read: {err}"),
            )
            .into_response_with())
        }
    };
    let endpoint = match complete.as_deref().map(legacy_endpoint) {
        Some(Ok(endpoint)) => endpoint,
        Some(Err(problem)) => return Ok(problem.into_response_with()),
        None => None,
    };
    let request_body = RequestBody::buffered(frames, rest);
    let Some(endpoint) = endpoint else {
        let response = inner.call(Request::from_parts(parts, request_body)).await?;
        return Ok(match response_trigger(&config, header_secret, &response) {
            Ok(job) => wrap_response(response, job),
            Err(problem) => problem.into_response_with(),
        });
    };

    let uri = match config.validate(&endpoint, true) {
        Ok(uri) => uri,
        Err(problem) => return Ok(problem.into_response_with()),
    };
    let reservation = match config.engine.try_reserve_for(&endpoint_host(&endpoint)) {
        Ok(reservation) => reservation,
        Err(err) => return Ok(unavailable(&err).into_response_with()),
    };
    let run_id = new_run_id();
    parts.extensions.insert(RunId(run_id.clone()));
    let signing = config.signing(None, header_secret);
    let job = config.job(reservation, run_id, endpoint, signing, FORWARD_LEGACY);
    let request = Request::from_parts(parts, request_body);
    Ok(accept_async(&config, inner, request, job, &uri, AsyncStyle::Legacy).await)
}

type Buffered<B> = (VecDeque<Frame<Bytes>>, Option<Pin<Box<B>>>, Option<Bytes>);

/// Reads frames until the body ends (then also returns its data) or passes `limit`.
async fn buffer<B>(body: B, limit: usize) -> Result<Buffered<B>, BoxError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = Box::pin(body);
    let mut frames = VecDeque::new();
    let mut data = BytesMut::new();
    loop {
        if body.is_end_stream() {
            return Ok((frames, None, Some(data.freeze())));
        }
        match body.frame().await {
            None => return Ok((frames, None, Some(data.freeze()))),
            Some(Err(err)) => return Err(err.into()),
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    if data.len() + chunk.len() > limit {
                        frames.push_back(frame);
                        return Ok((frames, Some(body), None));
                    }
                    data.extend_from_slice(chunk);
                }
                frames.push_back(frame);
            }
        }
    }
}

/// The legacy field's URL: `Ok(None)` when absent (or the body is not a JSON object).
fn legacy_endpoint(body: &[u8]) -> Result<Option<String>, Problem> {
    if !body.windows(LEGACY_FIELD.len()).any(|w| w == LEGACY_FIELD) {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        webhook_endpoint: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(Probe {
            webhook_endpoint: Some(serde_json::Value::String(url)),
        }) => Ok(Some(url)),
        Ok(Probe {
            webhook_endpoint: None | Some(serde_json::Value::Null),
        }) => Ok(None),
        Ok(_) => Err(invalid_endpoint("`webhook_endpoint` must be a string URL")),
        // Not a JSON object: the inner service judges its own input.
        Err(_) => Ok(None),
    }
}
