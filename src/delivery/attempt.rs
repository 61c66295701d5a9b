//! One attempt: the signed request, the guarded send within the attempt timeout, the
//! response read up to its limit, and errors classified as outcomes.

use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

use super::client::ClientBody;
use super::engine::Shared;
use super::model::{Attempt, AttemptOutcome, AttemptResponse, Delivery, RecordedHeaders};
use super::policy::retry_after_at;
use super::ssrf::Refusal;
use super::BoxError;
use crate::scheme::Message;
use crate::time::unix_seconds;

/// `X-Request-Id`: a delivery's id on every attempt, and a forwarded run's id on its answer. A
/// constant, so inserting it allocates no name.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Shared {
    /// Makes one attempt; returns its record (decision not yet set) and the `Retry-After`.
    pub(super) async fn attempt(
        &self,
        delivery: &Delivery,
        number: u32,
    ) -> (Attempt, Option<Duration>) {
        let started_at = self.now();
        let started = Instant::now();
        let mut attempt = Attempt::new(number, started_at, AttemptOutcome::Timeout);
        attempt.body_size = delivery.body.len();
        attempt.body_sha256 = sha256_hex(&delivery.body);

        let request = match self.build_request(delivery, started_at) {
            Ok((request, headers)) => {
                attempt.request_headers = headers;
                request
            }
            Err(outcome) => {
                attempt.outcome = outcome;
                attempt.latency = started.elapsed();
                return (attempt, None);
            }
        };

        let limit = self.config.response_body_limit;
        let sent = tokio::time::timeout(self.config.attempt_timeout, async {
            let response = self.client.send(request).await?;
            let (parts, body) = response.into_parts();
            let (body, truncated) = read_limited(body, limit).await;
            Ok::<_, BoxError>((parts, body, truncated))
        })
        .await;
        attempt.latency = started.elapsed();
        let mut retry_after = None;
        attempt.outcome = match sent {
            Err(_elapsed) => AttemptOutcome::Timeout,
            Ok(Err(err)) => classify_error(&*err),
            Ok(Ok((parts, body, truncated))) => {
                retry_after = parts
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|value| retry_after_at(value, self.now()));
                let status = parts.status.as_u16();
                attempt.response = Some(AttemptResponse::new(
                    status,
                    RecordedHeaders::redacted_copies(&parts.headers),
                    body,
                    truncated,
                ));
                AttemptOutcome::Status(status)
            }
        };
        (attempt, retry_after)
    }

    /// The signed request, and its headers for the record (redacted).
    pub(super) fn build_request(
        &self,
        delivery: &Delivery,
        now: SystemTime,
    ) -> Result<(Request<Full<Bytes>>, RecordedHeaders), AttemptOutcome> {
        let uri = self
            .guard
            .check_url(&delivery.endpoint)
            .map_err(|refusal| AttemptOutcome::Refused(refusal.detail().to_owned()))?;
        let mut headers = HeaderMap::with_capacity(8 + delivery.headers.len());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, self.config.user_agent.clone());
        let id = HeaderValue::from_str(&delivery.id).map_err(|_| {
            AttemptOutcome::SignFailed("the delivery id is not a valid header value".into())
        })?;
        headers.insert(X_REQUEST_ID, id);
        for (name, value) in &delivery.headers {
            headers.append(name, value.clone());
        }
        if let Some(signing) = &delivery.signing {
            let timestamp = unix_seconds(now);
            self.config
                .custom_signers
                .sign(
                    signing,
                    &Message::new(&delivery.id, timestamp, &delivery.body),
                    &mut headers,
                )
                .map_err(|err| AttemptOutcome::SignFailed(err.to_string()))?;
        }
        let recorded = RecordedHeaders::redacted(&headers, &delivery.headers);
        let mut request = Request::new(Full::new(delivery.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok((request, recorded))
    }
}

/// The body's SHA-256 in lowercase hex, written into one buffer (`hex::encode` builds the string
/// a character at a time, a measurable share of an attempt's own cost).
fn sha256_hex(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut text = [0u8; 64];
    // 32 bytes fill the 64 digits exactly; the fallback only keeps this free of a panic.
    match hex::encode_to_slice(digest, &mut text) {
        Ok(()) => String::from_utf8_lossy(&text).into_owned(),
        Err(_) => hex::encode(digest),
    }
}

/// Reads at most `limit` bytes of a response body.
async fn read_limited(mut body: ClientBody, limit: usize) -> (Bytes, bool) {
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = limit - buf.len();
                    if data.len() > room {
                        buf.extend_from_slice(&data[..room]);
                        return (buf.freeze(), true);
                    }
                    buf.extend_from_slice(&data);
                    if buf.len() == limit && !http_body::Body::is_end_stream(&body) {
                        return (buf.freeze(), true);
                    }
                }
            }
            // A body that breaks after the head still has a status worth keeping.
            Some(Err(_)) => return (buf.freeze(), true),
            None => return (buf.freeze(), false),
        }
    }
}

/// Maps a client error to an outcome: refused by the guard, timed out, connect or network.
fn classify_error(error: &(dyn std::error::Error + Send + Sync + 'static)) -> AttemptOutcome {
    if let Some(refusal) = Refusal::find(error) {
        return AttemptOutcome::Refused(refusal.detail().to_owned());
    }
    let mut message = error.to_string();
    let mut timed_out = false;
    let mut connect = error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(hyper_util::client::legacy::Error::is_connect);
    let mut source = error.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            connect |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        message.push_str(": ");
        message.push_str(&err.to_string());
        source = err.source();
    }
    if timed_out {
        AttemptOutcome::Timeout
    } else if connect {
        AttemptOutcome::Connect(message)
    } else {
        AttemptOutcome::Network(message)
    }
}

/// The endpoint without its query string (which may carry tokens), for logs.
pub(crate) fn display_endpoint(endpoint: &str) -> &str {
    endpoint.split(['?', '#']).next().unwrap_or(endpoint)
}
