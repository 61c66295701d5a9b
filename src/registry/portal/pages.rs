//! The portal's pages (`GET`): what an owner sees. Every read is scoped by the viewer's owner
//! through the same [`operations`] as the JSON API.

use std::time::{Duration, SystemTime};

use axum::extract::{Path, RawQuery, State};
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use maud::Markup;
use serde::Deserialize;

use super::views::{self, FilterForm, Frame, WebhookPage, WebhookRow};
use super::{mount_point, problem, session, Portal, Viewer};
use crate::delivery::{
    Conversation, ConversationPosition, ConversationQuery, DeliveryState, Source,
};
use crate::problem::Problem;
use crate::registry::api::{cursor, ConversationView, WebhookView};
use crate::registry::event::rfc3339;
use crate::registry::model::Endpoint;
use crate::registry::operations;
use crate::store::StoreError;

/// Webhooks per page of the list.
const WEBHOOK_PAGE: usize = 50;
/// Recent deliveries a webhook's health is judged on.
const HEALTH_WINDOW: usize = 20;
/// Deliveries per page.
const DELIVERY_PAGE: usize = 25;
/// Deliveries read from the store per round while filtering by event type.
const SCAN_BATCH: usize = 100;
/// Deliveries a page reads at most while filtering by event type: a rare type ends a page
/// early (with a cursor to go on) rather than reading the whole history in one request.
const MAX_SCAN: usize = 2_000;

const STYLE: &str = include_str!("style.css");

pub(super) fn html(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

impl Viewer {
    pub(super) fn frame(&self) -> Frame<'_> {
        Frame {
            base: &self.base,
            owner: self.owner.as_str(),
            csrf: &self.csrf,
        }
    }
}

/// A query the page cannot use: `400` with why.
struct BadQuery(String);

impl IntoResponse for BadQuery {
    fn into_response(self) -> Response {
        bad_query(&self.0)
    }
}

fn bad_query(detail: &str) -> Response {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "Invalid query")
        .with_detail(detail.to_owned())
        .into_response()
}

fn parse<T: serde::de::DeserializeOwned + Default>(query: Option<String>) -> Result<T, BadQuery> {
    match query {
        None => Ok(T::default()),
        Some(query) => serde_urlencoded::from_str(&query).map_err(|err| BadQuery(err.to_string())),
    }
}

pub(super) async fn home(parts: Parts) -> Redirect {
    Redirect::to(&format!("{}/webhooks", mount_point(&parts)))
}

pub(super) async fn style() -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        STYLE,
    )
        .into_response()
}

/// The login form, with a fresh login cookie its CSRF token is bound to.
pub(super) async fn login(State(portal): State<Portal>, parts: Parts) -> Response {
    let base = mount_point(&parts);
    login_page(
        &portal,
        &base,
        &session::CookieScope::of(&parts, &base),
        false,
    )
}

/// The login form (again, with `401`, after a wrong token).
pub(super) fn login_page(
    portal: &Portal,
    base: &str,
    scope: &session::CookieScope,
    failed: bool,
) -> Response {
    let nonce = session::login_nonce();
    let csrf = portal.sessions.login_token(&nonce);
    let mut headers = HeaderMap::new();
    scope.set_login(&mut headers, Some(&nonce));
    let status = if failed {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (status, headers, html(views::login(base, &csrf, failed))).into_response()
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    cursor: Option<String>,
}

/// The owner's webhooks with their health and last attempt.
pub(super) async fn webhooks(
    State(portal): State<Portal>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Response {
    let query: ListQuery = match parse(query) {
        Ok(query) => query,
        Err(bad) => return bad.into_response(),
    };
    let after = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(cursor) => match cursor::parse_webhook(cursor) {
            Some(id) => Some(id),
            None => return bad_query("`cursor` is not one of this list's"),
        },
    };
    let registry = &portal.registry;
    let asked = crate::registry::WebhookPage {
        owner: &viewer.owner,
        after: after.as_deref(),
        limit: WEBHOOK_PAGE + 1,
    };
    let mut page = match registry.subscriptions().list(asked).await {
        Ok(page) => page,
        Err(err) => return problem(operations::OperationError::Subscriptions(err)),
    };
    let next = (page.len() > WEBHOOK_PAGE).then(|| cursor::webhook(&page[WEBHOOK_PAGE - 1].id));
    page.truncate(WEBHOOK_PAGE);
    let now = registry.now();
    let mut rows = Vec::with_capacity(page.len());
    for webhook in &page {
        let recent =
            match operations::conversation_page(registry, webhook, None, None, 0, HEALTH_WINDOW)
                .await
            {
                Ok(recent) => recent,
                Err(err) => return store_problem(err),
            };
        rows.push(health(WebhookView::new(webhook, now), &recent));
    }
    html(views::webhooks(&viewer.frame(), &rows, next.as_deref()))
}

fn store_problem(error: StoreError) -> Response {
    problem(operations::OperationError::Store {
        error,
        delivery_id: String::new(),
    })
}

/// A list row: how many of the recent final deliveries were delivered, and the newest attempt.
fn health(view: WebhookView, recent: &[Conversation]) -> WebhookRow {
    let finished = recent.iter().filter(|c| c.delivery.state.is_final());
    let last_attempt = recent
        .iter()
        .flat_map(|c| c.attempts.last())
        .max_by_key(|a| a.started_at)
        .map(|a| (rfc3339::format(a.started_at), a.outcome.to_string()));
    WebhookRow {
        view,
        delivered: finished
            .clone()
            .filter(|c| c.delivery.state == DeliveryState::Delivered)
            .count(),
        finished: finished.count(),
        last_attempt,
    }
}

#[derive(Deserialize, Default)]
struct DeliveriesQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
    #[serde(flatten)]
    notice: NoticeFields,
}

/// What an action reports on the page it redirects to: a fixed message per kind (the query
/// never carries text to show).
#[derive(Deserialize, Default)]
struct NoticeFields {
    #[serde(default)]
    notice: Option<String>,
    #[serde(default)]
    queued: Option<String>,
}

impl NoticeFields {
    fn text(&self) -> Option<String> {
        Some(match self.notice.as_deref()? {
            "test-queued" => "Test event queued.".to_owned(),
            "resent" => "Re-send queued: the new attempt appears below once made.".to_owned(),
            "recovered" => format!(
                "{} failed deliveries queued again.",
                self.queued
                    .as_deref()
                    .and_then(|q| q.parse::<usize>().ok())
                    .unwrap_or(0)
            ),
            "enabled" => "Webhook enabled.".to_owned(),
            "disabled" => "Webhook disabled: it gets no events until enabled.".to_owned(),
            _ => return None,
        })
    }
}

fn time(text: &str, name: &str) -> Result<Option<SystemTime>, BadQuery> {
    if text.is_empty() {
        return Ok(None);
    }
    rfc3339::parse(text).map(Some).ok_or_else(|| {
        BadQuery(format!(
            "`{name}` is an RFC 3339 date-time such as 2026-01-02T03:04:05Z"
        ))
    })
}

/// A webhook: its settings, actions and a filtered page of its deliveries.
pub(super) async fn webhook(
    State(portal): State<Portal>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let query: DeliveriesQuery = match parse(query) {
        Ok(query) => query,
        Err(bad) => return bad.into_response(),
    };
    let state = match query.state.as_str() {
        "" => None,
        text => match operations::parse_state(text) {
            Some(state) => Some(state),
            None => {
                return bad_query(
                    "`state` is one of pending, in_flight, delivered, failed, refused",
                )
            }
        },
    };
    let (since, until) = match (time(&query.since, "since"), time(&query.until, "until")) {
        (Ok(since), Ok(until)) => (since, until),
        (Err(bad), _) | (_, Err(bad)) => return bad.into_response(),
    };
    let after = match query.cursor.as_str() {
        "" => None,
        text => match cursor::parse_conversation(text) {
            Some(position) => Some(position),
            None => return bad_query("`cursor` is not one of this list's"),
        },
    };
    let registry = &portal.registry;
    let webhook = match operations::load(registry, &viewer.owner, &id).await {
        Ok(webhook) => webhook,
        Err(err) => return problem(err),
    };
    let filter = Filter {
        state,
        event_type: (!query.event_type.is_empty()).then_some(query.event_type.as_str()),
        since,
        until,
    };
    let (deliveries, next) = match filtered_page(registry, &webhook, &filter, after).await {
        Ok(page) => page,
        Err(err) => return store_problem(err),
    };
    let now = registry.now();
    let view = WebhookView::new(&webhook, now);
    let deliveries: Vec<ConversationView> =
        deliveries.into_iter().map(ConversationView::from).collect();
    let form = FilterForm {
        state: query.state.clone(),
        event_type: query.event_type.clone(),
        since: query.since.clone(),
        until: query.until.clone(),
    };
    let page = WebhookPage {
        view: &view,
        filter: &form,
        deliveries: &deliveries,
        next,
        recover_since: rfc3339::format(now - Duration::from_secs(24 * 3600)),
    };
    html(views::webhook(
        &viewer.frame(),
        query.notice.text().as_deref(),
        &page,
    ))
}

struct Filter<'a> {
    state: Option<DeliveryState>,
    event_type: Option<&'a str>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
}

/// One page of the webhook's deliveries, newest first, and the cursor of the next. The store
/// filters by state and `since`; `until` starts the keyset just after it; the event type is
/// matched here, reading batches until the page is full or [`MAX_SCAN`] were read.
async fn filtered_page(
    registry: &crate::registry::WebhookRegistry,
    webhook: &Endpoint,
    filter: &Filter<'_>,
    after: Option<ConversationPosition>,
) -> Result<(Vec<Conversation>, Option<String>), StoreError> {
    // No delivery id is empty, so this position lets through everything created up to
    // `until` (at the stores' millisecond precision).
    let mut position = after.or_else(|| {
        filter
            .until
            .map(|until| ConversationPosition::new("", until + Duration::from_millis(1)))
    });
    let mut page = Vec::new();
    let mut scanned = 0;
    loop {
        let mut query = ConversationQuery::new()
            .endpoint_id(webhook.key())
            .limit(SCAN_BATCH);
        if let Some(state) = filter.state {
            query = query.state(state);
        }
        if let Some(since) = filter.since {
            query = query.since(since);
        }
        if let Some(position) = position.clone() {
            query = query.after(position);
        }
        let batch = registry.engine().conversations(&query).await?;
        let exhausted = batch.len() < SCAN_BATCH;
        for conversation in batch {
            scanned += 1;
            let matches = filter.event_type.is_none_or(
                |wanted| matches!(&conversation.delivery.source, Source::Event(t) if t == wanted),
            );
            position = Some(ConversationPosition::of(&conversation.delivery));
            if matches {
                if page.len() == DELIVERY_PAGE {
                    // One more match exists: the page ends at its last row.
                    let last: &Conversation = &page[DELIVERY_PAGE - 1];
                    let next = cursor::conversation(&last.delivery.id, last.delivery.created_at);
                    return Ok((page, Some(next)));
                }
                page.push(conversation);
            }
        }
        if exhausted {
            return Ok((page, None));
        }
        if scanned >= MAX_SCAN {
            let next = position.map(|p| cursor::conversation(&p.id, p.created_at));
            return Ok((page, next));
        }
    }
}

#[derive(Deserialize, Default)]
struct DeliveryQuery {
    #[serde(flatten)]
    notice: NoticeFields,
}

/// One delivery with every attempt.
pub(super) async fn delivery(
    State(portal): State<Portal>,
    viewer: Viewer,
    Path((id, delivery_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query: DeliveryQuery = match parse(query) {
        Ok(query) => query,
        Err(bad) => return bad.into_response(),
    };
    let registry = &portal.registry;
    let conversation = async {
        let webhook = operations::load(registry, &viewer.owner, &id).await?;
        operations::load_conversation(registry, &webhook, &delivery_id).await
    };
    match conversation.await {
        Ok(conversation) => html(views::delivery(
            &viewer.frame(),
            query.notice.text().as_deref(),
            &id,
            &ConversationView::from(conversation),
        )),
        Err(err) => problem(err),
    }
}
