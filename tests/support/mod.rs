//! Shared by the integration tests: a local receiver, Cerebrium signing and Cerebrium's documented
//! verification, and PostgreSQL test schemas.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::to_bytes;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use sha2::Sha256;
use tokio::sync::Notify;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Hit {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// What the receiver answers.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

type Behave = Arc<Mutex<Box<dyn Fn(usize, &Hit) -> Reply + Send>>>;

/// A local receiver (an axum server on 127.0.0.1) that records every hit.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    notify: Arc<Notify>,
    behave: Behave,
}

impl Receiver {
    /// A receiver answering with `behave(index, hit)`.
    pub async fn start(behave: impl Fn(usize, &Hit) -> Reply + Send + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, behave)
    }

    /// A receiver on an already bound listener.
    pub fn serve(
        listener: tokio::net::TcpListener,
        behave: impl Fn(usize, &Hit) -> Reply + Send + 'static,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let notify = Arc::new(Notify::new());
        let behave: Behave = Arc::new(Mutex::new(Box::new(behave)));
        let (h, n, b) = (hits.clone(), notify.clone(), behave.clone());
        let app = Router::new().fallback(move |request: Request| {
            let (hits, notify, behave) = (h.clone(), n.clone(), b.clone());
            async move {
                let (parts, body) = request.into_parts();
                let hit = Hit {
                    at: Instant::now(),
                    headers: parts.headers,
                    body: to_bytes(body, usize::MAX).await.unwrap(),
                };
                let index = {
                    let mut hits = hits.lock().unwrap();
                    hits.push(hit.clone());
                    hits.len() - 1
                };
                notify.notify_waiters();
                let reply = (behave.lock().unwrap())(index, &hit);
                tokio::time::sleep(reply.delay).await;
                let mut response =
                    (StatusCode::from_u16(reply.status).unwrap(), "ok").into_response();
                for (name, value) in reply.headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            hits,
            notify,
            behave,
        }
    }

    pub async fn status(status: u16) -> Self {
        Self::start(move |_, _| Reply::status(status)).await
    }

    /// Changes the answers from now on.
    pub fn behave(&self, behave: impl Fn(usize, &Hit) -> Reply + Send + 'static) {
        *self.behave.lock().unwrap() = Box::new(behave);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    pub async fn wait_hits(&self, n: usize, within: Duration) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.notify.notified();
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {n} hits, got {}",
                hits.len()
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

/// Cerebrium's documented verification: HMAC-SHA256 hex over `{id}.{ts}.{body}`.
pub fn verify_cerebrium(hit: &Hit, secret: &str) -> bool {
    let signature = hit.header("x-cerebrium-webhook-signature");
    let signature = signature.split_once(',').map_or(signature, |(_, s)| s);
    let signed = [
        hit.header("x-request-id").as_bytes(),
        b".",
        hit.header("x-cerebrium-webhook-timestamp").as_bytes(),
        b".",
        &hit.body,
    ]
    .concat();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&signed);
    hex::encode(mac.finalize().into_bytes()) == signature
}

/// A raw HTTP/1.1 `POST {path}` of `body`, signed now by the crate's Cerebrium scheme with
/// message id `id` and `secret`, closing the connection after the answer.
pub fn cerebrium_request(path: &str, id: &str, body: &str, secret: &str) -> String {
    use tower_webhooks::scheme::{Cerebrium, Message, Scheme};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut headers = HeaderMap::new();
    Cerebrium::new()
        .sign(
            &Message::new(id, now, body.as_bytes()),
            &tower_webhooks::SecretSet::from(secret),
            &mut headers,
        )
        .unwrap();
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\r\n", value.to_str().unwrap()))
        .collect();
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
}

/// The PostgreSQL URL of the database tests. They are `#[ignore]`d by default; run with
/// `--ignored` they need the server, so a missing variable fails the test instead of passing it.
pub fn postgres_url() -> String {
    match std::env::var("TOWER_WEBHOOKS_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "this test needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL \
             (e.g. postgres://postgres@127.0.0.1:5432/test)"
        ),
    }
}

/// A schema name unique to this test run.
pub fn unique_schema(test: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("tw_{}_{}", &test[..test.len().min(12)], &random[..10])
}

/// Drops a test schema.
#[cfg(feature = "postgres")]
pub async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}
