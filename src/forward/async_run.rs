//! Async mode: the caller is answered at once (`202 {"run_id"}`, or the legacy `200`), the
//! inner service runs in a background task, and whatever it produces — a response, an error, a
//! panic — is delivered.

use std::fmt;
use std::panic::AssertUnwindSafe;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use serde::Serialize;
use tower_service::Service;

use super::body::{RequestBody, ResponseBody};
use super::job::{may_be_json, request_id_value, Job, RunResult};
use super::layer::Config;
use super::problems::unavailable;
use crate::delivery::X_REQUEST_ID;

const LEGACY_MESSAGE: &str =
    "We will return the output to the endpoint provided when the task is complete.";

/// Which async answer the caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AsyncStyle {
    /// `202 {"run_id"}` (`?async=true`, programmatic async).
    V4,
    /// `200 {"run_id", "webhook_endpoint", "message"}` (the `webhook_endpoint` body field).
    Legacy,
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
        headers.insert(X_REQUEST_ID, value);
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

/// Answers an async-mode request at once and runs the inner service in the background.
pub(super) async fn accept_async<S, ReqBody, ResBody>(
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
