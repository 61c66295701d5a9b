//! Requests per second through `WebhookSignatureLayer` against a bare axum route reading the
//! same body, both served in this process on 127.0.0.1 and driven by keep-alive HTTP/1.1
//! clients sending pre-signed 1 KiB POSTs. Prints both rates and their ratio.
//!
//! Run with `cargo bench --bench load` (`LOAD_SECS`, `LOAD_CONNECTIONS` to change the
//! defaults of 5 s per server and 32 connections).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tower_webhooks::inbound::WebhookSignatureLayer;
use tower_webhooks::scheme::{
    Cerebrium, Message, RequestHead, Scheme, SignError, Verification, VerifyError,
};
use tower_webhooks::{SecretSet, Verified};

const SECRET: &str = "load-secret";
/// Upper bound of requests per connection and run, so a run always ends.
const MAX_REQUESTS_PER_CONNECTION: u64 = 2_000_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

async fn handler(body: Bytes) -> String {
    body.len().to_string()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Drives `addr` with `connections` keep-alive clients for `duration`; returns requests/s.
async fn drive(
    addr: SocketAddr,
    connections: u64,
    duration: Duration,
    body: Bytes,
    headers: HeaderMap,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut clients = Vec::new();
    for _ in 0..connections {
        let (done, body, headers) = (done.clone(), body.clone(), headers.clone());
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            for _ in 0..MAX_REQUESTS_PER_CONNECTION {
                if Instant::now() >= deadline {
                    break;
                }
                let mut request = Request::post("/hook")
                    .header(http::header::HOST, "127.0.0.1")
                    .body(Full::new(body.clone()))
                    .unwrap();
                request.headers_mut().extend(headers.clone());
                sender.ready().await.unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let answer = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(answer, "1024");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// A scheme that accepts everything: isolates the layer's own cost (buffering, extensions,
/// state machine) from the MAC.
#[derive(Debug)]
struct AcceptAll;

struct Accepted;

impl Verification for Accepted {
    fn update(&mut self, _chunk: &[u8]) {}

    fn finish(self, _body: &Bytes) -> Result<Verified, VerifyError> {
        Ok(Verified::new("accept-all"))
    }
}

impl Scheme for AcceptAll {
    type Verification = Accepted;

    fn name(&self) -> &str {
        "accept-all"
    }

    fn begin(
        &self,
        _head: &RequestHead,
        _secrets: &SecretSet,
        _now: i64,
    ) -> Result<Accepted, VerifyError> {
        Ok(Accepted)
    }

    fn sign(
        &self,
        _message: &Message<'_>,
        _secrets: &SecretSet,
        _headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        Ok(())
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
    let secs = env_or("LOAD_SECS", 5);
    let connections = env_or("LOAD_CONNECTIONS", 32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bare = serve(Router::new().route("/hook", post(handler))).await;
        // A window wide enough for the pre-signed timestamp to stay valid; de-dupe off.
        let scheme = Cerebrium::new().replay_window(None);
        let layered = serve(
            Router::new()
                .route("/hook", post(handler))
                .layer(WebhookSignatureLayer::new(scheme, SECRET)),
        )
        .await;
        let machinery = serve(
            Router::new()
                .route("/hook", post(handler))
                .layer(WebhookSignatureLayer::new(AcceptAll, SECRET)),
        )
        .await;

        let body = Bytes::from(vec![b'x'; 1024]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut signed = HeaderMap::new();
        Cerebrium::new()
            .sign(&Message::new("load-1", now, &body), &SecretSet::from(SECRET), &mut signed)
            .unwrap();
        signed.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );

        // Warm up both, then alternate halves so background load affects both alike.
        let warmup = Duration::from_millis(500);
        drive(bare, connections, warmup, body.clone(), signed.clone()).await;
        drive(layered, connections, warmup, body.clone(), signed.clone()).await;
        // Short interleaved rounds: background load on a shared machine hits all alike.
        const ROUNDS: u32 = 10;
        let slice = Duration::from_secs_f64(secs as f64 / f64::from(ROUNDS));
        // `LOAD_ONLY=bare|layer|machinery` drives one server only (for profiling).
        let only = std::env::var("LOAD_ONLY").unwrap_or_default();
        let mut rounds: [Vec<f64>; 3] = Default::default();
        for _ in 0..ROUNDS {
            for (samples, (name, addr)) in rounds
                .iter_mut()
                .zip([("bare", bare), ("layer", layered), ("machinery", machinery)])
            {
                if only.is_empty() || only == name {
                    samples.push(drive(addr, connections, slice, body.clone(), signed.clone()).await);
                }
            }
        }
        let mean = |samples: &[f64]| samples.iter().sum::<f64>() / samples.len().max(1) as f64;
        let ratio = |a: &[f64], b: &[f64]| {
            let mut ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
            ratios.sort_by(f64::total_cmp);
            ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
        };
        println!(
            "load: {connections} keep-alive HTTP/1.1 connections, 1 KiB signed POSTs, {secs} s per \
             server in {ROUNDS} interleaved rounds"
        );
        println!("bare axum route (reads Bytes):              {:>8.0} req/s", mean(&rounds[0]));
        println!("behind WebhookSignatureLayer (Cerebrium):   {:>8.0} req/s", mean(&rounds[1]));
        println!(
            "ratio layer / bare: {:.3} (median of per-round ratios; target >= 0.90)",
            ratio(&rounds[1], &rounds[0])
        );
        println!(
            "for reference, the layer with an accept-all scheme (no MAC): {:>8.0} req/s, ratio {:.3}",
            mean(&rounds[2]),
            ratio(&rounds[2], &rounds[0])
        );
    });
}
