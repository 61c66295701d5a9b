//! Requests per second through `WebhookSignatureLayer` against a bare axum route reading the
//! same body, both served in this process on 127.0.0.1 and driven by keep-alive HTTP/1.1
//! clients sending pre-signed 1 KiB POSTs. Prints both rates and their ratio.
//!
//! The servers run on one worker thread and the clients on another, so each side has a core;
//! every server keeps its connections for the whole run and the servers take turns in short
//! rounds of alternating order. A second, identical bare route is measured as a control: its
//! ratio to the first shows how far apart two equal servers come out (the noise floor). A
//! bare route that computes the same HMAC in its handler shows what the MAC alone costs.
//! The clients write pre-serialized requests on raw connections (as `wrk` does), so that
//! the servers, not the clients, set the rates; the servers' single thread is saturated.
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
use http::{HeaderMap, HeaderValue};
use tower_webhooks::inbound::WebhookSignatureLayer;
use tower_webhooks::scheme::{
    Cerebrium, Message, RequestHead, Scheme, SignError, Verification, VerifyError,
};
use tower_webhooks::{SecretSet, Verified};

const SECRET: &str = "load-secret";

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

impl Connection {
    /// Sends `request` and reads the whole response; panics unless it is `200` with the
    /// handler's answer (`1024`, the body's length).
    async fn exchange(&mut self, request: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(request).await.unwrap();
        let (head_end, body_len) = loop {
            if let Some(end) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.read[..end]).unwrap();
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .expect("a content-length");
                break (end + 4, length);
            }
            self.fill().await;
        };
        while self.read.len() < head_end + body_len {
            self.fill().await;
        }
        assert_eq!(&self.read[head_end..head_end + body_len], b"1024");
        self.read.drain(..head_end + body_len);
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
    // The servers on one worker thread, the clients on another (this one): each side has a
    // core of its own, so that which thread a server's connections land on cannot favour one
    // server over another.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let servers = servers.handle().clone();
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    clients.block_on(async {
        let bare = serve(&servers, Router::new().route("/hook", post(handler)));
        let control = serve(&servers, Router::new().route("/hook", post(handler)));
        let inline_hmac = serve(&servers, Router::new().route("/hook", post(hmac_handler)));
        // A window wide enough for the pre-signed timestamp to stay valid; de-dupe off.
        let scheme = Cerebrium::new().replay_window(None);
        let layered = serve(
            &servers,
            Router::new()
                .route("/hook", post(handler))
                .layer(WebhookSignatureLayer::new(scheme, SECRET)),
        );
        let machinery = serve(
            &servers,
            Router::new()
                .route("/hook", post(handler))
                .layer(WebhookSignatureLayer::new(AcceptAll, SECRET)),
        );

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

        let servers = [
            ("bare", bare),
            ("layer", layered),
            ("machinery", machinery),
            ("control", control),
            ("inline-hmac", inline_hmac),
        ];
        let mut pools = Vec::new();
        for (_, addr) in servers {
            pools.push(connect(addr, connections).await);
        }
        // Warm every server up, then drive them in short interleaved rounds, in alternating
        // order, so that background load and ordering hit all alike.
        let request = serialize_request(&body, &signed);
        for pool in &mut pools {
            drive(pool, Duration::from_millis(300), &request).await;
        }
        const ROUNDS: u32 = 20;
        let slice = Duration::from_secs_f64(secs as f64 / f64::from(ROUNDS));
        // `LOAD_ONLY=bare|layer|machinery|control|inline-hmac` drives one server only (for
        // profiling).
        let only = std::env::var("LOAD_ONLY").unwrap_or_default();
        let mut rounds: [Vec<f64>; 5] = Default::default();
        for round in 0..ROUNDS {
            let mut order = [0, 1, 2, 3, 4];
            if round % 2 == 1 {
                order.reverse();
            }
            for server in order {
                if only.is_empty() || only == servers[server].0 {
                    let rate = drive(&mut pools[server], slice, &request).await;
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
        println!(
            "for reference, the bare route computing the same HMAC in its handler: ratio {:.3}",
            ratio(&rounds[4], &rounds[0])
        );
        println!(
            "control, a second bare route / bare: {:.3} (two equal servers: the noise floor)",
            ratio(&rounds[3], &rounds[0])
        );
    });
}
