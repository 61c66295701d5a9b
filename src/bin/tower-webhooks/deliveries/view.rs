//! `deliveries list` and `deliveries show`: conversations as tables or JSON.

use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use serde_json::json;
use tower_webhooks::delivery::{Attempt, Conversation, ConversationPosition, Decision};
use tower_webhooks::store::DeliveryStore;

use tower_webhooks::registry::api::ConversationCursor;

use super::{parse_cursor, rfc3339, store_failure, Filters};
use crate::exit::Failure;

/// Body bytes shown by `show` (the store keeps response bodies up to the engine's limit).
const SHOWN_BODY: usize = 2048;

/// `deliveries list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    filters: Filters,
    /// At most this many (the store's page is 100 by default).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Continue after the page that printed this cursor.
    #[arg(long, value_parser = parse_cursor)]
    cursor: Option<ConversationPosition>,
    /// Print `{"deliveries": [...], "next_cursor": ...}`.
    #[arg(long)]
    json: bool,
}

/// `deliveries show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The delivery id.
    id: String,
    /// Print the conversation as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn list(store: &Arc<dyn DeliveryStore>, args: ListArgs) -> Result<(), Failure> {
    let limit = args.limit.max(1);
    let mut query = args.filters.query().limit(limit);
    if let Some(position) = args.cursor {
        query = query.after(position);
    }
    let page = store.list(&query).await.map_err(store_failure)?;
    let next = (page.len() == limit)
        .then(|| {
            page.last().map(|last| {
                ConversationCursor::from(ConversationPosition::of(&last.delivery)).to_string()
            })
        })
        .flatten();
    if args.json {
        let deliveries: Vec<_> = page.iter().map(|c| &c.delivery).collect();
        println!(
            "{}",
            json!({ "deliveries": deliveries, "next_cursor": next })
        );
        return Ok(());
    }
    if page.is_empty() {
        println!("no deliveries match");
        return Ok(());
    }
    println!(
        "{:<36} {:<10} {:>8}  {:<20} {:<40} LAST ERROR",
        "ID", "STATE", "ATTEMPTS", "CREATED", "ENDPOINT"
    );
    for conversation in &page {
        let delivery = &conversation.delivery;
        println!(
            "{:<36} {:<10} {:>8}  {:<20} {:<40} {}",
            delivery.id,
            delivery.state.as_str(),
            delivery.attempts,
            rfc3339(delivery.created_at),
            delivery.endpoint,
            delivery.last_error.as_deref().unwrap_or("")
        );
    }
    if let Some(next) = next {
        println!("\nmore: --cursor {next}");
    }
    Ok(())
}

pub(crate) async fn show(store: &Arc<dyn DeliveryStore>, args: ShowArgs) -> Result<(), Failure> {
    let conversation = store
        .get(&args.id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| Failure::usage(format!("no delivery `{}`", args.id)))?;
    if args.json {
        let text = serde_json::to_string_pretty(&conversation)
            .map_err(|e| Failure::environment(format!("rendering the conversation: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", describe(&conversation));
    }
    Ok(())
}

/// The readable form of a conversation.
pub(crate) fn describe(conversation: &Conversation) -> String {
    let delivery = &conversation.delivery;
    let mut out = format!("delivery {}\n", delivery.id);
    let mut field = |name: &str, value: String| out.push_str(&format!("  {name:<13} {value}\n"));
    let state = match &delivery.last_error {
        Some(error) => format!("{} ({error})", delivery.state),
        None => delivery.state.to_string(),
    };
    field("state", state);
    field("endpoint", delivery.endpoint.clone());
    if let Some(id) = &delivery.endpoint_id {
        field("endpoint id", id.clone());
    }
    field("source", format!("{:?}", delivery.source).to_lowercase());
    field("created", rfc3339(delivery.created_at));
    field("updated", rfc3339(delivery.updated_at));
    if !delivery.state.is_final() {
        field("next attempt", rfc3339(delivery.next_attempt_at));
    }
    field("attempts", delivery.attempts.to_string());
    for (name, value) in tower_webhooks::sensitive::redacted_headers(&delivery.headers) {
        field("header", format!("{name}: {value}"));
    }
    field("body", format!("{} bytes", delivery.body.len()));
    push_body(&mut out, &delivery.body, "    ");
    for attempt in &conversation.attempts {
        out.push_str(&describe_attempt(attempt));
    }
    out
}

fn describe_attempt(attempt: &Attempt) -> String {
    let decision = match attempt.decision {
        Decision::Delivered => "delivered".to_owned(),
        Decision::RetryAt(at) => format!("retry at {}", rfc3339(at)),
        Decision::GaveUp => "gave up".to_owned(),
        Decision::DisableEndpoint => "gave up, endpoint to disable".to_owned(),
        Decision::Refused => "refused".to_owned(),
        _ => format!("{:?}", attempt.decision),
    };
    let mut out = format!(
        "\nattempt {}{}  {}  {}  {:.1?}  -> {decision}\n",
        attempt.number,
        if attempt.manual { " (manual)" } else { "" },
        rfc3339(attempt.started_at),
        attempt.outcome,
        attempt.latency,
    );
    for (name, value) in &attempt.request_headers {
        out.push_str(&format!("  > {name}: {value}\n"));
    }
    if let Some(response) = &attempt.response {
        for (name, value) in &response.headers {
            out.push_str(&format!("  < {name}: {value}\n"));
        }
        push_body(&mut out, &response.body, "  < ");
        if response.body_truncated {
            out.push_str("  < … (truncated by the engine)\n");
        }
    }
    out
}

/// Up to [`SHOWN_BODY`] bytes of `body` as text, each line indented.
fn push_body(out: &mut String, body: &Bytes, indent: &str) {
    let shown = &body[..body.len().min(SHOWN_BODY)];
    for line in String::from_utf8_lossy(shown).lines() {
        out.push_str(&format!("{indent}{line}\n"));
    }
    if body.len() > SHOWN_BODY {
        out.push_str(&format!("{indent}… ({} bytes in all)\n", body.len()));
    }
}
