//! `deliveries resend` and `deliveries recover`: the engine's re-send operations on a store,
//! then (unless `--queue-only`) this process delivers them and reports each outcome.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tokio::sync::mpsc;
use tower_webhooks::delivery::DeliveryEngine;
use tower_webhooks::delivery::{ConversationPosition, DeliveryState};
use tower_webhooks::store::DeliveryStore;

use super::{store_failure, Filters};
use crate::exit::Failure;
use crate::network::GuardArgs;
use crate::summary::Summary;

/// The page size used to find the deliveries `recover` re-sends.
const PAGE: usize = 500;

/// How the re-sent deliveries are delivered.
#[derive(Debug, Args)]
pub(crate) struct Delivering {
    /// Only queue the attempts, for the service that owns the store to deliver. Without it,
    /// this process delivers them now, and any other delivery due in the store meanwhile:
    /// stop the service that owns a SQLite file first.
    #[arg(long)]
    queue_only: bool,
    #[command(flatten)]
    guard: GuardArgs,
    /// How long to wait for the attempts.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// `deliveries resend ID…`.
#[derive(Debug, Args)]
pub(crate) struct ResendArgs {
    /// The deliveries to re-send (delivered, failed or refused ones).
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
    #[command(flatten)]
    delivering: Delivering,
}

/// `deliveries recover`.
#[derive(Debug, Args)]
pub(crate) struct RecoverArgs {
    #[command(flatten)]
    filters: Filters,
    #[command(flatten)]
    delivering: Delivering,
}

pub(crate) async fn resend(store: Arc<dyn DeliveryStore>, args: ResendArgs) -> Result<(), Failure> {
    let run = Run::start(store, &args.delivering)?;
    let mut resent = Vec::with_capacity(args.ids.len());
    for id in args.ids {
        let before = run.engine.conversation(&id).await.map_err(store_failure)?;
        let Some(before) = before else {
            return Err(Failure::usage(format!("no delivery `{id}`")));
        };
        run.engine.resend(&id).await.map_err(store_failure)?;
        resent.push(Resent {
            id,
            attempts_before: before.attempts.len(),
        });
    }
    run.finish(resent, &args.delivering).await
}

pub(crate) async fn recover(
    store: Arc<dyn DeliveryStore>,
    args: RecoverArgs,
) -> Result<(), Failure> {
    let query = args.filters.query();
    if query.state.is_some_and(|state| !state.is_final()) {
        return Err(Failure::usage(
            "recover re-sends final deliveries: --state failed, refused or delivered",
        ));
    }
    // The ids the re-send will cover, found with the same filters (failed by default).
    let mut listing = query
        .clone()
        .state(query.state.unwrap_or(DeliveryState::Failed))
        .limit(PAGE);
    let mut ids = Vec::new();
    loop {
        let page = store.list(&listing).await.map_err(store_failure)?;
        ids.extend(page.iter().map(|c| Resent {
            id: c.delivery.id.clone(),
            attempts_before: c.attempts.len(),
        }));
        match page.last() {
            Some(last) if page.len() == PAGE => {
                listing = listing.after(ConversationPosition::of(&last.delivery));
            }
            _ => break,
        }
    }
    let run = Run::start(store, &args.delivering)?;
    let queued = run
        .engine
        .resend_failed(&query, None)
        .await
        .map_err(store_failure)?;
    if !args.delivering.json {
        println!("queued {queued} re-send(s)");
    }
    run.finish(ids, &args.delivering).await
}

/// A re-sent delivery, and how many attempts it had before (the others are this run's).
struct Resent {
    id: String,
    attempts_before: usize,
}

/// An engine on the store, and the ids it reports final.
struct Run {
    engine: DeliveryEngine,
    finished: mpsc::UnboundedReceiver<String>,
}

impl Run {
    fn start(store: Arc<dyn DeliveryStore>, delivering: &Delivering) -> Result<Self, Failure> {
        let (report, finished) = mpsc::unbounded_channel();
        let engine = DeliveryEngine::builder()
            .shared_store(store)
            .guard(delivering.guard.guard()?)
            .on_finished(move |finished| {
                let _ = report.send(finished.id.clone());
            })
            .build();
        Ok(Self { engine, finished })
    }

    /// Waits (unless `--queue-only`) for `ids` to be final again, prints each outcome, and
    /// stops the engine (deliveries it claimed but did not send go back to the store).
    async fn finish(mut self, ids: Vec<Resent>, delivering: &Delivering) -> Result<(), Failure> {
        if delivering.queue_only {
            // Nothing was sent by this engine: the queued attempts stay for the service.
            let _ = self.engine.shutdown(Duration::ZERO).await;
            if delivering.json {
                let ids: Vec<_> = ids.iter().map(|resent| &resent.id).collect();
                println!("{}", json!({ "queued": ids }));
            } else {
                println!("queued {} for the store's service to deliver", ids.len());
            }
            return Ok(());
        }
        let mut waiting: HashSet<&str> = ids.iter().map(|resent| resent.id.as_str()).collect();
        let deadline = tokio::time::Instant::now() + delivering.wait;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, self.finished.recv()).await {
                Ok(Some(id)) => {
                    waiting.remove(id.as_str());
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut summary = Summary::default();
        let mut outcomes = Vec::new();
        for Resent {
            id,
            attempts_before,
        } in &ids
        {
            let conversation = self.engine.conversation(id).await.map_err(store_failure)?;
            let Some(conversation) = conversation else {
                summary.lost += 1;
                continue;
            };
            let new = conversation.attempts.len().saturating_sub(*attempts_before);
            summary.add_attempts(&conversation, new);
            let last = conversation.attempts.last().filter(|_| new > 0);
            outcomes.push(json!({
                "id": id,
                "state": conversation.delivery.state,
                "outcome": last.map(|attempt| attempt.outcome.to_string()),
                "latency_ms": last.map(|attempt| attempt.latency.as_secs_f64() * 1e3),
            }));
        }
        let _ = self.engine.shutdown(Duration::from_secs(5)).await;
        if delivering.json {
            let mut output = summary.to_json();
            output["deliveries"] = json!(outcomes);
            println!("{output}");
        } else {
            for outcome in &outcomes {
                println!(
                    "{:<36} {:<10} {}",
                    outcome["id"].as_str().unwrap_or_default(),
                    outcome["state"].as_str().unwrap_or_default(),
                    outcome["outcome"].as_str().unwrap_or("-")
                );
            }
            print!("{}", summary.table());
        }
        if summary.count(DeliveryState::Delivered) == ids.len() {
            Ok(())
        } else {
            Err(Failure::Negative)
        }
    }
}
