//! End to end over a real TCP socket: an axum server with `WebhookSignatureLayer` and a raw
//! HTTP/1.1 client writing chunked requests.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::post;
use axum::{Json, Router};
use http::HeaderMap;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tower_webhooks::inbound::{VerifiedWebhook, WebhookSignatureLayer};
use tower_webhooks::scheme::{Cerebrium, Message, Scheme};
use tower_webhooks::{SecretSet, Verified};

const SECRET: &str = "e2e-secret";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn serve() -> SocketAddr {
    async fn handler(
        verified: Verified,
        VerifiedWebhook(event): VerifiedWebhook<Value>,
    ) -> Json<Value> {
        Json(json!({ "id": verified.message_id, "event": event }))
    }
    let app = Router::new()
        .route("/hook", post(handler))
        .layer(WebhookSignatureLayer::new(Cerebrium::new(), SECRET));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn signature_headers(id: &str, body: &[u8]) -> String {
    let mut headers = HeaderMap::new();
    Cerebrium::new()
        .sign(
            &Message::new(id, now(), body),
            &SecretSet::from(SECRET),
            &mut headers,
        )
        .unwrap();
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\r\n", value.to_str().unwrap()))
        .collect()
}

/// A chunked HTTP/1.1 request: head, then `body` in `chunk`-byte chunks.
fn chunked_request(id: &str, body: &[u8], chunk: usize) -> Vec<u8> {
    let mut request = format!(
        "POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n{}\r\n",
        signature_headers(id, body)
    )
    .into_bytes();
    for part in body.chunks(chunk) {
        request.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        request.extend_from_slice(part);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// Reads one response: status, lower-cased headers, and exactly `Content-Length` body bytes.
async fn read_response<R: tokio::io::AsyncRead + Unpin>(
    reader: R,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut reader = BufReader::new(reader);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map(|(_, value)| value.parse().unwrap())
        .expect("content-length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    (status, headers, body)
}

#[tokio::test]
async fn signed_chunked_request_over_tcp_is_accepted() {
    let addr = serve().await;
    let body = br#"{"smile": "wave", "n": [1, 2, 3]}"#;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&chunked_request("tcp-1", body, 7))
        .await
        .unwrap();
    let (status, _, response) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response));
    let response: Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(response["id"], "tcp-1");
    assert_eq!(response["event"]["smile"], "wave");

    // Tampered on the way: 401 problem+json.
    let mut request = chunked_request("tcp-2", body, 7);
    let at = request.len() - 10;
    request[at] ^= 1;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let (status, headers, _) = read_response(&mut stream).await;
    assert_eq!(status, 401);
    assert!(headers
        .iter()
        .any(|(name, value)| name == "content-type" && value == "application/problem+json"));
}

#[tokio::test]
async fn three_mib_chunked_body_gets_a_complete_413_without_reset() {
    let addr = serve().await;
    let body = vec![b'a'; 3 * 1024 * 1024];
    let request = chunked_request("big", &body, 64 * 1024);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Write and read concurrently, as a real client does. The task hands the write half
    // back instead of dropping it: dropping would half-close the connection, which hyper
    // (without `half_close`) treats as the client going away.
    let write = tokio::spawn(async move {
        writer.write_all(&request).await?;
        writer.flush().await?;
        Ok::<_, std::io::Error>(writer)
    });
    let (status, headers, response) =
        tokio::time::timeout(Duration::from_secs(20), read_response(&mut reader))
            .await
            .expect("a response, not a hang");
    assert_eq!(status, 413);
    assert!(headers
        .iter()
        .any(|(name, value)| name == "content-type" && value == "application/problem+json"));
    let problem: Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(problem["type"], "tag:tower-webhooks,2026:body-too-large");
    // The server drained the rest of the body: the client's write completed, and the
    // connection ends with a clean EOF rather than a reset.
    let _writer = write.await.unwrap().expect("the whole request was written");
    let mut rest = [0u8; 64];
    let end = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut rest))
        .await
        .expect("connection closed");
    assert_eq!(end.expect("no connection reset"), 0);
}

#[tokio::test]
async fn declared_oversized_body_with_expect_continue_is_refused_before_upload() {
    let addr = serve().await;
    let body = b"{}";
    let head = format!(
        "POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n{}\r\n",
        3 * 1024 * 1024,
        signature_headers("declared", body)
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, _, response) =
        tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
            .await
            .expect("answered without the body");
    assert_eq!(status, 413);
    let problem: Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(problem["status"], 413);
}

#[tokio::test]
async fn stalled_body_gets_a_408_problem_from_the_layer() {
    let app = Router::new()
        .route("/hook", post(|| async { "handled" }))
        .layer(
            WebhookSignatureLayer::new(Cerebrium::new(), SECRET)
                .body_read_deadline(Some(Duration::from_millis(200))),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The head declares 100 bytes; 10 arrive, then the client stalls (and keeps the
    // connection open).
    let body = [b'a'; 100];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{}\r\n",
        body.len(),
        signature_headers("stall-1", &body)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    // Bounded only so a regression fails instead of hanging; nothing here measures speed.
    let (status, headers, problem) =
        tokio::time::timeout(Duration::from_secs(30), read_response(&mut stream))
            .await
            .expect("the layer must answer a stalled body");
    assert_eq!(status, 408);
    assert!(headers
        .iter()
        .any(|(name, value)| name == "content-type" && value == "application/problem+json"));
    let problem: Value = serde_json::from_slice(&problem).unwrap();
    assert_eq!(problem["status"], 408);
    assert!(problem["type"].as_str().unwrap().ends_with(":body-timeout"));
}

#[tokio::test(start_paused = true)]
async fn trickling_body_is_cut_at_the_default_deadline() {
    use futures_util::StreamExt as _;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    // One byte every 10 s (virtual time): each frame arrives before any idle timeout would
    // fire, but the body as a whole misses the 30 s default deadline.
    let body = b"0123456789".to_vec();
    let mut headers = HeaderMap::new();
    let now = now();
    Cerebrium::new()
        .sign(
            &Message::new("trickle-1", now, &body),
            &SecretSet::from(SECRET),
            &mut headers,
        )
        .unwrap();
    let frames = futures_util::stream::iter(body.clone()).then(|byte| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(vec![byte])))
    });
    let mut request = http::Request::post("/hook")
        .body(axum::body::Body::new(http_body_util::StreamBody::new(
            frames,
        )))
        .unwrap();
    request.headers_mut().extend(headers);
    let app = Router::new()
        .route("/hook", post(|| async { "handled" }))
        .layer(WebhookSignatureLayer::new(Cerebrium::new(), SECRET).clock(move || now));
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 408);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let problem: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("30000 ms"));
}
