//! The portal's forms (`POST`): login, logout and the actions on a webhook. Each action takes
//! an [`Action`] (so its CSRF token was checked) and calls the same [`operations`] function
//! as the JSON API's route; a success redirects (`303`) to the page that shows the result
//! with a fixed notice, a failure is the API's problem.

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::header::AUTHORIZATION;
use http::HeaderMap;
use serde::Deserialize;

use super::pages::{html, login_page};
use super::session::{self, CookieScope, LOGIN_COOKIE};
use super::views::{self, query, segment};
use super::{csrf_field, csrf_rejected, form_body, mount_point, problem, Action, Portal};
use crate::problem::Problem;
use crate::registry::api::SecretView;
use crate::registry::operations;

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub(super) struct NoFields {}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    token: String,
}

/// Exchanges an API token for a session: the registry's `Authenticate` judges the token as
/// if it came in `Authorization: Bearer`; the session cookie carries a new random id, and
/// the token itself is kept nowhere.
pub(super) async fn login(State(portal): State<Portal>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let base = mount_point(&parts);
    let scope = CookieScope::of(&parts, &base);
    let nonce = session::cookie_value(&parts.headers, LOGIN_COOKIE);
    let body = match form_body(Request::from_parts(parts, body)).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let expected = nonce
        .as_deref()
        .map(|nonce| portal.sessions.login_token(nonce));
    if !expected
        .is_some_and(|expected| session::token_matches(&expected, csrf_field(&body).as_deref()))
    {
        return csrf_rejected();
    }
    let form: LoginForm = match serde_urlencoded::from_bytes(&body) {
        Ok(form) => form,
        Err(err) => return super::invalid_form(&err),
    };
    let owner = match http::Request::builder()
        .header(AUTHORIZATION, format!("Bearer {}", form.token.trim()))
        .body(())
    {
        Ok(request) => portal.registry.authenticate(&request.into_parts().0).await,
        // Not a header value (control characters): no token of anyone's.
        Err(_) => None,
    };
    let Some(owner) = owner else {
        return login_page(&portal, &base, &scope, true);
    };
    let id = portal.sessions.start(owner);
    let mut headers = HeaderMap::new();
    scope.set_session(&mut headers, Some(&id));
    scope.set_login(&mut headers, None);
    (headers, Redirect::to(&format!("{base}/webhooks"))).into_response()
}

/// Ends the session and clears its cookie.
pub(super) async fn logout(
    State(portal): State<Portal>,
    parts: http::request::Parts,
    action: Action<NoFields>,
) -> Response {
    let viewer = action.viewer;
    portal.sessions.end(&viewer.identity);
    let mut headers = HeaderMap::new();
    CookieScope::of(&parts, &viewer.base).set_session(&mut headers, None);
    (headers, Redirect::to(&format!("{}/login", viewer.base))).into_response()
}

fn webhook_url(base: &str, id: &str) -> String {
    format!("{base}/webhooks/{}", segment(id))
}

/// `POST …/deliveries/{delivery_id}/resend`: as `POST /v1/webhooks/{id}/conversations/{delivery_id}/resend`.
pub(super) async fn resend(
    State(portal): State<Portal>,
    Path((id, delivery_id)): Path<(String, String)>,
    action: Action<NoFields>,
) -> Response {
    let viewer = action.viewer;
    match operations::resend(&portal.registry, &viewer.owner, &id, &delivery_id).await {
        Ok(()) => Redirect::to(&format!(
            "{}/deliveries/{}{}",
            webhook_url(&viewer.base, &id),
            segment(&delivery_id),
            query(&[("notice", "resent")])
        ))
        .into_response(),
        Err(err) => problem(err),
    }
}

#[derive(Deserialize)]
pub(super) struct TestForm {
    #[serde(default)]
    event_type: Option<String>,
}

/// `POST …/test`: as `POST /v1/webhooks/{id}/trigger`.
pub(super) async fn test_event(
    State(portal): State<Portal>,
    Path(id): Path<String>,
    action: Action<TestForm>,
) -> Response {
    let Action { viewer, form } = action;
    let event_type = form.event_type.filter(|name| !name.is_empty());
    match operations::trigger(&portal.registry, &viewer.owner, &id, event_type).await {
        Ok(_) => Redirect::to(&format!(
            "{}{}",
            webhook_url(&viewer.base, &id),
            query(&[("notice", "test-queued")])
        ))
        .into_response(),
        Err(err) => problem(err),
    }
}

#[derive(Deserialize)]
pub(super) struct RecoverForm {
    #[serde(default)]
    since: String,
}

/// `POST …/recover`: as `POST /v1/webhooks/{id}/recover`.
pub(super) async fn recover(
    State(portal): State<Portal>,
    Path(id): Path<String>,
    action: Action<RecoverForm>,
) -> Response {
    let Action { viewer, form } = action;
    match operations::recover(&portal.registry, &viewer.owner, &id, form.since.trim()).await {
        Ok(queued) => Redirect::to(&format!(
            "{}{}",
            webhook_url(&viewer.base, &id),
            query(&[("notice", "recovered"), ("queued", &queued.to_string())])
        ))
        .into_response(),
        Err(err) => problem(err),
    }
}

#[derive(Deserialize)]
pub(super) struct RotateForm {
    #[serde(default)]
    grace_period_seconds: String,
}

/// `POST …/rotate`: as `POST /v1/webhooks/{id}/secret/rotate`; the answer is the one page
/// that shows a secret (never cached: every portal answer is `no-store`).
pub(super) async fn rotate(
    State(portal): State<Portal>,
    Path(id): Path<String>,
    action: Action<RotateForm>,
) -> Response {
    let Action { viewer, form } = action;
    let grace = match form.grace_period_seconds.trim() {
        "" => None,
        text => match text.parse::<u64>() {
            Ok(seconds) => Some(seconds),
            Err(_) => {
                return Problem::new(
                    http::StatusCode::BAD_REQUEST,
                    "invalid-grace-period",
                    "Invalid grace period",
                )
                .with_detail("the grace period is a whole number of seconds")
                .into_response()
            }
        },
    };
    let registry = &portal.registry;
    match operations::rotate_secret(registry, &viewer.owner, &id, grace).await {
        Ok(webhook) => {
            let secret = SecretView::new(&webhook, registry.now());
            let until = secret.previous.iter().map(|p| p.expires_at.as_str()).max();
            html(views::rotated(&viewer.frame(), &id, &secret.secret, until))
        }
        Err(err) => problem(err),
    }
}

async fn set_enabled(
    portal: &Portal,
    id: &str,
    action: Action<NoFields>,
    enabled: bool,
) -> Response {
    let viewer = action.viewer;
    let result = operations::set_enabled(
        &portal.registry,
        &viewer.owner,
        id,
        enabled,
        "disabled in the portal",
    )
    .await;
    match result {
        Ok(_) => Redirect::to(&format!(
            "{}{}",
            webhook_url(&viewer.base, id),
            query(&[("notice", if enabled { "enabled" } else { "disabled" })])
        ))
        .into_response(),
        Err(err) => problem(err),
    }
}

/// `POST …/enable`: as `POST /v1/webhooks/{id}/enable`.
pub(super) async fn enable(
    State(portal): State<Portal>,
    Path(id): Path<String>,
    action: Action<NoFields>,
) -> Response {
    set_enabled(&portal, &id, action, true).await
}

/// `POST …/disable`: as `POST /v1/webhooks/{id}/disable`.
pub(super) async fn disable(
    State(portal): State<Portal>,
    Path(id): Path<String>,
    action: Action<NoFields>,
) -> Response {
    set_enabled(&portal, &id, action, false).await
}
