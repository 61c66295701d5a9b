//! `send`: signs events and POSTs them through the delivery engine (its retry policy, SSRF
//! guard and client), with a progress bar and a summary.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::sync::mpsc;
use tower_webhooks::delivery::{Delivery, DeliveryState, SigningSpec};
use tower_webhooks::delivery::{DeliveryEngine, Policy};
use tower_webhooks::scheme::Scheme;
use tower_webhooks::store::MemoryStore;

use crate::exit::Failure;
use crate::input::{BodyArgs, HeaderArgs, SchemeArgs, SecretArgs, StdinOnce};
use crate::network::GuardArgs;
use crate::summary::Summary;

/// `send`: sign and deliver events.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    #[command(flatten)]
    secrets: SecretArgs,
    /// The endpoint the events are POSTed to.
    url: String,
    #[command(flatten)]
    body: BodyArgs,
    #[command(flatten)]
    headers: HeaderArgs,
    #[command(flatten)]
    guard: GuardArgs,
    /// How many events to send (without a body: test events numbered from 1).
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// The retry schedule.
    #[arg(long, value_enum, default_value_t = PolicyName::Standard)]
    policy: PolicyName,
    /// Replace the schedule's delays between attempts (`1s,5s,30s`).
    #[arg(long, value_delimiter = ',', value_parser = humantime::parse_duration, value_name = "DELAYS")]
    retry_delays: Option<Vec<Duration>>,
    /// How long to wait for every event to be final; those still retrying then are counted as
    /// pending (and dropped: the queue lives in this process).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Attempts in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// A retry schedule of the library.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum PolicyName {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (±20 %); every failure but 410 is retried.
    Standard,
    /// 2 s, 4 s; a 404 and network errors are retried, other 4xx and 5xx answers are final.
    Cerebrium,
}

pub(crate) async fn run(args: SendArgs) -> Result<(), Failure> {
    let scheme = args.scheme.scheme()?;
    let secrets = args.secrets.secrets(args.scheme.secrets_optional())?;
    if args.count == 0 {
        return Err(Failure::usage("--count must be at least 1"));
    }
    let guard = args.guard.guard()?;
    guard
        .check_url(&args.url)
        .map_err(|refusal| Failure::usage(format!("{}: {}", args.url, refusal.detail())))?;
    let mut stdin = StdinOnce::default();
    let headers = args.headers.read(&mut stdin)?;
    let body = args.body.read(&mut stdin)?;
    let mut policy = match args.policy {
        PolicyName::Standard => Policy::standard(),
        PolicyName::Cerebrium => Policy::cerebrium(),
    };
    if let Some(delays) = args.retry_delays {
        policy = policy.with_delays(delays);
    }

    let (finished, mut reports) = mpsc::unbounded_channel();
    let concurrency = args.concurrency.max(1);
    let engine = DeliveryEngine::builder()
        .store(
            MemoryStore::new()
                .max_unfinished(args.count)
                .max_finished(args.count),
        )
        .guard(guard)
        .policy(policy)
        .capacity(args.count)
        .max_queued_per_owner(args.count)
        .max_in_flight(concurrency)
        .max_in_flight_per_owner(concurrency)
        .max_per_endpoint(concurrency)
        .on_finished(move |report| {
            let _ = finished.send(report.id.clone());
        })
        .build();
    let signing = SigningSpec::new(scheme.clone(), secrets);
    let progress = progress_bar(args.count, args.json);
    let started = Instant::now();
    let mut ids = Vec::with_capacity(args.count);
    for sequence in 1..=args.count {
        let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        let body = body.clone().unwrap_or_else(|| test_event(&id, sequence));
        let delivery = Delivery::new(id.clone(), args.url.clone(), body)
            .with_signing(signing.clone())
            .with_headers(headers.clone());
        engine.submit(delivery).await.map_err(|e| {
            Failure::environment(format!("the engine refused event {sequence}: {e}"))
        })?;
        ids.push(id);
    }
    let deadline = tokio::time::Instant::now() + args.wait;
    let mut done = 0;
    while done < args.count {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(_)) => {
                done += 1;
                progress.inc(1);
            }
            Ok(None) | Err(_) => break,
        }
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();

    let mut summary = Summary::default();
    for id in &ids {
        match engine.conversation(id).await {
            Ok(Some(conversation)) => summary.add(&conversation),
            Ok(None) => summary.lost += 1,
            Err(e) => return Err(Failure::environment(format!("reading the outcome: {e}"))),
        }
    }
    // Deliveries still retrying are abandoned with this process: nothing else holds them.
    let _ = engine.shutdown(Duration::ZERO).await;
    if args.json {
        let mut output = summary.to_json();
        output["scheme"] = json!(scheme.name());
        output["url"] = json!(args.url);
        output["elapsed_ms"] = json!(elapsed.as_millis() as u64);
        println!("{output}");
    } else {
        println!(
            "{} event(s) to {} ({}) in {:.1?}",
            args.count,
            args.url,
            scheme.name(),
            elapsed
        );
        print!("{}", summary.table());
    }
    if summary.count(DeliveryState::Delivered) == args.count {
        Ok(())
    } else {
        Err(Failure::Negative)
    }
}

/// A numbered test event.
fn test_event(id: &str, sequence: usize) -> Bytes {
    Bytes::from(
        json!({
            "type": "test.event",
            "id": id,
            "sequence": sequence,
            "sent_by": "tower-webhooks send",
        })
        .to_string(),
    )
}

/// A bar on stderr for more than one event; indicatif draws nothing when stderr is not a
/// terminal.
fn progress_bar(count: usize, quiet: bool) -> ProgressBar {
    if count < 2 || quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(count as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} final  {per_sec}  eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}
