//! What the API accepts: webhook ids, the fields of a webhook, endpoint URLs, custom headers.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::error::{printable, ApiError, ApiResult};
use crate::registry::model::{EndpointRateLimit, SigningScheme};
use crate::registry::WebhookRegistry;

const MAX_HEADERS: usize = 20;

pub(super) fn validate_id(id: &str) -> ApiResult<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid-id",
            "Invalid webhook id",
            "an id is 1 to 64 letters, digits, `_` or `-`",
        ))
    }
}

/// The validated fields shared by create and update.
pub(super) struct Fields {
    pub(super) endpoint_url: String,
    pub(super) event_types: Vec<String>,
    pub(super) description: String,
    pub(super) scheme: SigningScheme,
    pub(super) rate_limit: Option<EndpointRateLimit>,
}

impl WebhookRegistry {
    pub(super) async fn validate_fields(
        &self,
        endpoint_url: String,
        event_types: Vec<String>,
        description: Option<String>,
        scheme: Option<String>,
        rate_limit: Option<EndpointRateLimit>,
    ) -> ApiResult<Fields> {
        let endpoint_url = self.validate_endpoint(endpoint_url).await?;
        if event_types.is_empty() || event_types.len() > 32 {
            return Err(ApiError::bad_request(
                "invalid-event-types",
                "Invalid event types",
                "give 1 to 32 event types",
            ));
        }
        let mut types: Vec<String> = Vec::with_capacity(event_types.len());
        for name in event_types {
            if self.event_type(&name).is_none() {
                let known: Vec<&str> = self.event_types().map(|e| &*e.name).collect();
                return Err(ApiError::bad_request(
                    "unknown-event-type",
                    "Unknown event type",
                    format!(
                        "`{}` is not an event type; known: {}",
                        printable(&name),
                        known.join(", ")
                    ),
                ));
            }
            if !types.contains(&name) {
                types.push(name);
            }
        }
        let description = description.unwrap_or_default();
        if description.chars().count() > 1024 {
            return Err(ApiError::bad_request(
                "invalid-description",
                "Invalid description",
                "at most 1024 characters",
            ));
        }
        let scheme = match scheme {
            None => SigningScheme::default(),
            Some(name) => SigningScheme::from_name(&name).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid-scheme",
                    "Unknown or unsupported signature scheme",
                    format!(
                        "`{}` cannot sign; use one of: {}",
                        printable(&name),
                        SigningScheme::ALL.map(SigningScheme::as_str).join(", ")
                    ),
                )
            })?,
        };
        let rate_limit = match rate_limit {
            Some(limit)
                if limit.per_second == 0 || limit.per_second > 10_000 || limit.burst > 10_000 =>
            {
                return Err(ApiError::bad_request(
                    "invalid-rate-limit",
                    "Invalid rate limit",
                    "`per_second` is 1 to 10000, `burst` at most 10000",
                ))
            }
            other => other.map(EndpointRateLimit::normalised),
        };
        Ok(Fields {
            endpoint_url,
            event_types: types,
            description,
            scheme,
            rate_limit,
        })
    }

    /// The URL's syntax and the SSRF guard: the scheme, a literal address, and what the host
    /// name resolves to now (the guard checks again at every delivery).
    async fn validate_endpoint(&self, url: String) -> ApiResult<String> {
        let invalid = |detail: String| {
            ApiError::bad_request("invalid-endpoint-url", "Invalid endpoint URL", detail)
        };
        if url.len() > 2048 {
            return Err(invalid("at most 2048 characters".into()));
        }
        let guard = self.engine().guard();
        let uri = guard.check_url(&url).map_err(|refusal| {
            use crate::delivery::RefusalKind;
            match refusal.kind() {
                RefusalKind::InvalidUrl | RefusalKind::Scheme => {
                    invalid(refusal.detail().to_owned())
                }
                _ => refused(refusal.detail()),
            }
        })?;
        if uri.path_and_query().is_none() || uri.scheme().is_none() {
            return Err(invalid("an absolute URL is required".into()));
        }
        if let Some(host) = uri.host() {
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            let resolved =
                tokio::time::timeout(Duration::from_secs(3), guard.resolve(host, port)).await;
            if let Ok(Err(err)) = resolved {
                if let Some(refusal) = crate::delivery::Refusal::find(&*err) {
                    return Err(refused(refusal.detail()));
                }
                // A name that does not resolve yet is accepted: the guard checks every delivery.
            }
        }
        Ok(url)
    }
}

pub(super) fn refused(detail: &str) -> ApiError {
    ApiError::bad_request(
        "endpoint-not-allowed",
        "The endpoint URL points to an address that is not allowed",
        detail.to_owned(),
    )
}

/// Headers the engine sets or that would break the request or forge a signature.
pub(super) fn refused_header(name: &str) -> bool {
    const REFUSED: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "user-agent",
        "x-request-id",
        "expect",
        // Signature formats' other headers.
        "webhook-id",
        "webhook-timestamp",
        "svix-id",
        "svix-timestamp",
        "x-slack-request-timestamp",
        "x-cerebrium-webhook-id",
    ];
    let name = name.to_ascii_lowercase();
    REFUSED.contains(&name.as_str())
        || crate::scheme::SIGNATURE_HEADERS.contains(&name.as_str())
        || name.ends_with("-signature")
}

/// Header names whose values are shown redacted.
pub(super) fn validate_headers(
    headers: BTreeMap<String, String>,
) -> ApiResult<Vec<(String, String)>> {
    let invalid =
        |detail: String| ApiError::bad_request("invalid-header", "Header refused", detail);
    if headers.len() > MAX_HEADERS {
        return Err(invalid(format!("at most {MAX_HEADERS} headers")));
    }
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`{}` is not a valid header name", printable(&name))))?;
        if refused_header(parsed.as_str()) {
            return Err(invalid(format!(
                "`{}` is set by the delivery itself (hop-by-hop, framing, or signature)",
                parsed.as_str()
            )));
        }
        if value.len() > 1024 || HeaderValue::from_str(&value).is_err() {
            return Err(invalid(format!(
                "the value of `{}` is not a valid header value (visible ASCII, at most 1024 bytes)",
                parsed.as_str()
            )));
        }
        out.push((parsed.as_str().to_owned(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        for name in [
            "Connection",
            "host",
            "Content-Length",
            "Nextmv-Signature",
            "webhook-id",
            "Authorization",
            "X-Foo-Signature",
        ] {
            assert!(refused_header(name), "{name}");
        }
        for name in ["x-tenant", "x-api-key"] {
            assert!(!refused_header(name), "{name}");
        }
    }

    #[test]
    fn ids() {
        assert!(validate_id("my-webhook_1").is_ok());
        for id in ["", "a b", "a/b", "a.b", &"x".repeat(65)] {
            assert!(validate_id(id).is_err(), "{id}");
        }
    }
}
