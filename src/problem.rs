//! `application/problem+json` (RFC 9457) answers: short, stable, never echoing secrets.

use std::borrow::Cow;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

/// The media type of every error body this crate produces.
const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
///
/// `type` is a stable, documented URI-reference of the form `tag:tower-webhooks,2026:<slug>`
/// so clients can branch on it; `title` is the short human summary for that type; `detail` is
/// specific to this occurrence and never contains a secret or an expected signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[must_use]
pub struct Problem {
    #[serde(rename = "type")]
    type_uri: Cow<'static, str>,
    title: Cow<'static, str>,
    #[serde(serialize_with = "status_code")]
    status: StatusCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<Cow<'static, str>>,
    #[serde(skip)]
    retry_after: Option<u64>,
}

fn status_code<S: serde::Serializer>(
    status: &StatusCode,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u16(status.as_u16())
}

impl Problem {
    /// A problem of type `tag:tower-webhooks,2026:{slug}`.
    pub fn new(status: StatusCode, slug: &str, title: impl Into<Cow<'static, str>>) -> Self {
        Self {
            type_uri: format!("tag:tower-webhooks,2026:{slug}").into(),
            title: title.into(),
            status,
            detail: None,
            retry_after: None,
        }
    }

    /// Adds the occurrence-specific detail.
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a `Retry-After` header (seconds) to the response.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Overrides the status (Valohai-compatible mode answers everything with 400).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `type` URI.
    pub fn type_uri(&self) -> &str {
        &self.type_uri
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The detail, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The JSON body.
    pub fn to_bytes(&self) -> Bytes {
        // Serialising a struct of strings and a number cannot fail.
        Bytes::from(serde_json::to_vec(self).expect("problem serialises"))
    }

    /// An HTTP response with this problem as its body, in any body type built from `Bytes`.
    pub fn into_response_with<B: From<Bytes>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.to_bytes()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl axum::response::IntoResponse for Problem {
    fn into_response(self) -> axum::response::Response {
        self.into_response_with()
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{} ({}): {detail}", self.title, self.status.as_u16()),
            None => write!(f, "{} ({})", self.title, self.status.as_u16()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_problem_json() {
        let response: Response<Bytes> = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Rate limited",
        )
        .with_detail("try later")
        .with_retry_after(5)
        .into_response_with();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "tag:tower-webhooks,2026:rate-limited",
                "title": "Rate limited", "status": 429, "detail": "try later"})
        );
    }
}
