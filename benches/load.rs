//! Requests per second through `WebhookSignatureLayer` against a bare axum route reading the
//! same body, both served in this process on 127.0.0.1 and driven by keep-alive HTTP/1.1
//! clients sending pre-signed 1 KiB POSTs. Prints every server's rate and its ratio to the
//! bare route, and the layer's ratio minus the floor's (the target: no lower than -0.02).
//!
//! The servers run on one worker thread and the clients on another, so each side has a core;
//! every server keeps its connections for the whole run and the servers take turns in short
//! rounds of alternating order. Reference servers are measured in the same rounds:
//! - a second, identical bare route (control): how far apart two equal servers come out;
//! - the bare route computing the same HMAC in its handler: what the MAC alone costs;
//! - a no-op `Router::layer`: what any layer costs under a router (a clone and a boxed
//!   future per request);
//! - both together (floor): what the best signature layer could reach;
//! - the same no-op layer with the layer's own verification (`WebhookVerifier::verify_parts`)
//!   called in the handler: what verifying these requests costs without the layer, reading
//!   the scheme's headers and comparing the signature included (the floor's bare MAC does
//!   neither);
//! - the layer with an accept-all scheme: its machinery without the MAC;
//! - the layer with a scheme that only computes and compares the MAC: the least a MAC
//!   scheme can cost in it, without parsing any header;
//! - an `axum::middleware::from_fn` that buffers the body, as a user might write.
//!
//! The clients write pre-serialized requests on raw connections (as `wrk` does), so that
//! the servers, not the clients, set the rates; the servers' single thread is saturated.
//!
//! Run with `cargo bench --bench load` (`LOAD_SECS`, `LOAD_CONNECTIONS` to change the
//! defaults of 5 s per server and 32 connections; `LOAD_CLIENT=spin` for a client that
//! never sleeps, see [`drive_spinning`]; `LOAD_ONLY=<name>[,<name>…]` to drive only those
//! servers, for profiling or a closer comparison). The whole measurement is then repeated in
//! `LOAD_PROCESSES` fresh processes (default 4; see `support/processes.rs` for why) and each
//! ratio printed as its median, minimum and maximum across the processes.

#[path = "support/processes.rs"]
mod processes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tower_webhooks::inbound::{WebhookSignatureLayer, WebhookVerifier};
use tower_webhooks::scheme::{
    Cerebrium, Message, RequestHead, Scheme, SignError, Verification, VerifyError, VerifyErrorKind,
};
use tower_webhooks::{SecretSet, Verified};

const SECRET: &str = "load-secret";

/// The message id every pre-signed request carries (the MAC-only scheme expects it too).
const MESSAGE_ID: &str = "load-1";

/// Requests completed in the whole run, warm-up included (printed for profiling runs).
static COMPLETED: AtomicU64 = AtomicU64::new(0);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

async fn handler(body: Bytes) -> String {
    body.len().to_string()
}

/// The bare route doing, in its handler, the HMAC a signature check needs (keyed on every
/// call, over the same prefix and body): what verification costs without any layer.
async fn hmac_handler(body: Bytes) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(b"load-1.1731381205.");
    mac.update(&body);
    std::hint::black_box(mac.finalize().into_bytes());
    body.len().to_string()
}

/// The bare route calling the layer's own verification in its handler
/// (`WebhookVerifier::verify_parts` over the request's head and body, the same scheme and
/// secret as the layer): what verifying these requests costs in axum without the layer, header
/// parsing and the signature's compare included, which the floor row's bare MAC leaves out.
async fn verifying_handler(
    verifier: Arc<WebhookVerifier<Cerebrium>>,
    request: axum::extract::Request,
) -> (http::StatusCode, String) {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (http::StatusCode::BAD_REQUEST, String::new());
    };
    match verifier.verify_parts(&parts, &body) {
        Ok(verified) => {
            std::hint::black_box(verified);
            (http::StatusCode::OK, body.len().to_string())
        }
        Err(_) => (http::StatusCode::UNAUTHORIZED, String::new()),
    }
}

/// What an axum user might write to see the body in a middleware: `to_bytes`, then a new
/// `Body` for the next service.
async fn buffering(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// A TCP socket whose congestion control does not pace: BBR, the default on some machines
/// (this one's), sends each connection at its own estimated rate, which on loopback shapes
/// the request rates more than the servers' work does. Accepted connections inherit it from
/// the listener.
fn unpaced_socket() -> socket2::Socket {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    #[cfg(target_os = "linux")]
    let _ = socket.set_tcp_congestion(b"cubic");
    socket
}

/// Serves `app` on the server runtime (`servers`), apart from the clients.
fn serve(servers: &tokio::runtime::Handle, app: Router) -> SocketAddr {
    let socket = unpaced_socket();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(1024).unwrap();
    let listener = std::net::TcpListener::from(socket);
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    servers.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, app).await.unwrap()
    });
    addr
}

/// A keep-alive connection and what it has read past the last response.
struct Connection {
    stream: tokio::net::TcpStream,
    read: Vec<u8>,
}

/// The keep-alive connections to one server, opened once and reused by every round, so
/// that no round pays for connection set-up.
type Connections = Vec<Connection>;

async fn connect(addr: SocketAddr, connections: u64) -> Connections {
    let mut pool = Vec::new();
    for _ in 0..connections {
        let socket = unpaced_socket();
        socket.connect(&addr.into()).unwrap();
        socket.set_tcp_nodelay(true).unwrap();
        socket.set_nonblocking(true).unwrap();
        pool.push(Connection {
            stream: tokio::net::TcpStream::from_std(socket.into()).unwrap(),
            read: Vec::with_capacity(4096),
        });
    }
    pool
}

/// The request every client sends, written out once: the load generator does as little
/// as it can per request (like `wrk`), so that the servers, not the clients, set the rates.
fn serialize_request(body: &[u8], headers: &HeaderMap) -> Bytes {
    let mut request = format!(
        "POST /hook HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_str().as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request.into()
}

/// Removes one whole response from the front of `read`, if it holds one; panics unless it
/// is `200` with the handler's answer (`1024`, the body's length).
fn take_response(read: &mut Vec<u8>) -> bool {
    let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = std::str::from_utf8(&read[..end]).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .expect("a content-length");
    let response = end + 4 + length;
    if read.len() < response {
        return false;
    }
    assert_eq!(&read[end + 4..response], b"1024");
    read.drain(..response);
    true
}

/// A keep-alive connection driven without ever blocking (see [`drive_spinning`]).
struct Spinning {
    stream: std::net::TcpStream,
    read: Vec<u8>,
    waiting: bool,
}

fn connect_spinning(addr: SocketAddr, connections: u64) -> Vec<Spinning> {
    (0..connections)
        .map(|_| {
            let socket = unpaced_socket();
            socket.connect(&addr.into()).unwrap();
            socket.set_tcp_nodelay(true).unwrap();
            socket.set_nonblocking(true).unwrap();
            Spinning {
                stream: socket.into(),
                read: Vec::with_capacity(4096),
                waiting: false,
            }
        })
        .collect()
}

/// Drives every connection of `pool` for `duration` from this thread, polling the sockets
/// in a loop instead of sleeping until one is readable; returns requests/s.
///
/// A client that sleeps must be woken by each response the server writes, and on a virtual
/// machine that wake-up (an inter-processor interrupt) costs microseconds, charged to the
/// server's `write`. The slower the server, the more often the client has gone to sleep, so
/// any cost in the server comes out amplified in its rate. A client that never sleeps
/// leaves the server only its own work, as remote clients on a network would.
fn drive_spinning(pool: &mut [Spinning], duration: Duration, request: &[u8]) -> f64 {
    use std::io::{ErrorKind, Read, Write};
    let start = Instant::now();
    let deadline = start + duration;
    let mut done = 0u64;
    let mut chunk = [0u8; 4096];
    loop {
        let sending = Instant::now() < deadline;
        let mut waiting = 0;
        for connection in pool.iter_mut() {
            if !connection.waiting && sending {
                let mut written = 0;
                while written < request.len() {
                    match connection.stream.write(&request[written..]) {
                        Ok(n) => written += n,
                        Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                        Err(error) => panic!("{error}"),
                    }
                }
                connection.waiting = true;
            }
            if !connection.waiting {
                continue;
            }
            match connection.stream.read(&mut chunk) {
                Ok(0) => panic!("the server closed the connection"),
                Ok(n) => connection.read.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(error) => panic!("{error}"),
            }
            if take_response(&mut connection.read) {
                connection.waiting = false;
                done += 1;
            } else {
                waiting += 1;
            }
        }
        if !sending && waiting == 0 {
            break;
        }
    }
    COMPLETED.fetch_add(done, Ordering::Relaxed);
    done as f64 / start.elapsed().as_secs_f64()
}

impl Connection {
    /// Sends `request` and reads the whole response.
    async fn exchange(&mut self, request: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(request).await.unwrap();
        while !take_response(&mut self.read) {
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        use tokio::io::AsyncReadExt;
        let read = self.stream.read_buf(&mut self.read).await.unwrap();
        assert!(read > 0, "the server closed the connection");
    }
}

/// Drives every connection of `pool` for `duration`; returns requests/s.
async fn drive(pool: &mut Connections, duration: Duration, request: &Bytes) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let clients: Vec<_> = pool
        .drain(..)
        .map(|mut connection| {
            let (done, request) = (done.clone(), request.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    connection.exchange(&request).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                connection
            })
        })
        .collect();
    for client in clients {
        pool.push(client.await.unwrap());
    }
    let done = done.load(Ordering::Relaxed);
    COMPLETED.fetch_add(done, Ordering::Relaxed);
    done as f64 / start.elapsed().as_secs_f64()
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

/// A scheme that only computes the HMAC (from a pre-keyed state) and compares it: the
/// layer with the least a MAC scheme must do, apart from parsing any header.
#[derive(Debug)]
struct MacOnly {
    keyed: hmac::Hmac<sha2::Sha256>,
    expected: [u8; 32],
}

/// The MAC-only scheme for the pre-signed requests ([`MESSAGE_ID`], timestamp `now`, `body`).
fn mac_only(now: i64, body: &[u8]) -> MacOnly {
    use hmac::Mac;
    let mut keyed = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    keyed.update(format!("{MESSAGE_ID}.{now}.").as_bytes());
    let mut full = keyed.clone();
    full.update(body);
    let expected = full.finalize().into_bytes().into();
    MacOnly { keyed, expected }
}

struct MacOnlyVerification(hmac::Hmac<sha2::Sha256>, [u8; 32]);

impl Verification for MacOnlyVerification {
    fn update(&mut self, chunk: &[u8]) {
        use hmac::Mac;
        self.0.update(chunk);
    }

    fn finish(self, _body: &Bytes) -> Result<Verified, VerifyError> {
        use hmac::Mac;
        self.0
            .verify_slice(&self.1)
            .map(|()| Verified::new("mac-only"))
            .map_err(|_| VerifyError::new(VerifyErrorKind::InvalidSignature, "mismatch"))
    }
}

impl Scheme for MacOnly {
    type Verification = MacOnlyVerification;

    fn name(&self) -> &str {
        "mac-only"
    }

    fn begin(
        &self,
        _head: &RequestHead,
        _secrets: &SecretSet,
        _now: i64,
    ) -> Result<MacOnlyVerification, VerifyError> {
        Ok(MacOnlyVerification(self.keyed.clone(), self.expected))
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
    // The servers on one worker thread, the clients on another (this one): each side has a
    // core of its own, so that which thread a server's connections land on cannot favour one
    // server over another.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load-server")
        .enable_all()
        .build()
        .unwrap();
    let servers = servers.handle().clone();
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ratios = clients.block_on(async {
        // A window wide enough for the pre-signed timestamp to stay valid; de-dupe off.
        let scheme = Cerebrium::new().replay_window(None);
        let no_op = || tower::util::MapRequestLayer::new(|request: axum::extract::Request| request);
        let route = |handler_route| Router::new().route("/hook", handler_route);
        let verifier = Arc::new(WebhookVerifier::new(scheme.clone(), SECRET));
        let verifying = move |request| verifying_handler(verifier.clone(), request);
        let body = Bytes::from(vec![b'x'; 1024]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // The first server is the baseline, the second the one the target is about.
        let servers = [
            (
                "bare",
                "bare axum route (reads Bytes)",
                route(post(handler)),
            ),
            (
                "layer",
                "behind WebhookSignatureLayer (Cerebrium)",
                route(post(handler)).layer(WebhookSignatureLayer::new(scheme, SECRET)),
            ),
            (
                "control",
                "control: a second bare route (noise floor)",
                route(post(handler)),
            ),
            (
                "floor",
                "floor: no-op Router::layer + HMAC in handler",
                route(post(hmac_handler)).layer(no_op()),
            ),
            (
                "in-handler",
                "no-op Router::layer + verify_parts in handler",
                route(post(verifying)).layer(no_op()),
            ),
            (
                "inline-hmac",
                "bare route + HMAC in handler",
                route(post(hmac_handler)),
            ),
            (
                "no-op",
                "no-op Router::layer (MapRequestLayer)",
                route(post(handler)).layer(no_op()),
            ),
            (
                "machinery",
                "WebhookSignatureLayer, accept-all scheme",
                route(post(handler)).layer(WebhookSignatureLayer::new(AcceptAll, SECRET)),
            ),
            (
                "mac-only",
                "WebhookSignatureLayer, MAC-only scheme",
                route(post(handler))
                    .layer(WebhookSignatureLayer::new(mac_only(now, &body), SECRET)),
            ),
            (
                "from-fn",
                "axum from_fn middleware buffering the body",
                route(post(handler)).layer(axum::middleware::from_fn(buffering)),
            ),
        ]
        .map(|(name, label, app)| (name, label, serve(&servers, app)));

        let mut signed = HeaderMap::new();
        Cerebrium::new()
            .sign(
                &Message::new(MESSAGE_ID, now, &body),
                &SecretSet::from(SECRET),
                &mut signed,
            )
            .unwrap();
        signed.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );

        let spin = std::env::var("LOAD_CLIENT").is_ok_and(|client| client == "spin");
        let mut pools = Vec::new();
        let mut spinning = Vec::new();
        for (_, _, addr) in servers {
            if spin {
                spinning.push(connect_spinning(addr, connections));
            } else {
                pools.push(connect(addr, connections).await);
            }
        }
        // `LOAD_ONLY=bare,layer,...` drives (and warms up) only the servers named, for
        // profiling one or comparing a few in more rounds.
        let only = std::env::var("LOAD_ONLY").unwrap_or_default();
        let driven = |server: usize| {
            only.is_empty() || only.split(',').any(|name| name == servers[server].0)
        };
        // Warm every server up, then drive them in short interleaved rounds, in alternating
        // order, so that background load and ordering hit all alike.
        let request = serialize_request(&body, &signed);
        for (server, pool) in pools.iter_mut().enumerate() {
            if driven(server) {
                drive(pool, Duration::from_millis(300), &request).await;
            }
        }
        for (server, pool) in spinning.iter_mut().enumerate() {
            if driven(server) {
                drive_spinning(pool, Duration::from_millis(300), &request);
            }
        }
        const ROUNDS: u32 = 20;
        let slice = Duration::from_secs_f64(secs as f64 / f64::from(ROUNDS));
        let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        for round in 0..ROUNDS {
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for server in order {
                if driven(server) {
                    let rate = if spin {
                        drive_spinning(&mut spinning[server], slice, &request)
                    } else {
                        drive(&mut pools[server], slice, &request).await
                    };
                    rounds[server].push(rate);
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
             server in {ROUNDS} interleaved rounds; ratio = median of per-round ratios to bare"
        );
        if !only.is_empty() {
            println!("requests completed: {}", COMPLETED.load(Ordering::Relaxed));
        }
        println!(
            "the layer's response future under a Router: {} bytes (Cerebrium), {} bytes (MAC-only)",
            future_size::<Cerebrium>(),
            future_size::<MacOnly>()
        );
        println!("{:<46} {:>8} {:>7}", "server", "req/s", "ratio");
        let mut ratios = Vec::new();
        for (server, (name, label, _)) in servers.iter().enumerate() {
            if rounds[server].is_empty() {
                continue;
            }
            let ratio = ratio(&rounds[server], &rounds[0]);
            println!(
                "{label:<46} {:>8.0} {ratio:>7.3}{}",
                mean(&rounds[server]),
                target(name)
            );
            ratios.push((*name, *label, ratio));
        }
        let find = |wanted: &str| {
            ratios
                .iter()
                .find(|(name, ..)| *name == wanted)
                .map(|&(_, _, ratio)| ratio)
        };
        // The target compares the layer with the floor; the second gap compares it with the
        // same verification done in a handler: what the layer's own machinery costs beyond the
        // scheme's work (reading headers, comparing), which the floor row does not do.
        let gaps = [
            (GAP, GAP_LABEL, "floor"),
            (IN_HANDLER_GAP, IN_HANDLER_GAP_LABEL, "in-handler"),
        ]
        .map(|(name, label, reference)| {
            let gap = find("layer").zip(find(reference)).map(|(a, b)| a - b);
            (name, label, gap)
        });
        for (name, label, gap) in gaps {
            if let Some(gap) = gap {
                println!("{label:<46} {:>8} {gap:>+7.3}{}", "", target(name));
                ratios.push((name, label, gap));
            }
        }
        ratios
    });
    if processes::is_child(CHILD) {
        for (name, _, ratio) in ratios {
            processes::report(CHILD, name, ratio);
        }
        return;
    }
    across_processes(ratios);
}

/// The size of the layer's response future for `Sc` around a router's route: what a
/// router boxes, and what every move of it copies.
fn future_size<Sc: Scheme>() -> usize {
    use tower::Service;
    type Layered<Sc> = tower_webhooks::inbound::WebhookSignature<axum::routing::Route, Sc>;
    std::mem::size_of::<<Layered<Sc> as Service<axum::extract::Request>>::Future>()
}

/// Set in the processes `across_processes` starts.
const CHILD: &str = "LOAD_CHILD";

/// The figure the target is about: the layer's ratio minus the floor's, in the same run.
const GAP: &str = "layer-floor";
const GAP_LABEL: &str = "layer minus floor (same rounds)";

/// The layer's ratio minus that of the same verification called in a handler, in the same run.
const IN_HANDLER_GAP: &str = "layer-in-handler";
const IN_HANDLER_GAP_LABEL: &str = "layer minus verify_parts in handler";

/// The note after the figure the target is about.
fn target(figure: &str) -> &'static str {
    if figure == GAP {
        "  (target >= -0.02)"
    } else {
        ""
    }
}

/// The ratios again from fresh processes (`LOAD_PROCESSES`, default 4, each with the same
/// settings), printed with this process's as the spread across all of them.
fn across_processes(ratios: Vec<(&str, &str, f64)>) {
    let figures = processes::figures(CHILD, processes::count("LOAD_PROCESSES", 4), &["--bench"]);
    let Some((_, first)) = figures.first() else {
        return;
    };
    println!(
        "ratio to bare across {} processes (this one and {} started afresh):",
        first.len() + 1,
        first.len()
    );
    for (name, label, ratio) in ratios {
        let Some((_, values)) = figures.iter().find(|(figure, _)| figure == name) else {
            continue;
        };
        let all = values.iter().copied().chain([ratio]).collect();
        let spread = processes::spread(all, |ratio| format!("{ratio:.3}"));
        println!("{label:<46} {spread}{}", target(name));
    }
}
