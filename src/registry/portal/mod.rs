//! The delivery portal (feature `portal`): server-rendered HTML pages where each owner sees
//! its webhooks, their deliveries and every attempt, and acts on them. See
//! [`WebhookRegistry::portal`].
//!
//! One module per concern: [`session`] (login, cookies, CSRF tokens), [`views`] (the HTML,
//! escaped by `maud`), [`pages`] (the `GET` handlers), [`actions`] (the `POST` handlers, each
//! a call of the same [`operations`](super::operations) function as the JSON API).

mod actions;
mod pages;
mod session;
mod views;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use self::session::{Identity, Sessions};
use super::model::Owner;
use super::WebhookRegistry;
use crate::problem::Problem;

/// No script, no inline style, nothing from elsewhere, never framed, forms post only here.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The largest form body accepted.
const MAX_FORM: usize = 16 * 1024;

/// The portal's shared state: the registry and the portal's sessions.
#[derive(Clone)]
struct Portal {
    registry: WebhookRegistry,
    sessions: Arc<Sessions>,
}

impl WebhookRegistry {
    /// The delivery portal: server-rendered HTML pages (no script) where each owner sees its
    /// webhooks (state, event types, health, last attempt), a webhook's deliveries (filtered
    /// by state, event type and time, paged by cursor) and each delivery's attempts (status,
    /// latency, headers with secrets redacted, bodies truncated), and re-sends a delivery,
    /// recovers the failed ones since a time, rotates the secret (the new one shown once),
    /// disables or enables the webhook and sends a test event — each through the same code
    /// as the JSON API's route.
    ///
    /// Nest it where it should be served; its links follow the mount point:
    ///
    /// ```
    /// use tower_webhooks::registry::{BearerTokens, EventType, WebhookRegistry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = WebhookRegistry::builder()
    ///     .event_type(EventType::new("invoice.paid", "An invoice was paid"))
    ///     .auth(BearerTokens::new().token("key-of-acme", "acme"))
    ///     .build();
    /// let app = axum::Router::new()
    ///     .merge(registry.router())
    ///     .nest("/portal", registry.portal());
    /// # let _: axum::Router = app;
    /// # }
    /// ```
    ///
    /// Owners log in at `/login` with the same API token the JSON API takes (the registry's
    /// [`Authenticate`](super::Authenticate) decides), and see only their own webhooks. The
    /// browser keeps a random session id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure`
    /// over https, or behind a proxy that says `X-Forwarded-Proto: https`); the portal keeps
    /// its digest and the owner for 8 hours, in memory (each call of `portal` has its own
    /// sessions, and a restart logs everyone out). A request the application's own outer
    /// layer authenticated (what [`PartsAuth`](super::PartsAuth) reads) needs no login.
    ///
    /// Every form carries a CSRF token checked on every `POST` (`403` otherwise); every page
    /// is sent with a strict `Content-Security-Policy`, `X-Frame-Options: DENY` and
    /// `Cache-Control: no-store`, and shows what users sent (URLs, payloads, answers) as
    /// escaped text. No secret appears on a page except the new one after a rotation.
    /// Errors are `application/problem+json`, as in the API.
    #[cfg_attr(docsrs, doc(cfg(feature = "portal")))]
    pub fn portal(&self) -> Router {
        let portal = Portal {
            registry: self.clone(),
            sessions: Arc::new(Sessions::new()),
        };
        Router::new()
            .route("/", get(pages::home))
            .route("/style.css", get(pages::style))
            .route("/login", get(pages::login).post(actions::login))
            .route("/logout", post(actions::logout))
            .route("/webhooks", get(pages::webhooks))
            .route("/webhooks/{id}", get(pages::webhook))
            .route(
                "/webhooks/{id}/deliveries/{delivery_id}",
                get(pages::delivery),
            )
            .route(
                "/webhooks/{id}/deliveries/{delivery_id}/resend",
                post(actions::resend),
            )
            .route("/webhooks/{id}/test", post(actions::test_event))
            .route("/webhooks/{id}/recover", post(actions::recover))
            .route("/webhooks/{id}/rotate", post(actions::rotate))
            .route("/webhooks/{id}/enable", post(actions::enable))
            .route("/webhooks/{id}/disable", post(actions::disable))
            .fallback(not_found)
            .layer(axum::middleware::map_response(security_headers))
            .with_state(portal)
    }
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "No such page")
}

/// The headers of every portal answer, pages and problems alike.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Delivery ids in the URLs stay here.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(CACHE_CONTROL) {
        // Tenant data: never kept by a shared cache or the browser's history cache.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Where the portal is mounted (`""` at the root): the nesting router's prefix, with path
/// parameters filled in, so links and cookie paths are the ones the browser uses.
fn mount_point(parts: &Parts) -> String {
    let Some(original) = parts.extensions.get::<OriginalUri>() else {
        return String::new();
    };
    let (original, inner) = (original.path(), parts.uri.path());
    original
        .strip_suffix(inner)
        // The mount point itself (`/portal`) reaches the nested router as `/`.
        .or_else(|| (inner == "/").then_some(original))
        .map(|prefix| prefix.trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// The person looking: the owner they act for, how they were authenticated, the CSRF token
/// their forms carry and the portal's mount point. Without a session (nor the application's
/// own authentication) a page redirects to the login form and an action is `401`.
struct Viewer {
    owner: Owner,
    identity: Identity,
    csrf: String,
    base: String,
}

impl FromRequestParts<Portal> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, portal: &Portal) -> Result<Self, Response> {
        let base = mount_point(parts);
        let found = match portal.sessions.find(&parts.headers) {
            Some((owner, digest)) => Some((owner, Identity::Session(digest))),
            None => portal
                .registry
                .authenticate(parts)
                .await
                .map(|owner| (owner, Identity::Request)),
        };
        let Some((owner, identity)) = found else {
            return Err(if parts.method == http::Method::GET {
                Redirect::to(&format!("{base}/login")).into_response()
            } else {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Not logged in")
                    .with_detail("log in to the portal first")
                    .into_response()
            });
        };
        let csrf = portal.sessions.csrf_token(&identity, &owner);
        Ok(Self {
            owner,
            identity,
            csrf,
            base,
        })
    }
}

/// A `POST`ed form (`application/x-www-form-urlencoded`, at most 16 KiB) whose `csrf` field
/// matches the viewer's token: every action's input, so no action runs without the check.
struct Action<T> {
    viewer: Viewer,
    form: T,
}

/// The `csrf` field of a form body.
fn csrf_field(body: &[u8]) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value)
}

fn csrf_rejected() -> Response {
    Problem::new(
        StatusCode::FORBIDDEN,
        "csrf-rejected",
        "Form token missing or stale",
    )
    .with_detail("reload the page and submit the form again")
    .into_response()
}

/// The body of a form `POST`, or the problem (`415`, `413`, `400`).
async fn form_body(request: Request) -> Result<Bytes, Response> {
    let urlencoded = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !urlencoded {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Send the form as application/x-www-form-urlencoded",
        )
        .into_response());
    }
    axum::body::to_bytes(request.into_body(), MAX_FORM)
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "The form is too large",
            )
            .into_response()
        })
}

fn invalid_form(err: &serde_urlencoded::de::Error) -> Response {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-form", "Invalid form")
        .with_detail(err.to_string())
        .into_response()
}

impl<T: DeserializeOwned + Send> FromRequest<Portal> for Action<T> {
    type Rejection = Response;

    async fn from_request(request: Request, portal: &Portal) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, portal).await?;
        let body = form_body(Request::from_parts(parts, body)).await?;
        if !session::token_matches(&viewer.csrf, csrf_field(&body).as_deref()) {
            return Err(csrf_rejected());
        }
        let form = serde_urlencoded::from_bytes(&body).map_err(|err| invalid_form(&err))?;
        Ok(Self { viewer, form })
    }
}

/// The JSON API's problem for an operation's error: one mapping for both front ends.
fn problem(err: super::operations::OperationError) -> Response {
    super::api::ApiError::from(err).into_response()
}
