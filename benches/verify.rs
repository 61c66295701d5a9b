//! Cost of verifying a 1 KiB body through `WebhookSignatureLayer` (a `tower::Service` call
//! with a prebuilt signed request in one `Full<Bytes>` frame, inner = a trivial
//! `service_fn`) against bare HMAC-SHA256 of the same signed bytes. Prints the ratio.
//!
//! A layered call also drops the request when its inner service is done with it, which a
//! server pays with or without the layer; the bench times that same call on the inner
//! service alone and prints the layer's own cost (the difference) next to the whole call.
//!
//! Run with `cargo bench --bench verify`.

#[path = "support/processes.rs"]
mod processes;

use std::cell::Cell;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Request, Response};
use http_body_util::{Empty, Full};
use sha2::Sha256;
use tower::{service_fn, Layer, Service};
use tower_webhooks::inbound::{VerifiedBody, WebhookSignatureLayer};
use tower_webhooks::scheme::{Cerebrium, Message, Scheme, Verification};
use tower_webhooks::SecretSet;

const SECRET: &str = "my-webhook-secret";
const ID: &str = "21eb3b98-4b10-9ad6-8681-a47172828024";
const TIMESTAMP: i64 = 1_731_381_205;
/// Requests built (untimed) per timed batch.
const BATCH: u64 = 1024;

#[derive(Default)]
struct Mean {
    iterations: Cell<u64>,
    elapsed: Cell<Duration>,
}

impl Mean {
    fn record(&self, iterations: u64, elapsed: Duration) {
        self.iterations.set(self.iterations.get() + iterations);
        self.elapsed.set(self.elapsed.get() + elapsed);
    }

    fn nanos(&self) -> f64 {
        self.elapsed.get().as_nanos() as f64 / self.iterations.get().max(1) as f64
    }
}

fn bench(c: &mut Criterion) {
    let body = Bytes::from(
        (0..1024)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz012345"[i % 32])
            .collect::<Vec<u8>>(),
    );
    let secrets = SecretSet::from(SECRET);
    let mut headers = HeaderMap::new();
    Cerebrium::new()
        .sign(&Message::new(ID, TIMESTAMP, &body), &secrets, &mut headers)
        .unwrap();
    let headers: HeaderMap = headers
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            )
        })
        .collect();
    let build = || {
        let mut request = Request::post("/hook")
            .body(Full::new(body.clone()))
            .unwrap();
        *request.headers_mut() = headers.clone();
        request
    };

    let inner = service_fn(|_request: Request<VerifiedBody>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    });
    let mut service = WebhookSignatureLayer::new(Cerebrium::new(), secrets)
        .clock(|| TIMESTAMP)
        .layer(inner);
    // The same trivial service on the request's own body type, called without the layer.
    let mut alone = service_fn(|_request: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    });
    // Sanity: the prebuilt request verifies.
    let response = service.call(build()).now_or_never().unwrap().unwrap();
    assert_eq!(response.status(), 200);

    let layer_mean = Mean::default();
    let bare_mean = Mean::default();
    let mut group = c.benchmark_group("verify_1KiB");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
        .throughput(criterion::Throughput::Bytes(body.len() as u64));

    group.bench_function("layer", |b| {
        b.iter_custom(|iterations| {
            let elapsed = call_in_batches(&mut service, &build, iterations, BATCH);
            layer_mean.record(iterations, elapsed);
            elapsed
        })
    });

    // The same requests through the inner service alone: what the layered call costs
    // without any verification (the call, and dropping the request).
    let alone_mean = Mean::default();
    group.bench_function("inner_alone", |b| {
        b.iter_custom(|iterations| {
            let elapsed = call_in_batches(&mut alone, &build, iterations, BATCH);
            alone_mean.record(iterations, elapsed);
            elapsed
        })
    });

    // The scheme alone (no layer): begin + update + finish on the same head and bytes.
    let scheme_mean = Mean::default();
    let scheme = Cerebrium::new();
    let (head, _) = build().into_parts();
    let secrets = SecretSet::from(SECRET);
    group.bench_function("scheme_only", |b| {
        b.iter_custom(|iterations| {
            let start = Instant::now();
            for _ in 0..iterations {
                let mut verification = scheme.begin(&head, &secrets, TIMESTAMP).unwrap();
                verification.update(std::hint::black_box(&body));
                std::hint::black_box(verification.finish(&body).unwrap());
            }
            let elapsed = start.elapsed();
            scheme_mean.record(iterations, elapsed);
            elapsed
        })
    });

    let prefix = format!("{ID}.{TIMESTAMP}.");
    group.bench_function("bare_hmac_sha256", |b| {
        b.iter_custom(|iterations| {
            let start = Instant::now();
            for _ in 0..iterations {
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(prefix.as_bytes());
                mac.update(std::hint::black_box(&body));
                std::hint::black_box(mac.finalize().into_bytes());
            }
            let elapsed = start.elapsed();
            bare_mean.record(iterations, elapsed);
            elapsed
        })
    });
    group.finish();

    let (layer, bare) = (layer_mean.nanos(), bare_mean.nanos());
    println!();
    println!("criterion means:");
    println!("  verify 1 KiB through WebhookSignatureLayer: {layer:>8.0} ns/request");
    println!(
        "  the same call on the inner service alone:   {:>8.0} ns/request",
        alone_mean.nanos()
    );
    println!(
        "  the Cerebrium scheme alone:                 {:>8.0} ns/request",
        scheme_mean.nanos()
    );
    println!("  bare HMAC-SHA256 of the same bytes:         {bare:>8.0} ns/request");
    println!("  ratio layer / bare HMAC: {:.2}x", layer / bare);
    println!(
        "  ratio layer's own cost / bare HMAC: {:.2}x",
        (layer - alone_mean.nanos()) / bare
    );

    // The same five, interleaved in short rounds so that a machine shared with other work
    // slows them alike; the medians are the robust figures. `VERIFY_ROUNDS` changes the
    // number of rounds (a profiler wants few).
    let rounds_count = std::env::var("VERIFY_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(200usize)
        .max(1);
    const PER_ROUND: usize = 500;
    // The layer keeps each secret's keyed HMAC state, so the strictest baseline is a bare
    // HMAC from a pre-keyed state too (the headline baseline keys on every call).
    let keyed = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    let mut rounds = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds_count {
        let elapsed = call_in_batches(&mut service, &build, PER_ROUND as u64, BATCH);
        rounds[0].push(elapsed.as_nanos() as f64 / PER_ROUND as f64);
        let start = Instant::now();
        for _ in 0..PER_ROUND {
            let mut verification = scheme.begin(&head, &secrets, TIMESTAMP).unwrap();
            verification.update(std::hint::black_box(&body));
            std::hint::black_box(verification.finish(&body).unwrap());
        }
        rounds[1].push(start.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        let start = Instant::now();
        for _ in 0..PER_ROUND {
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(prefix.as_bytes());
            mac.update(std::hint::black_box(&body));
            std::hint::black_box(mac.finalize().into_bytes());
        }
        rounds[2].push(start.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        let start = Instant::now();
        for _ in 0..PER_ROUND {
            let mut mac = std::hint::black_box(&keyed).clone();
            mac.update(prefix.as_bytes());
            mac.update(std::hint::black_box(&body));
            std::hint::black_box(mac.finalize().into_bytes());
        }
        rounds[3].push(start.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        let elapsed = call_in_batches(&mut alone, &build, PER_ROUND as u64, BATCH);
        rounds[4].push(elapsed.as_nanos() as f64 / PER_ROUND as f64);
    }
    let per_round_ratio =
        |baseline: &[f64]| median(rounds[0].iter().zip(baseline).map(|(l, b)| l / b).collect());
    let (ratio, ratio_keyed) = (per_round_ratio(&rounds[2]), per_round_ratio(&rounds[3]));
    let own_ratio = median(
        (0..rounds_count)
            .map(|round| (rounds[0][round] - rounds[4][round]) / rounds[2][round])
            .collect(),
    );
    let [layer, scheme, bare, bare_keyed, alone] = rounds.map(median);
    println!("interleaved medians ({rounds_count} rounds of {PER_ROUND}):");
    println!("  verify 1 KiB through WebhookSignatureLayer: {layer:>8.0} ns/request");
    println!("  the same call on the inner service alone:   {alone:>8.0} ns/request");
    println!("  the Cerebrium scheme alone:                 {scheme:>8.0} ns/request");
    println!("  bare HMAC-SHA256 of the same bytes:         {bare:>8.0} ns/request");
    println!("  the same from a pre-keyed HMAC state:       {bare_keyed:>8.0} ns/request");
    println!("(medians of per-round ratios)");
    println!("ratio layer's own cost / bare HMAC: {own_ratio:.2}x (target <= 1.3x)");
    println!("ratio whole layered call / bare HMAC: {ratio:.2}x (includes dropping the request)");
    println!("ratio whole layered call / pre-keyed bare HMAC: {ratio_keyed:.2}x");
    if processes::is_child(CHILD) {
        processes::report(CHILD, "own", own_ratio);
        processes::report(CHILD, "whole", ratio);
        return;
    }
    across_processes();
}

/// Set in the processes `across_processes` starts.
const CHILD: &str = "VERIFY_CHILD";

/// The same interleaved figures from fresh processes (`VERIFY_PROCESSES`, default 8).
fn across_processes() {
    let processes = processes::count("VERIFY_PROCESSES", 8);
    let figures = processes::figures(CHILD, processes, &["--bench", "interleaved-only"]);
    let Some((_, first)) = figures.first() else {
        return;
    };
    println!("across {} fresh processes:", first.len());
    for (name, values) in figures {
        let label = match name.as_str() {
            "own" => "layer's own cost / bare HMAC:  ",
            _ => "whole layered call / bare HMAC:",
        };
        let spread = processes::spread(values, |ratio| format!("{ratio:.2}x"));
        println!("  {label} {spread}");
    }
}

/// Calls `service` `iterations` times with requests from `build`, built untimed `batch` at a
/// time; the time of the calls alone.
fn call_in_batches<S: Service<Request<Full<Bytes>>>>(
    service: &mut S,
    build: &impl Fn() -> Request<Full<Bytes>>,
    iterations: u64,
    batch: u64,
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = iterations;
    while left > 0 {
        let n = left.min(batch);
        let requests: Vec<_> = (0..n).map(|_| build()).collect();
        let start = Instant::now();
        for request in requests {
            std::hint::black_box(service.call(request).now_or_never());
        }
        elapsed += start.elapsed();
        left -= n;
    }
    elapsed
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

criterion_group!(benches, bench);
criterion_main!(benches);
