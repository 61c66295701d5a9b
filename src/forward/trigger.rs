//! Where a request names its endpoint — the query string, a [`ForwardTo`] request extension,
//! the endpoint function, or (after the inner service ran) a [`ForwardTo`] response extension —
//! and the checks an endpoint passes before anything is queued.

use http::{Response, Uri};

use super::job::Job;
use super::layer::{Config, MAX_ENDPOINT_LEN};
use super::problems::{invalid_endpoint, refused, unavailable};
use super::ForwardTo;
use crate::delivery::{endpoint_host, RefusalKind};
use crate::delivery::{SigningSpec, Source};
use crate::problem::Problem;
use crate::secret::{Secret, SecretSet};

/// What a forwarded delivery's conversation names as its [`Source`]: a response forwarded in
/// sync mode, a result delivered in async mode, and one for the legacy body field.
pub(super) const FORWARD: Source = Source::Origin(std::borrow::Cow::Borrowed("forward"));
pub(super) const FORWARD_ASYNC: Source =
    Source::Origin(std::borrow::Cow::Borrowed("forward_async"));
pub(super) const FORWARD_LEGACY: Source =
    Source::Origin(std::borrow::Cow::Borrowed("forward_legacy"));

/// The request header that carries the signing secret; the inner service never sees it.
const SECRET_HEADER: &str = "x-webhook-secret";

/// A trigger found on the request.
pub(super) struct Trigger {
    pub(super) endpoint: String,
    pub(super) secret: Option<Secret>,
    pub(super) asynchronous: bool,
}

impl Config {
    /// The trigger from the query string, a request extension or the endpoint function.
    pub(super) fn find_trigger(&self, parts: &http::request::Parts) -> Option<Trigger> {
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
    pub(super) fn validate(&self, endpoint: &str, asynchronous: bool) -> Result<Uri, Problem> {
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
    pub(super) async fn check_resolved(&self, uri: &Uri) -> Result<(), Problem> {
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

    pub(super) fn signing(
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
}

/// Removes `X-Webhook-Secret` (every occurrence) and returns the first non-empty value.
pub(super) fn take_secret(headers: &mut http::HeaderMap) -> Option<Secret> {
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
pub(super) fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// For responses without a request trigger: a handler may still ask for forwarding with a
/// [`ForwardTo`] response extension. When the engine cannot take the delivery the caller gets
/// the problem instead of the response, so the delivery is never dropped silently.
pub(super) fn response_trigger<B>(
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
    Ok(Some(Job::new(
        config,
        reservation,
        new_run_id(),
        endpoint,
        signing,
        FORWARD,
    )))
}
