//! The portal's HTML. `maud` escapes every interpolated value, so a URL, payload, header or
//! answer that holds markup is shown as text; nothing here builds HTML from strings. Links are
//! built from percent-encoded path segments and query values, and no user value is ever a
//! link target or a script.

use maud::{html, Markup, DOCTYPE};

use crate::registry::api::{AttemptView, ConversationView, WebhookView};

/// How much of a request or response body a page shows.
pub(super) const BODY_PREVIEW: usize = 4096;

/// What every page knows about its viewer.
pub(super) struct Frame<'a> {
    pub(super) base: &'a str,
    pub(super) owner: &'a str,
    pub(super) csrf: &'a str,
}

/// `text` as one path segment: everything but unreserved characters percent-encoded.
pub(super) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A query string from its pairs (values form-encoded), empty ones left out.
pub(super) fn query(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs.iter().filter(|(_, value)| !value.is_empty()) {
        serializer.append_pair(name, value);
    }
    let query = serializer.finish();
    if query.is_empty() {
        query
    } else {
        format!("?{query}")
    }
}

/// At most [`BODY_PREVIEW`] bytes of `text` (on a character boundary), and whether it was cut.
fn preview(text: &str) -> (&str, bool) {
    if text.len() <= BODY_PREVIEW {
        return (text, false);
    }
    let mut end = BODY_PREVIEW;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

fn hidden_csrf(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A page: the header with the owner and the logout form, an optional notice, the content.
pub(super) fn page(
    frame: &Frame<'_>,
    title: &str,
    notice: Option<&str>,
    content: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · webhooks" }
                link rel="stylesheet" href=(format!("{}/style.css", frame.base));
            }
            body {
                header {
                    a href=(format!("{}/webhooks", frame.base)) { "Webhooks" }
                    span.owner { "signed in as " strong { (frame.owner) } }
                    form method="post" action=(format!("{}/logout", frame.base)) {
                        (hidden_csrf(frame.csrf))
                        button type="submit" { "Log out" }
                    }
                }
                main {
                    @if let Some(notice) = notice {
                        p.notice role="status" { (notice) }
                    }
                    (content)
                }
            }
        }
    }
}

/// The login form.
pub(super) fn login(base: &str, csrf: &str, failed: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Log in · webhooks" }
                link rel="stylesheet" href=(format!("{base}/style.css"));
            }
            body {
                main.login {
                    h1 { "Webhook deliveries" }
                    @if failed {
                        p.error role="alert" { "That API token is not valid." }
                    }
                    form method="post" action=(format!("{base}/login")) {
                        (hidden_csrf(csrf))
                        label for="token" { "API token" }
                        input #token type="password" name="token" autocomplete="off" required;
                        button #login type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// One webhook in the list, with what its recent deliveries say.
pub(super) struct WebhookRow {
    pub(super) view: WebhookView,
    /// Delivered and final deliveries among the recent ones.
    pub(super) delivered: usize,
    pub(super) finished: usize,
    /// The newest attempt: when, and what happened.
    pub(super) last_attempt: Option<(String, String)>,
}

fn state_badge(view: &WebhookView) -> Markup {
    html! {
        @if view.enabled {
            span.badge.enabled { "enabled" }
        } @else {
            span.badge.disabled { "disabled" }
            @if let Some(reason) = &view.disabled_reason { " " small { (reason) } }
        }
    }
}

/// The owner's webhooks.
pub(super) fn webhooks(frame: &Frame<'_>, rows: &[WebhookRow], next: Option<&str>) -> Markup {
    let content = html! {
        h1 { "Webhooks" }
        @if rows.is_empty() {
            p { "No webhooks yet: create one through the API." }
        } @else {
            table #webhooks {
                thead { tr { th { "Webhook" } th { "Endpoint" } th { "State" } th { "Event types" } th { "Health" } th { "Last attempt" } } }
                tbody {
                    @for row in rows {
                        tr data-webhook=(row.view.id) {
                            td { a href=(format!("{}/webhooks/{}", frame.base, segment(&row.view.id))) { (row.view.id) } }
                            td.url { (row.view.endpoint_url) }
                            td { (state_badge(&row.view)) }
                            td { (row.view.event_types.join(", ")) }
                            td {
                                @if row.finished == 0 {
                                    "no finished deliveries"
                                } @else {
                                    span.health.ok[row.delivered == row.finished].failing[row.delivered < row.finished] {
                                        (row.delivered) " of " (row.finished) " recent delivered"
                                    }
                                }
                            }
                            td {
                                @match &row.last_attempt {
                                    Some((at, outcome)) => { (outcome) br; small { (at) } },
                                    None => { "none" },
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            a.next href=(format!("{}/webhooks{}", frame.base, query(&[("cursor", next)]))) { "More webhooks →" }
        }
    };
    page(frame, "Webhooks", None, content)
}

/// The deliveries filter as the form shows it.
#[derive(Default)]
pub(super) struct FilterForm {
    pub(super) state: String,
    pub(super) event_type: String,
    pub(super) since: String,
    pub(super) until: String,
}

/// The states a delivery can be in, by their API names.
const STATES: [&str; 5] = ["pending", "in_flight", "delivered", "failed", "refused"];

/// A webhook: its settings, its actions and a page of its deliveries.
pub(super) struct WebhookPage<'a> {
    pub(super) view: &'a WebhookView,
    pub(super) filter: &'a FilterForm,
    pub(super) deliveries: &'a [ConversationView],
    pub(super) next: Option<String>,
    /// The recover form's default `since`.
    pub(super) recover_since: String,
}

pub(super) fn webhook(frame: &Frame<'_>, notice: Option<&str>, w: &WebhookPage<'_>) -> Markup {
    let view = w.view;
    let here = format!("{}/webhooks/{}", frame.base, segment(&view.id));
    let content = html! {
        h1 { "Webhook " code { (view.id) } }
        dl.settings {
            dt { "Endpoint" } dd.url #endpoint { (view.endpoint_url) }
            @if !view.description.is_empty() { dt { "Description" } dd { (view.description) } }
            dt { "State" } dd #state { (state_badge(view)) }
            dt { "Event types" } dd { (view.event_types.join(", ")) }
            dt { "Signature" } dd { (view.scheme.as_str()) }
            @if let Some(ends) = &view.rotation_ends_at { dt { "Previous secret signs until" } dd { (ends) } }
            @if !view.headers.is_empty() {
                dt { "Custom headers" }
                dd { (view.headers.keys().cloned().collect::<Vec<_>>().join(", ")) " (values hidden)" }
            }
            dt { "Created" } dd { (view.created_at) }
        }
        section.actions {
            h2 { "Actions" }
            form method="post" action=(format!("{here}/test")) {
                (hidden_csrf(frame.csrf))
                select name="event_type" aria-label="Event type" {
                    @for name in &view.event_types { option value=(name) { (name) } }
                }
                button #send-test type="submit" { "Send a test event" }
            }
            @if view.enabled {
                form method="post" action=(format!("{here}/disable")) {
                    (hidden_csrf(frame.csrf))
                    button #disable type="submit" { "Disable" }
                }
            } @else {
                form method="post" action=(format!("{here}/enable")) {
                    (hidden_csrf(frame.csrf))
                    button #enable type="submit" { "Enable" }
                }
            }
            form method="post" action=(format!("{here}/rotate")) {
                (hidden_csrf(frame.csrf))
                label { "Grace period (seconds) " input type="number" name="grace_period_seconds" min="0" max="2592000" placeholder="default"; }
                button #rotate type="submit" { "Rotate the secret" }
            }
            form method="post" action=(format!("{here}/recover")) {
                (hidden_csrf(frame.csrf))
                label { "Failed since " input type="text" name="since" value=(w.recover_since) required; }
                button #recover type="submit" { "Re-send failed deliveries" }
            }
        }
        section {
            h2 { "Deliveries" }
            form.filter method="get" action=(here) {
                label { "State " select name="state" {
                    option value="" { "any" }
                    @for state in STATES { option value=(state) selected[w.filter.state == state] { (state) } }
                } }
                label { "Event type " select name="event_type" {
                    option value="" { "any" }
                    @for name in &view.event_types { option value=(name) selected[&w.filter.event_type == name] { (name) } }
                } }
                label { "Since " input type="text" name="since" value=(w.filter.since) placeholder="2026-01-02T03:04:05Z"; }
                label { "Until " input type="text" name="until" value=(w.filter.until) placeholder="RFC 3339"; }
                button type="submit" { "Filter" }
            }
            @if w.deliveries.is_empty() {
                p #no-deliveries { "No deliveries match." }
            } @else {
                table #deliveries {
                    thead { tr { th { "Delivery" } th { "Event type" } th { "State" } th { "Attempts" } th { "Last answer" } th { "Created" } } }
                    tbody {
                        @for delivery in w.deliveries {
                            tr.delivery data-state=(delivery.state) {
                                td { a href=(format!("{here}/deliveries/{}", segment(&delivery.delivery_id))) { code { (delivery.delivery_id) } } }
                                td { (delivery.event_type.as_deref().unwrap_or("")) }
                                td { span.badge.(delivery.state) { (delivery.state) } }
                                td { (delivery.attempts.len()) }
                                td { (delivery.attempts.last().map(|a| a.outcome.detail.as_str()).unwrap_or("")) }
                                td { (delivery.created_at) }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = &w.next {
                a.next href=(format!("{here}{}", query(&[
                    ("state", &w.filter.state), ("event_type", &w.filter.event_type),
                    ("since", &w.filter.since), ("until", &w.filter.until), ("cursor", next),
                ]))) { "Older deliveries →" }
            }
        }
    };
    page(frame, &view.id, notice, content)
}

fn header_table(headers: &[(String, String)]) -> Markup {
    html! {
        table.headers {
            @for (name, value) in headers { tr { th { (name) } td { (value) } } }
        }
    }
}

fn attempt(attempt: &AttemptView) -> Markup {
    html! {
        section.attempt data-number=(attempt.number) {
            h3 {
                "Attempt " (attempt.number) " · " span.outcome { (attempt.outcome.detail) }
                @if attempt.manual { " " span.badge { "re-send" } }
            }
            p {
                "Started " (attempt.started_at) " · "
                span.latency { (format!("{:.1}", attempt.latency_ms)) " ms" }
                " · " (attempt.body_size) " bytes, SHA-256 " code { (attempt.body_sha256) }
            }
            details {
                summary { "Request headers" }
                (header_table(&attempt.request_headers))
            }
            @if let Some(response) = &attempt.response {
                p { "Answer: " strong.status { "HTTP " (response.status) } }
                details {
                    summary { "Response headers" }
                    (header_table(&response.headers))
                }
                @let (body, cut) = preview(&response.body);
                pre.body { (body) }
                @if cut || response.body_truncated { p.truncated { "(truncated)" } }
            }
        }
    }
}

/// One delivery: the request and every attempt, newest first.
pub(super) fn delivery(
    frame: &Frame<'_>,
    notice: Option<&str>,
    webhook_id: &str,
    conversation: &ConversationView,
) -> Markup {
    let webhook = format!("{}/webhooks/{}", frame.base, segment(webhook_id));
    let final_state = matches!(
        conversation.state.as_str(),
        "delivered" | "failed" | "refused"
    );
    let (body, cut) = preview(&conversation.request_body);
    let content = html! {
        p { a href=(webhook) { "← webhook " (webhook_id) } }
        h1 { "Delivery " code { (conversation.delivery_id) } }
        dl.settings {
            dt { "State" } dd #delivery-state { span.badge.(conversation.state) { (conversation.state) } }
            dt { "Event type" } dd { (conversation.event_type.as_deref().unwrap_or("")) }
            dt { "Endpoint" } dd.url { (conversation.endpoint_url) }
            dt { "Created" } dd { (conversation.created_at) }
            @if let Some(next) = &conversation.next_attempt_at { dt { "Next attempt" } dd { (next) } }
            @if let Some(error) = &conversation.last_error { dt { "Last error" } dd { (error) } }
        }
        @if final_state {
            form method="post" action=(format!("{webhook}/deliveries/{}/resend", segment(&conversation.delivery_id))) {
                (hidden_csrf(frame.csrf))
                button #resend type="submit" { "Re-send now" }
            }
        }
        h2 { "Request body" }
        pre.body #request-body { (body) }
        @if cut { p.truncated { "(truncated)" } }
        h2 { "Attempts (" (conversation.attempts.len()) ")" }
        div #attempts {
            @for a in conversation.attempts.iter().rev() { (attempt(a)) }
        }
    };
    page(frame, &conversation.delivery_id, notice, content)
}

/// The answer to a rotation: the new secret, shown this once.
pub(super) fn rotated(
    frame: &Frame<'_>,
    webhook_id: &str,
    secret: &str,
    previous_until: Option<&str>,
) -> Markup {
    let content = html! {
        h1 { "New secret for " code { (webhook_id) } }
        p { "Copy it now: it is not shown again (the API's secret route returns it to the owner)." }
        pre #new-secret { (secret) }
        @if let Some(until) = previous_until {
            p { "The previous secret keeps signing until " (until) "." }
        }
        p { a href=(format!("{}/webhooks/{}", frame.base, segment(webhook_id))) { "Back to the webhook" } }
    };
    page(frame, "New secret", None, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_encode_what_they_carry() {
        assert_eq!(segment("my-hook_1.x~"), "my-hook_1.x~");
        assert_eq!(segment("a/b?c\"<"), "a%2Fb%3Fc%22%3C");
        assert_eq!(
            query(&[("state", ""), ("cursor", "v1.a+b&c")]),
            "?cursor=v1.a%2Bb%26c"
        );
        assert_eq!(query(&[("state", "")]), "");
    }

    #[test]
    fn previews_cut_on_a_character_boundary() {
        let short = "é".repeat(10);
        assert_eq!(preview(&short), (short.as_str(), false));
        let long = "é".repeat(BODY_PREVIEW);
        let (cut, truncated) = preview(&long);
        assert!(truncated);
        assert!(cut.len() <= BODY_PREVIEW && cut.len() >= BODY_PREVIEW - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
