//! Crash tests with real processes: `examples/durable_forwarder` (a `WebhookForwardLayer` app
//! on a durable store) is SIGKILLed with deliveries accepted but not delivered, restarted, and
//! every accepted delivery must arrive, signed and intact.
//!
//! - SQLite: N requests while the receiver is down, SIGKILL, receiver up, restart.
//! - PostgreSQL (when `TOWER_WEBHOOKS_POSTGRES_URL` is set): two forwarders on one database,
//!   one SIGKILLed mid-flight; the other takes its work over when the leases expire. Nothing
//!   is lost; duplicates (at-least-once) are counted and printed.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{verify_cerebrium, Hit, Receiver, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "crash-secret";

/// `target/debug/examples/durable_forwarder`, built by `cargo test` next to this test.
fn forwarder_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let binary = dir.join("examples").join("durable_forwarder");
    if !binary.exists() {
        // `cargo test` builds the examples; `cargo test --test crash` does not.
        let features = if cfg!(feature = "postgres") {
            "sqlite,postgres"
        } else {
            "sqlite"
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--example",
                "durable_forwarder",
                "--features",
                features,
            ])
            .status()
            .unwrap();
        assert!(
            status.success() && binary.exists(),
            "cannot build {}",
            binary.display()
        );
    }
    binary
}

/// A running forwarder process and the address it listens on.
struct Forwarder {
    child: Child,
    addr: SocketAddr,
}

impl Forwarder {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(forwarder_binary())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .unwrap();
        Self { child, addr }
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 POST; returns the status, the `X-Request-Id` and the body.
async fn post(addr: SocketAddr, path: &str, secret: &str, body: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-webhook-secret: {secret}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let run_id = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-request-id")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, run_id, body.to_owned())
}

fn encode(url: &str) -> String {
    url.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `n` forwarding requests; returns run id → the `n` of its input.
async fn send(
    addr: SocketAddr,
    endpoint: &str,
    range: std::ops::Range<usize>,
) -> HashMap<String, u64> {
    let path = format!("/v4/p/app/run?webhookEndpoint={}", encode(endpoint));
    let tasks: Vec<_> = range
        .map(|i| {
            let path = path.clone();
            tokio::spawn(async move {
                let (status, run_id, body) =
                    post(addr, &path, SECRET, &format!(r#"{{"n":{i}}}"#)).await;
                assert_eq!(status, 200, "{body}");
                assert!(!run_id.is_empty());
                (run_id, i as u64)
            })
        })
        .collect();
    let mut accepted = HashMap::new();
    for task in tasks {
        let (run_id, i) = task.await.unwrap();
        accepted.insert(run_id, i);
    }
    accepted
}

/// Every accepted delivery arrived at least once, signed and intact; returns the duplicates.
fn check_arrivals(accepted: &HashMap<String, u64>, hits: &[Hit]) -> usize {
    let mut seen = HashSet::new();
    for hit in hits {
        let run_id = hit.header("x-request-id").to_owned();
        assert!(verify_cerebrium(hit, SECRET), "{run_id}: bad signature");
        let envelope: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(envelope["run_id"], run_id.as_str());
        let n = accepted
            .get(&run_id)
            .unwrap_or_else(|| panic!("unknown run {run_id}"));
        assert_eq!(
            envelope["result"]["input"]["n"], *n,
            "{run_id}: body intact"
        );
        seen.insert(run_id);
    }
    let missing: Vec<_> = accepted.keys().filter(|id| !seen.contains(*id)).collect();
    assert!(missing.is_empty(), "lost deliveries: {missing:?}");
    hits.len() - seen.len()
}

async fn wait_distinct(receiver: &Receiver, n: usize, within: Duration) -> Vec<Hit> {
    let deadline = Instant::now() + within;
    loop {
        let hits = receiver.hits();
        let distinct: HashSet<_> = hits
            .iter()
            .map(|h| h.header("x-request-id").to_owned())
            .collect();
        if distinct.len() >= n {
            return hits;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} deliveries arrived in time",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_loses_no_accepted_delivery() {
    const N: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let db = db.to_str().unwrap();
    // The receiver's port, closed for now: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver_addr = port.local_addr().unwrap();
    drop(port);
    let endpoint = format!("http://{receiver_addr}/hook");

    let forwarder = Forwarder::start(&["--sqlite", db, "--retry-ms", "300"]);
    let accepted = send(forwarder.addr, &endpoint, 0..N).await;
    assert_eq!(accepted.len(), N);
    // Killed right after the last answer: what was answered must be on disk.
    forwarder.kill();

    let listener = tokio::net::TcpListener::bind(receiver_addr).await.unwrap();
    let receiver = Receiver::serve(listener, |_, _| Reply::status(200));
    let started = Instant::now();
    let _forwarder = Forwarder::start(&["--sqlite", db, "--retry-ms", "300"]);
    let hits = wait_distinct(&receiver, N, Duration::from_secs(30)).await;
    let duplicates = check_arrivals(&accepted, &hits);
    eprintln!(
        "sqlite crash: {N} accepted before SIGKILL, all {N} delivered {:.1} s after the restart, \
         {duplicates} duplicates",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_during_async_runs_delivers_them_as_interrupted() {
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("async.db");
    let db = db.to_str().unwrap();
    let receiver = Receiver::status(200).await;
    let args = ["--sqlite", db, "--hold-ms", "1500", "--poll-ms", "100"];
    let forwarder = Forwarder::start(&args);
    // `?async=true` answers 202 at once; the runs take a minute.
    let path = format!(
        "/slow?async=true&webhookEndpoint={}",
        encode(&receiver.url("/hook"))
    );
    let mut accepted = HashSet::new();
    for _ in 0..N {
        let (status, run_id, body) = post(forwarder.addr, &path, SECRET, "{}").await;
        assert_eq!(status, 202, "{body}");
        accepted.insert(run_id);
    }
    forwarder.kill();
    let _forwarder = Forwarder::start(&args);
    let hits = wait_distinct(&receiver, N, Duration::from_secs(20)).await;
    for hit in &hits {
        let run_id = hit.header("x-request-id");
        assert!(accepted.contains(run_id), "unknown run {run_id}");
        assert!(verify_cerebrium(hit, SECRET));
        let envelope: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(envelope["status_code"], 500);
        assert!(envelope["error"].as_str().unwrap().contains("interrupted"));
    }
    eprintln!("async crash: {N} runs accepted with 202, SIGKILL mid-run, all {N} delivered as interrupted");
}

#[cfg(feature = "postgres")]
#[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_of_one_replica_loses_nothing() {
    const N: usize = 60;
    let url = support::postgres_url();
    let schema = support::unique_schema("crash");
    // A slow receiver keeps deliveries in flight when replica A is killed.
    let receiver = Receiver::status(200).await;
    let slow = Receiver::start(|_, _| Reply::status(200).delay(Duration::from_millis(400))).await;
    let common = [
        "--postgres",
        &url,
        "--schema",
        &schema,
        "--lease-ms",
        "2000",
        "--poll-ms",
        "200",
    ];
    let a = Forwarder::start(&[&common[..], &["--owner", "replica-a"]].concat());
    let b = Forwarder::start(&[&common[..], &["--owner", "replica-b"]].concat());

    // Half through each replica, to the slow endpoint; A dies mid-flight.
    let slow_url = slow.url("/hook");
    let (to_a, to_b) = tokio::join!(
        send(a.addr, &slow_url, 0..N / 2),
        send(b.addr, &slow_url, N / 2..N),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill();
    let killed_at = Instant::now();
    // More work for the survivor after the crash.
    let after = send(b.addr, &receiver.url("/hook"), N..N + 10).await;

    let mut accepted = to_a;
    accepted.extend(to_b);
    let hits_slow = wait_distinct(&slow, N, Duration::from_secs(45)).await;
    let hits_fast = wait_distinct(&receiver, 10, Duration::from_secs(15)).await;
    let duplicates = check_arrivals(&accepted, &hits_slow);
    check_arrivals(&after, &hits_fast);
    eprintln!(
        "postgres crash: {} accepted by 2 replicas, replica A SIGKILLed mid-flight; all delivered \
         within {:.1} s of the kill; {duplicates} duplicates (at-least-once: attempts A sent \
         before dying, re-sent by B after its leases expired)",
        N + 10,
        killed_at.elapsed().as_secs_f64()
    );
    drop(b);
    support::drop_schema(&url, &schema).await;
}
