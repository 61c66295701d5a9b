//! The legacy trigger, opt-in ([`legacy_body_field`](super::WebhookForwardLayer::legacy_body_field)):
//! a `webhook_endpoint` field in a JSON request body. Finding it means buffering the body (up to
//! a limit) before the inner service runs, which is why it is off unless asked for.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tower_service::Service;

use super::async_run::{accept_async, AsyncStyle};
use super::body::{wrap_response, RequestBody, ResponseBody};
use super::job::{may_be_json, Job};
use super::layer::Config;
use super::problems::{invalid_endpoint, unavailable, unreadable_body};
use super::trigger::FORWARD_LEGACY;
use super::trigger::{new_run_id, response_trigger};
use super::RunId;
use crate::delivery::{endpoint_host, BoxError};
use crate::problem::Problem;
use crate::secret::Secret;

const LEGACY_FIELD: &[u8] = b"webhook_endpoint";

/// Whether a request may carry the legacy `webhook_endpoint` JSON field worth buffering for.
pub(super) fn may_carry_legacy_field(parts: &http::request::Parts, limit: usize) -> bool {
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

/// Buffers a JSON request body (up to the limit) and looks for `webhook_endpoint`: found, the
/// run goes async; absent, the inner service gets the body (replayed from the buffer).
pub(super) async fn call<S, ReqBody, ResBody>(
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
        Err(err) => return Ok(unreadable_body(err).into_response_with()),
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
    let job = Job::new(
        &config,
        reservation,
        run_id,
        endpoint,
        signing,
        FORWARD_LEGACY,
    );
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
