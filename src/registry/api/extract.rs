//! Extractors whose rejections are problem+json (the authenticated owner, path parameters,
//! JSON bodies) and where the router is mounted.

use std::convert::Infallible;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, NestedPath, OriginalUri, Path, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::registry::model::Owner;
use crate::registry::WebhookRegistry;

/// The authenticated owner.
pub(super) struct Authed(pub(super) Owner);

impl FromRequestParts<WebhookRegistry> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        registry: &WebhookRegistry,
    ) -> Result<Self, Self::Rejection> {
        registry
            .authenticate(parts)
            .await
            .map(Authed)
            .ok_or_else(ApiError::unauthorized)
    }
}

/// Path parameters with a problem+json rejection.
pub(super) struct ApiPath<T>(pub(super) T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|err: PathRejection| {
                ApiError::bad_request("invalid-path", "Invalid path parameter", err.body_text())
            })
    }
}

/// A JSON body with problem+json rejections. An empty body reads as `null` (so optional
/// bodies are `Option<T>`).
pub(super) struct ApiJson<T>(pub(super) T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = request.headers().get(CONTENT_TYPE) {
            if !is_json(content_type) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Expected a JSON body",
                )
                .detail("send `Content-Type: application/json`"));
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|err: BytesRejection| {
                if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload-too-large",
                        "The request body is too large",
                    )
                } else {
                    ApiError::bad_request(
                        "invalid-body",
                        "Unreadable request body",
                        err.body_text(),
                    )
                }
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(text).map(Self).map_err(|err| {
            if err.is_syntax() || err.is_eof() {
                ApiError::bad_request("invalid-json", "Malformed JSON", err.to_string())
            } else if text == b"null" {
                ApiError::bad_request(
                    "invalid-request",
                    "Invalid request body",
                    "a JSON body is required",
                )
            } else {
                ApiError::bad_request("invalid-request", "Invalid request body", err.to_string())
            }
        })
    }
}

pub(super) fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(text) = content_type.to_str() else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Where the registry's router is nested (`""` when it is not), so links and documented
/// paths are the ones a client really calls.
pub(super) struct MountPoint {
    /// The prefix as routed, such as `/tenants/{tenant}`: what the document shows.
    pub(super) template: String,
    /// The prefix of this very request, such as `/tenants/acme`: what links start with.
    pub(super) concrete: String,
}

impl<S: Send + Sync> FromRequestParts<S> for MountPoint {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let template = parts
            .extensions
            .get::<NestedPath>()
            .map(|nested| nested.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        // A nested router sees the path without its prefix; the outermost router kept the
        // whole one, so the prefix is the difference (with path parameters filled in).
        let concrete = parts
            .extensions
            .get::<OriginalUri>()
            .and_then(|original| original.path().strip_suffix(parts.uri.path()))
            .map(|prefix| prefix.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| template.clone());
        Ok(Self { template, concrete })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(&HeaderValue::from_static(ok)));
        }
        assert!(!is_json(&HeaderValue::from_static(
            "application/x-www-form-urlencoded"
        )));
    }
}
